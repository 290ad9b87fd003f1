"""``ldlm generate`` and ``ldlm eval``: a generation session and a held-out bound."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import typer

from ldlm_engine import config
from ldlm_engine.safe_text import visible

from ..progress import make_console, use_rich
from .common import (
    Device,
    Sampler,
    _dump_json,
    _engine,
    _epilog,
    _err,
    _out,
    app,
)

# --------------------------------------------------------------------------- generate

GENERATE_EPILOG = """\
Examples:

  ldlm generate my-run --prompt "ROMEO:" --length 128
  ldlm generate my-run --prompt "The [MASK*12] sat on the mat."     (infill)
  ldlm generate my-run --sampler threshold --threshold 0.8 --json
  ldlm generate my-run --num 3 --seed 7 --json
  ldlm generate my-run --top-p 0.9 --top-k 40

Infilling: in the prompt, [MASK] marks one token to generate and [MASK*N] marks N; the rest
is kept as context and --length is ignored. Without markers the prompt is a prefix and
--length tokens follow it. --json prints one object {"text", "nfe", "tokens_per_s",
"sampler", "steps", "run", "step", ...}; with --num N > 1, {"samples": [...]} with seeds
seed..seed+N-1. --animate (default on a terminal) shows the denoising: masked positions as
░, each step's new tokens highlighted, colour = confidence (red low, green high).
"""


@app.command(epilog=_epilog(GENERATE_EPILOG))
def generate(
    run: str = typer.Argument(..., help="Run name or run directory."),
    prompt: str = typer.Option("", "--prompt", help="Prefix, or an infill template."),
    length: int | None = typer.Option(
        None, "--length", help=f"Tokens to generate (1..{config.MAX_SEQ_LEN:,})."
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help=f"Model calls (0..{config.MAX_SAMPLE_STEPS:,}; 0 = one per token; uniform: 100).",
    ),
    sampler: Sampler | None = typer.Option(None, "--sampler", help="Sampler (auto = natural)."),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="0 = greedy; default 0.8 (greedy decoding of a small model repeats itself).",
    ),
    block_length: int | None = typer.Option(
        None, "--block-length", help="Semi-autoregressive blocks (0 = one block)."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Confidence for the threshold sampler."
    ),
    top_p: float | None = typer.Option(
        None,
        "--top-p",
        help="Nucleus: sample among the likeliest tokens holding this mass (1 = off).",
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", help="Sample among the k likeliest tokens (0 = off)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    num: int = typer.Option(1, "--num", help=f"Number of samples (1..{config.MAX_NUM:,})."),
    cache: bool | None = typer.Option(
        None,
        "--cache/--no-cache",
        help="Reuse the key/value cache (ar, block); --no-cache recomputes every call.",
    ),
    animate: bool | None = typer.Option(
        None, "--animate/--no-animate", help="Show the denoising live [default: on a terminal]."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to run the model."),
) -> None:
    """Generate text from a trained run (its latest checkpoint)."""
    E = _engine()
    E.check_range("--num", num, 1, config.MAX_NUM)
    session = E.GenerationSession(device=device.value)
    loaded = session.load(run)
    sc = session.settings(
        loaded,
        length=length,
        steps=steps,
        sampler=sampler.value if sampler else None,
        temperature=temperature,
        block_length=block_length,
        threshold=threshold,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        cache=cache,
    )
    if animate is None:
        animate = use_rich() and not json_out
    results = []
    for i in range(num):
        sci = dataclasses.replace(sc, seed=sc.seed + i)
        if animate and num > 1:
            _out(f"── sample {i + 1}/{num} (seed {sci.seed}) ──")
        res = _generate_one(session, loaded, sci, prompt, animate=animate)
        if i == 0:
            for note in res.notes:  # once, not per sample
                _err(f"ldlm: note: {note}")
        if res.repetitive and not json_out:
            _err(
                "ldlm: note: the sample collapsed into one repeated token; try a higher "
                "--temperature or a longer-trained model"
            )
        results.append(res.to_dict())
        if json_out:
            continue
        if not animate:
            if num > 1:
                _out(f"── sample {i + 1}/{num} (seed {sci.seed}) ──")
            _out(res.text)
        else:
            _err(
                f"nfe {res.nfe} · {res.tokens_per_s:,.0f} tok/s · {res.sampler} · "
                f"{loaded.run.name} step {loaded.step}"
            )
    if json_out:
        _dump_json(results[0] if num == 1 else {"samples": results})


def _generate_one(session: Any, loaded: Any, sc: Any, prompt: str, *, animate: bool) -> Any:
    """One generation; with ``animate``, drawn live at about 30 frames/s (the app's renderer:
    the whole text so far, its last screenful while it grows, all of it at the end)."""
    if not animate:
        return session.run(loaded, sc, prompt)
    from rich.live import Live

    from ldlm_engine.sampling import Transcript

    from ..render import Tail, TokenTexts, render_transcript

    console = make_console()
    live = Live(console=console, refresh_per_second=30, auto_refresh=False, transient=True)
    live.start()
    last_draw = 0.0
    transcript = Transcript()
    texts = TokenTexts(loaded.tokenizer)
    typed: dict[int, str] = {}

    def draw(tf: Any) -> None:
        nonlocal last_draw, typed
        typed = tf.typed
        transcript.apply(tf.frame)  # every frame: a window-only frame updates its part
        now = time.perf_counter()
        if tf.frame.done or now - last_draw >= 1 / 30:
            shown = render_transcript(transcript, None, texts=texts, typed=typed)
            live.update(Tail(shown), refresh=True)
            last_draw = now
            time.sleep(0.01)  # so the eye can follow a fast sampler

    try:
        return session.run(loaded, sc, prompt, on_frame=draw)
    finally:
        live.stop()
        if transcript.last is not None:
            console.print(render_transcript(transcript, None, texts=texts, typed=typed))


# --------------------------------------------------------------------------- eval

EVAL_EPILOG = """\
Examples:

  ldlm eval my-run
  ldlm eval my-run --json
  ldlm eval my-run --data other.txt --samples 16

