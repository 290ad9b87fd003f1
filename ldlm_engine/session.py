"""A generation session: the one way every front end (and the sampling benchmark) generates.

``ldlm generate``, the app's Generate pane and ``benchmarks/sampling.py`` all load a run,
choose sample settings, run a sampler and time its frames; doing that here once means they
report the same NFE and tokens/s for the same generation, and that a model is loaded once per
checkpoint however many generations follow.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import SampleConfig
from .errors import ConfigError
from .inference import LoadedRun, load_run
from .prompts import (
    describe_unknown,
    parse_template,
    render_text,
    repeated_token,
    typed_texts,
    unknown_pieces,
)
from .runs import RunDir, resolve_run
from .sampling import Frame, Transcript, generate, sampler_for


@dataclass
class TimedFrame:
    """One sampler frame with the sampling time spent so far (model work only, not drawing).

    ``transcript`` holds the whole sequence so far (prompt included) even when the sampler
    reports only the window it is working on; its lists are updated in place by later
    frames, so copy what you keep. ``typed`` maps the positions of prompt tokens the
    vocabulary lacks (``<unk>``) to the text the user typed there
    (:func:`ldlm_engine.prompts.typed_texts`): with the tokens, the frame's display text.
    """

    frame: Frame
    elapsed_s: float
    transcript: Transcript
    typed: dict[int, str] = field(default_factory=dict)

    @property
    def tokens(self) -> list[int]:
        return self.transcript.tokens

    @property
    def fixed(self) -> list[bool]:
        return self.transcript.fixed

    @property
    def generated(self) -> int:
        """Generated positions decided so far (O(length): call it per redraw, not per token)."""
        t = self.transcript
        return sum(1 for m, fx in zip(t.masked, t.fixed, strict=True) if not (m or fx))

    @property
    def tokens_per_s(self) -> float:
        return self.generated / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class GenerationResult:
    """What one finished generation reports (the CLI prints it as JSON)."""

    text: str
    nfe: int
    steps: int
    tokens_per_s: float
    elapsed_s: float
    sampler: str
    generated_tokens: int
    total_tokens: int
    seed: int
    temperature: float
    prompt: str
    run: str
    step: int
    top_p: float = 1.0
    top_k: int = 0
    notes: list[str] = field(default_factory=list)
    repetitive: bool = False  # the sample collapsed into one repeated token (repeated_token)

    @property
    def tokens_per_call(self) -> float:
        return self.generated_tokens / self.nfe if self.nfe else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["tokens_per_call"] = self.tokens_per_call
        return d


@dataclass
class SeedPolicy:
    """Which seed the next generation uses: a new one each time, unless the user fixes it.

    With one seed for ever, Enter gave the same text every time (and two prompts on a word
    model the same continuation); advancing it gives a new sample each time, and the seed a
    sample used is reported (``GenerationResult.seed``) so ``ldlm generate --seed N``
    reproduces it. ``ldlm generate`` takes one explicit seed per sample instead.
    """

    next: int = 0
    fixed: bool = False

    def take(self) -> int:
        """The seed for this generation; the next one moves on unless the seed is fixed."""
        seed = self.next
        if not self.fixed:
            self.next = (seed + 1) % 2**63
        return seed


class GenerationSession:
    """Loads runs (cached per checkpoint) and runs generations on them.

    A run training in this process (the app's own) is sampled from its live weights: the
    trainer copies them between two optimizer steps (``Trainer.snapshot_weights``) and the
    copy stays here, in the engine, so no tensor ever reaches a UI thread. Any other run,
    an attached one included, uses its newest checkpoint.

    Thread-safe enough for one worker at a time: the app runs one generation per pane.
    """

    def __init__(self, device: str = "auto", cache_size: int = 2) -> None:
        self.device = device
        self.cache_size = cache_size
        self._cache: OrderedDict[str, LoadedRun] = OrderedDict()
        self.seeds = SeedPolicy()
        self._live: dict[str, Any] = {}  # run path -> its Trainer in this process

    def set_live(self, run: str | Path | RunDir, trainer: Any | None) -> None:
        """Sample ``run`` from ``trainer``'s weights as it trains here (None: from checkpoints).

        ``trainer`` is anything with ``snapshot_weights()``, ``step``, ``cfg`` and
        ``tokenizer`` (a :class:`~ldlm_engine.training.Trainer`).
        """
        if isinstance(run, RunDir):
            path = run.path
        else:  # a path needs no checks: the run may be gone (a start that failed is removed)
            path = Path(run) if isinstance(run, Path) else resolve_run(run).path
        key = str(path.resolve())
        if trainer is None:
            self._live.pop(key, None)
            cached = self._cache.get(key)
            if cached is not None and cached.live:  # from now on: the final checkpoint
                del self._cache[key]
        else:
            self._live[key] = trainer

    def load(self, run: str | Path | RunDir) -> LoadedRun:
        """The run's model at its newest checkpoint; reloaded only when a newer one exists."""
        rd = run if isinstance(run, RunDir) else resolve_run(run)
        key = str(rd.path.resolve())
        trainer = self._live.get(key)
        if trainer is not None:
            loaded = self._load_live(rd, key, trainer)
            if loaded is not None:
                return loaded
        cached = self._cache.get(key)
        latest = rd.latest_checkpoint_step()
        if cached is not None and (latest is None or latest == cached.step):
            self._cache.move_to_end(key)
            return cached
        self._cache.pop(key, None)
        loaded = load_run(rd, device=self.device)
        self._cache[key] = loaded
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return loaded

    def _load_live(self, rd: RunDir, key: str, trainer: Any) -> LoadedRun | None:
        """The run at its trainer's current step (cached until the trainer takes a step)."""
        from .runtime import build_model, resolve_device

        cached = self._cache.get(key)
        if cached is not None and cached.live and cached.step == trainer.step:
            self._cache.move_to_end(key)
            return cached
        snapshot = trainer.snapshot_weights()
        if snapshot is None or trainer.tokenizer is None:
            return None  # not built yet: its checkpoints, if any
        step, state = snapshot
        config = trainer.cfg.copy()
        if cached is not None and cached.live:  # same run: reuse the model, new weights
            model, process, device = cached.model, cached.process, cached.device
        else:
            device = resolve_device(self.device)
            model, process = build_model(config, trainer.tokenizer)
            process.to(device)
        model.load_state_dict(state)
        model.to(device).eval()
        loaded = LoadedRun(rd, config, trainer.tokenizer, model, process, step, device, live=True)
        self._cache.pop(key, None)
        self._cache[key] = loaded
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return loaded

    @staticmethod
    def settings(loaded: LoadedRun, **overrides: Any) -> SampleConfig:
        """The run's sample settings with ``overrides`` (None = keep), validated."""
        cfg = loaded.config.copy()
        given = {k: v for k, v in overrides.items() if v is not None}
        from .config import apply_overrides

        apply_overrides(cfg, {"sample": given})
        cfg.validate()
        return cfg.sample

    @staticmethod
    def sampler_name(loaded: LoadedRun, cfg: SampleConfig, prompt: str = "") -> str:
        """The sampler a generation of ``prompt`` runs (see :func:`sampling.sampler_for`)."""
        _, fixed = parse_template(loaded.tokenizer, prompt, cfg.length)
        return sampler_for(loaded.process, cfg.sampler, fixed)

    def stream(
        self, loaded: LoadedRun, cfg: SampleConfig, prompt: str = ""
    ) -> Iterator[TimedFrame]:
        """Yield every frame of one generation with the model time spent so far.

        Only the time inside the sampler counts, so a front end that draws each frame (or a
        consumer that is slow to ask for the next) does not lower the reported tokens/s.
        """
        frames = generate(
            loaded.model, loaded.process, loaded.tokenizer, cfg, prompt, device=loaded.device
        )
        transcript = Transcript()
        typed = typed_texts(loaded.tokenizer, prompt)
        elapsed = 0.0
        try:
            while True:
                t0 = time.perf_counter()
                frame = next(frames, None)
                elapsed += time.perf_counter() - t0
                if frame is None:
                    return
                transcript.apply(frame)
                yield TimedFrame(frame, elapsed, transcript, typed)
        finally:
            frames.close()

    def run(self, loaded: LoadedRun, cfg: SampleConfig, prompt: str = "", on_frame=None):
        """Run one generation to the end; ``on_frame(TimedFrame)`` sees every frame."""
        last: TimedFrame | None = None
        for tf in self.stream(loaded, cfg, prompt):
            last = tf
            if on_frame is not None:
                on_frame(tf)
        if last is None:
            raise ConfigError("the sampler produced no frame")
        return self.result(loaded, cfg, prompt, last)

    def result(
        self, loaded: LoadedRun, cfg: SampleConfig, prompt: str, last: TimedFrame
    ) -> GenerationResult:
        """The report for a finished generation whose last frame is ``last``."""
        generated = sum(1 for f in last.fixed if not f)
        return GenerationResult(
            text=render_text(loaded.tokenizer, prompt, last.tokens),
            nfe=last.frame.nfe,
            steps=last.frame.step,
            tokens_per_s=generated / last.elapsed_s if last.elapsed_s > 0 else 0.0,
            elapsed_s=last.elapsed_s,
            sampler=self.sampler_name(loaded, cfg, prompt),
            generated_tokens=generated,
            total_tokens=len(last.tokens),
            seed=cfg.seed,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            prompt=prompt,
            run=loaded.run.name,
            step=loaded.step,
            notes=_notes(loaded, prompt, last.frame),
            repetitive=repeated_token(last.tokens, last.fixed) is not None,
        )


def _notes(loaded: LoadedRun, prompt: str, last: Frame) -> list[str]:
    """What the user should know about a generation: what the model could not see."""
    notes = [loaded.note] if loaded.note else []
    unknown = describe_unknown(unknown_pieces(loaded.tokenizer, prompt))
    if unknown:
        notes.append(unknown)
    if last.prompt_unseen:
        notes.append(
            f"the prompt is longer than the model's window ({loaded.config.model.seq_len} "
            f"tokens): only its last part conditioned the text ({last.prompt_unseen} "
            "tokens before it are kept in the text but were not seen)"
        )
    return notes
