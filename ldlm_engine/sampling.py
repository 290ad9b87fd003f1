"""Samplers: generators that yield one :class:`Frame` per model call.

Frames carry plain Python lists, never tensors, so a UI thread can draw the denoising as it
happens. Fixed positions (a prompt prefix, or the context of an infill template) never change.

- masked process: ``low_confidence`` (LLaDA: a fixed number of tokens revealed per step, the
  most confident first, optional semi-autoregressive blocks, Gumbel-max temperature in float64),
  ``random`` (same schedule, random order) and ``threshold`` (reveal every token whose
  confidence exceeds tau, at least one per step: far fewer model calls).
- uniform process: ancestral sampling from pure noise, T -> 0, with a stride.
- ar: left to right, one token per call; block (BD3-LM): block by block, each block denoised
  like the masked process. Both run with a key/value cache and to any length
  (:mod:`ldlm_engine.decoding`); the full-sequence samplers continue window by window past
  the model's seq_len.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .config import NEEDS_SHIFT, SAMPLERS_BY_PROCESS, SampleConfig, samplers_for
from .errors import ConfigError
from .processes import MaskedProcess, NoiseProcess, UniformProcess
from .prompts import MASK_MARKER as MASK_MARKER  # prompts are parsed there; kept importable
from .prompts import parse_template, render_text

SAMPLERS = SAMPLERS_BY_PROCESS  # the one table (in config: torch-free), re-exported


@dataclass
class Frame:
    """The sequence after one model call, as plain Python data (safe to send to a UI thread).

    The lists ``tokens``, ``masked``, ``confidence`` and ``fixed`` cover positions ``offset``
    .. ``offset + len(tokens) - 1``: the first frame (step 0) always covers the whole planned
    sequence (prompt included) at offset 0; a later frame may cover only the part its call
    worked on (a block, a token, a window), every position outside it is unchanged since the
    previous frame, and those before ``offset`` are final. Full-sequence samplers within the
    model's window keep offset 0. Feed every frame to a :class:`Transcript` for the whole text.

    ``masked[i]`` is True where a position is still undecided (a mask for the masked
    process); ``changed`` lists the absolute positions whose token this call revealed or
    replaced; ``confidence[i]`` is the model's probability of the token (1.0 for fixed
    positions); ``fixed[i]`` marks prompt/infill context. ``nfe`` counts model calls.
    ``prompt_unseen`` > 0: the prompt was longer than the model's window and only its tail
    (all but the first ``prompt_unseen`` tokens) conditioned the text.
    """

    step: int
    nfe: int
    tokens: list[int]
    masked: list[bool]
    changed: list[int]
    confidence: list[float]
    fixed: list[bool]
    done: bool = False
    offset: int = 0
    prompt_unseen: int = 0


class Transcript:
    """The whole sequence, rebuilt from frames that may cover only a part of it (``offset``).

    Feed it every frame in order (``apply``); slice assignment keeps that O(frame size).
    """

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.masked: list[bool] = []
        self.confidence: list[float] = []
        self.fixed: list[bool] = []
        self.last: Frame | None = None

    def apply(self, frame: Frame) -> None:
        start, end = frame.offset, frame.offset + len(frame.tokens)
        if end > len(self.tokens):  # never for ldlm's samplers (frame 0 is the whole plan)
            grow = end - len(self.tokens)
            self.tokens += [0] * grow
            self.masked += [True] * grow
            self.confidence += [0.0] * grow
            self.fixed += [False] * grow
        self.tokens[start:end] = frame.tokens
        self.masked[start:end] = frame.masked
        self.confidence[start:end] = frame.confidence
        self.fixed[start:end] = frame.fixed
        self.last = frame

    def frame(self) -> Frame:
        """The latest frame as a full-sequence frame at offset 0."""
        if self.last is None:
            raise ValueError("no frame applied yet")
        f = self.last
        return Frame(
            step=f.step,
            nfe=f.nfe,
            tokens=list(self.tokens),
            masked=list(self.masked),
            changed=list(f.changed),
            confidence=list(self.confidence),
            fixed=list(self.fixed),
            done=f.done,
            prompt_unseen=f.prompt_unseen,
        )

    def generated(self) -> list[int]:
        """The tokens at positions that are not prompt/context."""
        return [t for t, fx in zip(self.tokens, self.fixed, strict=True) if not fx]


def resolve_sampler(process: NoiseProcess, name: str) -> str:
    natural = SAMPLERS[process.kind]
    if name in ("auto", "", None):
        return natural[0]
    if name not in natural:
        raise ConfigError(
            f"sampler {name!r} does not fit a {process.kind!r} model; "
            f"use one of {', '.join(natural)}"
        )
    if name == "speculative" and "speculative" not in samplers_for(process.cfg):
        raise ConfigError(NEEDS_SHIFT)
    return name


def sampler_for(process: NoiseProcess, name: str, fixed: list[bool]) -> str:
    """The sampler a generation runs: ``name`` resolved for the process, except that
    ``speculative`` infills a template ``left_to_right``: the whole window as one block (the
    ``full_blocks`` training), each call writing the leftmost gap token while seeing the
    context on both sides. That is the order the network knows best (it is an ar model too);
    under an ar judge its fills scored 0.96-1.00x a masked model's, most-confident-first
    1.16x (docs/benchmarks.md, "Infill left to right"). ``fixed`` marks the template's given
    positions (:func:`parse_template`)."""
    sampler = resolve_sampler(process, name)
    n_prompt = fixed.index(False) if False in fixed else len(fixed)
    if sampler == "speculative" and any(fixed[n_prompt:]):
        return "left_to_right"
    return sampler


@torch.no_grad()
def generate(
    model,
    process: NoiseProcess,
    tokenizer,
    cfg: SampleConfig,
    prompt: str = "",
    *,
    device: torch.device | str = "cpu",
    max_len: int | None = None,
) -> Iterator[Frame]:
    """Yield a frame per model call (after frame 0); the last frame has ``done=True``.

    Any length works: past the model's ``seq_len`` (its window) ``ar`` and ``block`` move
    their cached context along (re-anchoring every half window) and the full-sequence
    samplers continue window by window (see :mod:`ldlm_engine.decoding`); a prompt longer
    than the window conditions the text by its tail (``Frame.prompt_unseen``). ``max_len``,
    when given, refuses longer requests instead. ``cfg.cache = False`` recomputes every call.
    """
    from . import decoding  # (it builds on this module's Frame)

    ids, fixed = parse_template(tokenizer, prompt, cfg.length)
    if max_len is not None and len(ids) > max_len:
        raise ConfigError(
            f"prompt plus length is {len(ids)} tokens, more than the model's seq_len {max_len}"
        )
    if all(fixed):
        raise ConfigError("nothing to generate: ask for --length > 0 or mark [MASK] positions")
    sampler = sampler_for(process, cfg.sampler, fixed)
    window = int(model.cfg.seq_len)
    n_prompt = fixed.index(False)
    continues = not any(fixed[n_prompt:])  # a prompt then only generated positions
    # A block model trained with a share of whole-window blocks infills as one block.
    infills = process.kind == "block" and process.cfg.full_blocks > 0
    left_to_right = process.kind == "ar" or (process.kind == "block" and continues)
    if process.kind in ("ar", "block") and not continues and not infills:
        raise ConfigError(
            f"a {process.kind!r} model writes left to right and can only continue a prompt; "
            "infill needs the mask process, or a block model trained with process.full_blocks"
        )
    if len(ids) > window and not continues:
        raise ConfigError(
            f"an infill template of {len(ids)} tokens is longer than the model's window "
            f"({window} tokens)"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    was_training = model.training
    model.eval()
    try:
        if left_to_right:
            x = torch.tensor(ids, dtype=torch.long, device=device)
            if process.kind == "ar":
                yield from decoding.autoregressive(model, process, x, n_prompt, cfg, gen, window)
            elif sampler == "speculative":
                from .speculative import speculative

                yield from speculative(model, process, x, n_prompt, cfg, gen, window)
            else:
                yield from decoding.block_diffusion(
                    model, process, x, n_prompt, cfg, sampler, gen, window
                )
            return
        if sampler == "uniform":
            run_window = functools.partial(_uniform, model, process, gen=gen)
        else:
            run_window = functools.partial(_masked, model, process, sampler=sampler, gen=gen)
        if len(ids) <= window:
            x = torch.tensor([ids], dtype=torch.long, device=device)
            yield from run_window(x, torch.tensor(fixed, dtype=torch.bool, device=device), cfg)
        else:
            yield from decoding.continuation(
                run_window, ids, n_prompt, cfg, window, device, split_steps=sampler != "uniform"
            )
    finally:
        model.train(was_training)


def final_frame(model, process, tokenizer, cfg: SampleConfig, prompt: str = "", **kw) -> Frame:
    """Run a sampler to the end: the whole sequence (offset 0) and the number of model calls."""
    transcript = Transcript()
    for frame in generate(model, process, tokenizer, cfg, prompt, **kw):
        transcript.apply(frame)
    return transcript.frame()


def sample_text(model, process, tokenizer, cfg: SampleConfig, prompt: str = "", **kw) -> str:
    """Run a sampler to the end: the whole text, the prompt kept as typed (``render_text``)."""
    frame = final_frame(model, process, tokenizer, cfg, prompt, **kw)
    return render_text(tokenizer, prompt, frame.tokens)


def _frame(step, nfe, x, masked, changed, conf, fixed, done=False) -> Frame:
    return Frame(
        step=step,
        nfe=nfe,
        tokens=x[0].tolist(),
        masked=masked.tolist(),
        changed=sorted(int(i) for i in changed),
        confidence=[round(float(c), 4) for c in conf.tolist()],
        fixed=fixed.tolist(),
        done=done,
    )


def top_filter(
    logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, temperature: float = 1.0
) -> torch.Tensor:
    """``logits`` with every id outside the top-k and the top-p nucleus set to -inf.

    The one place where the top-k / top-p knobs act; every sampler calls it where logits
    become a choice. The nucleus is the smallest set of most likely ids whose tempered
    probability reaches ``top_p`` (the likeliest id is always kept, so a tiny top_p is
    greedy); ``top_k`` 0 and ``top_p`` 1 leave the logits as they are.
    """
    vocab = logits.shape[-1]
    if not (0 < top_k < vocab) and top_p >= 1.0:
        return logits
    logits = logits.double()
    if 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        t = temperature if temperature > 0 else 1.0
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(ordered / t, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the likelier ids
        ordered = ordered.masked_fill(before >= top_p, -math.inf)
        logits = torch.full_like(logits, -math.inf).scatter(-1, order, ordered)
    return logits


def gumbel_argmax(
    logits: torch.Tensor,
    temperature: float,
    gen: torch.Generator,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """Sample argmax(logits/T + Gumbel) in float64 (LLaDA's exp(l) / (-log u)^T form),
    among the ids :func:`top_filter` keeps.

    float64 matters: in low precision the Gumbel noise of near-tied tokens collapses and
    sampling quality drops. Temperature 0 is plain argmax.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_filter(logits.double(), top_k, top_p, temperature)
    u = torch.rand(logits.shape, generator=gen, dtype=torch.float64).to(logits.device)
    gumbel = logits.exp() / (-torch.log(u.clamp_min(1e-300))) ** temperature
    return gumbel.argmax(dim=-1)


def transfer_schedule(n_masked: int, steps: int) -> list[int]:
    """How many tokens each step reveals: as even as possible, remainder first (as LLaDA)."""
    base, rem = divmod(n_masked, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def _blocks(positions: list[int], block_length: int) -> list[list[int]]:
    if block_length <= 0 or block_length >= len(positions):
        return [positions]
    return [positions[i : i + block_length] for i in range(0, len(positions), block_length)]


def choose_reveal(x0_p, candidates, sampler: str, threshold: float, schedule, gen) -> torch.Tensor:
    """The masked positions one model call reveals (LLaDA's rule), shared by the full-sequence
    and the block samplers: ``low_confidence`` the ``next(schedule)`` most confident,
    ``random`` as many at random, ``left_to_right`` as many leftmost ones, ``threshold``
    every one at least ``threshold`` sure (at least one)."""
    if sampler == "random":
        score = torch.rand(x0_p.shape, generator=gen, dtype=torch.float64).to(x0_p.device)
    elif sampler == "left_to_right":
        score = -torch.arange(x0_p.shape[0], dtype=torch.float64, device=x0_p.device)
    else:
        score = x0_p
    neg_inf = torch.tensor(-math.inf, dtype=torch.float64, device=x0_p.device)
    score = torch.where(candidates, score, neg_inf)
    if sampler == "threshold":
        pick = candidates & (x0_p >= threshold)
        if not bool(pick.any()):
            pick[score.argmax()] = True
        return pick.nonzero().squeeze(1)
    left = int(candidates.sum())
    k = max(1, min(next(schedule, left), left))
    return torch.topk(score, k).indices


def _masked(model, process: MaskedProcess, x, fixed, cfg: SampleConfig, sampler: str, gen):
    """LLaDA-style reverse process: start from masks, reveal tokens by confidence."""
    mask_id = process.mask_id
    gen_pos = (~fixed).nonzero().squeeze(1).tolist()
    n = len(gen_pos)
    blocks = _blocks(gen_pos, cfg.block_length)
    total_steps = cfg.steps if cfg.steps > 0 else n
    total_steps = max(total_steps, len(blocks))
    # Steps per block: even split, earlier blocks take the remainder.
    per_block = transfer_schedule(total_steps, len(blocks))
    conf = torch.where(fixed, 1.0, 0.0).double()
    nfe = 0
    step = 0
    yield _frame(0, 0, x, x[0] == mask_id, [], conf, fixed)
    for b, block in enumerate(blocks):
        in_block = torch.zeros_like(fixed)
        in_block[block] = True
        s_block = max(1, min(per_block[b], len(block)))
        schedule = transfer_schedule(len(block), s_block)
        k_iter = iter(schedule)
        while bool(((x[0] == mask_id) & in_block).any()):
            logits = process.sampling_logits(model, x, None)[0]
            nfe += 1
            step += 1
            x0 = gumbel_argmax(logits, cfg.temperature, gen, cfg.top_k, cfg.top_p)
            p = torch.softmax(logits.double(), dim=-1)
            x0_p = p.gather(-1, x0[:, None]).squeeze(-1)
            candidates = (x[0] == mask_id) & in_block
            reveal = choose_reveal(x0_p, candidates, sampler, cfg.threshold, k_iter, gen)
            x[0, reveal] = x0[reveal]
            # Confidence: revealed tokens keep the probability they were chosen with; masked
            # positions show the model's current best guess, for the UI's colouring.
            conf = torch.where(x[0] == mask_id, x0_p, conf)
            conf[reveal] = x0_p[reveal]
            done = not bool((x[0] == mask_id).any())
            yield _frame(step, nfe, x, x[0] == mask_id, reveal.tolist(), conf, fixed, done)


def _uniform(model, process: UniformProcess, x, fixed, cfg: SampleConfig, gen):
    """Ancestral sampling of the uniform process from pure noise, with a step stride."""
    T = process.T
    steps = cfg.steps if cfg.steps > 0 else 100
    steps = max(1, min(steps, T))
    times = torch.linspace(T, 0, steps + 1).round().long().unique_consecutive().tolist()
    noise = process.random_tokens(x.shape, gen, x.device)
    x = torch.where(fixed[None], x, noise)
    allowed = process.allowed_ids.to(x.device)
    conf = torch.where(fixed, 1.0, 0.0).double()
    not_masked = torch.zeros_like(fixed)
    yield _frame(0, 0, x, not_masked, [], conf, fixed)
    temp = cfg.temperature if cfg.temperature > 0 else 1.0
    for k in range(len(times) - 1):
        nfe = k + 1
        i = torch.tensor([times[k]], device=x.device)
        s = torch.tensor([times[k + 1]], device=x.device)
        logits = process.sampling_logits(model, x, process.model_time(i))
        allowed_logits = logits[..., process.allowed.to(x.device)].double()
        allowed_logits = top_filter(allowed_logits, cfg.top_k, cfg.top_p, temp)
        p_x0 = torch.softmax(allowed_logits / temp, dim=-1)
        last = times[k + 1] == 0
        if last and cfg.temperature == 0:
            new_idx = p_x0.argmax(dim=-1)
        else:
            post = torch.softmax(process.posterior_logits(x, p_x0, i, s), dim=-1)
            flat = post.view(-1, post.shape[-1]).float()
            new_idx = torch.multinomial(flat.cpu(), 1, generator=gen).view(x.shape).to(x.device)
        new = torch.where(fixed[None], x, allowed[new_idx])
        changed = (new != x)[0].nonzero().squeeze(1).tolist()
        x = new
        idx = process._allowed_index(x)
        conf = torch.where(fixed, 1.0, p_x0[0].gather(-1, idx[0][:, None]).squeeze(-1))
        yield _frame(k + 1, nfe, x, not_masked, changed, conf, fixed, done=last)