Reports bits per character (comparable across tokenizers) and per token on the run's own
validation split, or on all of --data. For diffusion processes (mask, uniform) the figure is
a Monte Carlo estimate of an upper bound on the NLL (shown as ≤, with its standard error);
for ar it is exact (=).
"""


@app.command(name="eval", epilog=_epilog(EVAL_EPILOG))
def eval_cmd(
    run: str = typer.Argument(..., help="Run name or run directory."),
    data: str | None = typer.Option(
        None, "--data", metavar="PATH|NAME", help="Evaluate on this text instead."
    ),
    samples: int | None = typer.Option(
        None,
        "--samples",
        help=f"Noise draws per window (diffusion bounds; 1..{config.MAX_EVAL_SAMPLES:,}).",
    ),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="Held-out tokens to use (default: up to 65,536; max 10**9)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to run the model."),
) -> None:
    """Held-out likelihood of a run: bits per character and per token."""
    E = _engine()
    E.check_eval_request(samples, max_tokens)  # before the run loads
    loaded = E.load_run(run, device=device.value)
    if loaded.note:
        _err(f"ldlm: warning: {loaded.note}")
    est = E.evaluate_run(loaded, data=data, samples=samples, max_tokens=max_tokens)
    d = est.to_dict()
    kind = loaded.config.process.kind
    d.update(
        {
            "run": loaded.run.name,
            "path": str(loaded.run.path),
            "step": loaded.step,
            "process": kind,
            "data": data if data is not None else "validation split",
        }
    )
    if json_out:
        _dump_json(d)
        return
    exact = bool(d["exact"])
    rel = "=" if exact else "≤"
    line = f"val {rel} {d['val_bits_per_char']:.2f} bits/char"
    if not exact:
        line += f" (± {d['stderr_bits_per_char']:.2f})"
    line += f", {d['val_bits_per_token']:.2f} bits/token — "
    line += f"exact ({kind} process)" if exact else f"upper bound ({kind} process)"
    _out(line)
    if d.get("ar_head_bits_per_char") is not None:
        _out(
            f"ar head = {d['ar_head_bits_per_char']:.2f} bits/char — exact: the NLL of what "
            "the speculative sampler writes"
        )
    where = f"  {loaded.run.name} at step {loaded.step} · {d['tokens']:,} tokens · {d['data']}"
    _out(visible(where))  # the data source comes from the run's config.json
