"""Left-to-right decoding with a key/value cache, and generation of any length.

What the full-sequence samplers of :mod:`ldlm_engine.sampling` cannot do alone:

- ``block`` (BD3-LM, Fast-dLLM v2): blocks left to right. The clean prefix lives in the
  model's KV cache; the current block starts fully masked and is denoised by
  ``low_confidence`` (k tokens per call, LLaDA's schedule), ``threshold`` (every position
  above tau, at least one) or ``random`` (k per call, random order), each call running on
  that block only. A finished block is not
  stored by a call of its own: the next block's first call carries it (block-causal among
  the stored tokens) and its keys are kept, the noisy ones dropped. A prompt fills whole
  blocks at the positions training used; its partial last block is the fixed part of the
  first generated block.
- ``ar`` with the same cache: one call per token, one new key per call.
- Any length. Past the model's ``seq_len`` (its *window*) the context is *re-anchored*: the
  last ``window // 2`` tokens (whole blocks for ``block``) become a new window at positions
  0.. (ar: after BOS), prefilled by the next call, and cached decoding goes on. Every call
  then looks exactly like a training window: all distances < seq_len, ar's BOS where
  training put it, every cached key computed from the same context the uncached path
  recomputes (so both give the same tokens at any length), and additive sin/cos positions,
  which cannot go past seq_len, work too. Trimming the cache instead (``KVCache.trim``)
  would keep keys computed from context that has left the window and lose the BOS, a state
  the model never trained on; re-anchoring costs one batched prefill per half window.
- Full-sequence samplers (mask, uniform) past the window: a windowed continuation, each
  new window conditioned on the tail of the text so far.

Frames from here cover only the positions a call touched (``Frame.offset``), so a long
generation costs O(N) Python work, not O(N^2). The uncached paths (``SampleConfig.cache =
False``) recompute the whole window every call: the reference the tests compare against.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator

import torch

from .config import SampleConfig
from .errors import ConfigError
from .sampling import Frame, choose_reveal, gumbel_argmax, top_filter, transfer_schedule

WindowSampler = Callable[[torch.Tensor, torch.Tensor, SampleConfig], Iterator[Frame]]


def _round(conf: torch.Tensor) -> list[float]:
    return [round(float(c), 4) for c in conf.tolist()]


def first_frame(ids: list[int], fixed: list[bool], prompt_unseen: int = 0) -> Frame:
    """Frame 0: the whole planned sequence, prompt and masks, at offset 0."""
    return Frame(
        step=0,
        nfe=0,
        tokens=list(ids),
        masked=[not f for f in fixed],
        changed=[],
        confidence=[1.0 if f else 0.0 for f in fixed],
        fixed=list(fixed),
        prompt_unseen=prompt_unseen,
    )


def _logits(model, process, tokens: torch.Tensor, positions=None, **kw) -> torch.Tensor:
    """Float32 logits [L, V] of one unbatched sequence, limited to the ids a sampler writes."""
    out = model(tokens[None], None, positions=positions, **kw)[0].float()
    return out.masked_fill(~process.writable.to(out.device), float("-inf"))


def _block_causal(length: int, block_size: int, device) -> torch.Tensor:
    """Clean tokens see the clean tokens of their own and earlier blocks: [L, L] bool."""
    blk = torch.arange(length, device=device) // block_size
    return blk[None, :] <= blk[:, None]


def _drop_newest(cache, n: int) -> None:
    """Forget the newest ``n`` cached positions (the noisy block a storing call carried)."""
    for i in range(len(cache.k)):
        cache.k[i] = cache.k[i][:, :, :-n]
        cache.v[i] = cache.v[i][:, :, :-n]


def _share(steps: int, start: int, end: int, n: int) -> int:
    """The part of a budget of ``steps`` model calls over ``n`` generated tokens that falls
    to tokens ``start..end`` (at least 1); 0 when there is no budget (one call per token)."""
    if steps <= 0:
        return 0
    start, end = max(start, 0), max(end, 0)
    return max(1, round(steps * end / n) - round(steps * start / n))


# ---------------------------------------------------------------------------------------- ar


def _next_token(logits: torch.Tensor, cfg: SampleConfig, gen: torch.Generator) -> torch.Tensor:
    temperature = cfg.temperature
    if temperature == 0:
        return logits.argmax()
    logits = top_filter(logits.double(), cfg.top_k, cfg.top_p, temperature)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs.float().cpu(), 1, generator=gen)[0].to(logits.device)


def autoregressive(
    model, process, x: torch.Tensor, n_prompt: int, cfg: SampleConfig, gen, window: int
) -> Iterator[Frame]:
    """Left to right, one call per token; ``x`` [T] is the prompt then masks (filled in).

    The model reads [BOS, x[anchor:p]] and predicts x[p]; cached, a call feeds only x[p-1].
    """
    total, dev = x.numel(), x.device
    keep = window // 2
    bos = torch.tensor([process.bos_id], device=dev)
    anchor = n_prompt - keep if n_prompt >= window else 0
    unseen = anchor
    fixed = [i < n_prompt for i in range(total)]
    yield first_frame(x.tolist(), fixed, unseen)
    cache = None
    for n, p in enumerate(range(n_prompt, total), start=1):
        if p - anchor >= window:  # the input [BOS, x[anchor:p]] would not fit: re-anchor
            anchor, cache = p - keep, None
        if not cfg.cache:
            logits = _logits(model, process, torch.cat([bos, x[anchor:p]]))[-1]
        elif cache is None:
            cache = model.new_cache()
            inp = torch.cat([bos, x[anchor:p]])
            pos = torch.arange(inp.numel(), device=dev)
            logits = _logits(model, process, inp, pos, cache=cache, store=True)[-1]
        else:
            pos = torch.tensor([p - anchor], device=dev)
            logits = _logits(model, process, x[p - 1 : p], pos, cache=cache, store=True)[-1]
        tok = _next_token(logits, cfg, gen)
        x[p] = tok
        conf = float(torch.softmax(logits.double(), dim=-1)[tok])
        yield Frame(
            step=n,
            nfe=n,
            tokens=[int(tok)],
            masked=[False],
            changed=[p],
            confidence=[round(conf, 4)],
            fixed=[False],
            done=p == total - 1,
            offset=p,
            prompt_unseen=unseen,
        )


# ------------------------------------------------------------------------------------- block


def _denoise(logits_fn, block, fixed, n_steps: int, sampler: str, cfg, gen, mask_id: int):
    """Reveal one block's masked positions in place; yields (revealed, confidence) per call.

    The same choices as :func:`ldlm_engine.sampling._masked` within one block, so the cached
    and uncached paths differ only in how ``logits_fn`` computes the logits.
    """
    schedule = iter(transfer_schedule(int((block == mask_id).sum()), n_steps))
    conf = torch.where(fixed, 1.0, 0.0).double()
    while bool((block == mask_id).any()):
        logits = logits_fn(block)
        x0 = gumbel_argmax(logits, cfg.temperature, gen, cfg.top_k, cfg.top_p)
        x0_p = torch.softmax(logits.double(), dim=-1).gather(-1, x0[:, None]).squeeze(-1)
        candidates = block == mask_id
        reveal = choose_reveal(x0_p, candidates, sampler, cfg.threshold, schedule, gen)
        block[reveal] = x0[reveal]
        conf = torch.where(block == mask_id, x0_p, conf)
        conf[reveal] = x0_p[reveal]
        yield reveal, conf


class _BlockCache:
    """The KV cache of the clean window, plus the committed tokens not yet stored in it.

    ``stored`` is the absolute end of what the cache holds; tokens ``stored..start`` of the
    current block ride along with its first call (block-causal among themselves, hidden from
    the noisy block's own keys, which are dropped again afterwards).
    """

    def __init__(self, model, process, x, block_size: int) -> None:
        self.model, self.process, self.x, self.bs = model, process, x, block_size
        self.cache = None
        self.anchor = self.stored = 0

    def reset(self, anchor: int) -> None:
        self.cache, self.anchor, self.stored = self.model.new_cache(), anchor, anchor

    def logits(self, start: int, block: torch.Tensor) -> torch.Tensor:
        dev = block.device
        a, lb = self.anchor, block.numel()
        pending = self.x[self.stored : start]
        lp = pending.numel()
        pos = torch.arange(start - lp - a, start - a + lb, device=dev)
        if lp == 0:
            return _logits(self.model, self.process, block, pos, cache=self.cache)
        out = self._store_with(pending, block, pos, _block_causal(lp, self.bs, dev))
        self.stored = start
        return out[lp:]

    def _store_with(self, pending, block, pos, among: torch.Tensor) -> torch.Tensor:
        """One call over [pending ; block]: the pending tokens see the cache and each other
        as ``among`` says, never the block; the block sees everything. The pending tokens'
        keys stay in the cache, the block's are dropped again."""
        dev, lp, lb = block.device, pending.numel(), block.numel()
        lc = len(self.cache) if self.cache is not None else 0
        pend_rows = torch.cat(
            [
                torch.ones(lp, lc, dtype=torch.bool, device=dev),
                among,
                torch.zeros(lp, lb, dtype=torch.bool, device=dev),
            ],
            dim=1,
        )
        rows = torch.cat([pend_rows, torch.ones(lb, lc + lp + lb, dtype=torch.bool, device=dev)])
        out = _logits(
            self.model,
            self.process,
            torch.cat([pending, block]),
            pos,
            attn_mask=rows,
            cache=self.cache,
            store=True,
        )
        _drop_newest(self.cache, lb)
        return out


class _ShiftedBlockCache(_BlockCache):
    """The cache of a shifted model's clean stream [BOS, x[anchor:stored]]: an ar prefill.

    A block's first call also stores the committed tokens not yet cached (BOS first after a
    reset) and reads the block's first-token logits off the last of them, an ar prediction
    that no later call of the block changes; every call reads token j's off position j - 1.
    """

    def reset(self, anchor: int) -> None:
        super().reset(anchor)
        self.bos = True  # BOS not yet stored
        self.first: torch.Tensor | None = None

    def logits(self, start: int, block: torch.Tensor) -> torch.Tensor:
        dev = block.device
        a, lb = self.anchor, block.numel()
        pending = self.x[self.stored : start]
        if self.bos:
            pending = torch.cat([torch.tensor([self.process.bos_id], device=dev), pending])
        lp = pending.numel()
        lc = start - a + 1 - lp  # clean positions already cached
        noisy_pos = torch.arange(start - a + 1, start - a + 1 + lb, device=dev)
        if lp == 0:
            out = _logits(self.model, self.process, block, noisy_pos, cache=self.cache)
            assert self.first is not None  # (set by the block's first, storing call)
            first = self.process.first_logits(self.first, out[lb - 1], block)
            return torch.cat([first[None], out[: lb - 1]])
        pos = torch.cat([torch.arange(lc, lc + lp, device=dev), noisy_pos])
        causal = torch.ones(lp, lp, dtype=torch.bool, device=dev).tril()
        out = self._store_with(pending, block, pos, causal)
        self.stored, self.bos, self.first = start, False, out[lp - 1]
        first = self.process.first_logits(out[lp - 1], out[lp + lb - 1], block)
        return torch.cat([first[None], out[lp : lp + lb - 1]])


def _uncached_shifted_logits(model, process, x, anchor: int, start: int, block) -> torch.Tensor:
    """The reference for a shifted model: [noisy block ; BOS, x[anchor:start]] recomputed,
    the clean part causal, token j's logits read off position j - 1 (the first off BOS or
    the last clean token; see ``BlockProcess.first_logits``)."""
    dev = block.device
    clean = torch.cat([torch.tensor([process.bos_id], device=dev), x[anchor:start]])
    lb, c = block.numel(), clean.numel()
    mask = torch.cat(
        [
            torch.ones(lb, lb + c, dtype=torch.bool, device=dev),
            torch.cat(
                [
                    torch.zeros(c, lb, dtype=torch.bool, device=dev),
                    torch.ones(c, c, dtype=torch.bool, device=dev).tril(),
                ],
                dim=1,
            ),
        ]
    )
    pos = torch.cat([torch.arange(c, c + lb, device=dev), torch.arange(c, device=dev)])
    out = _logits(model, process, torch.cat([block, clean]), pos, attn_mask=mask)
    first = process.first_logits(out[lb + c - 1], out[lb - 1], block)
    return torch.cat([first[None], out[: lb - 1]])


def _uncached_block_logits(model, process, x, anchor: int, start: int, block) -> torch.Tensor:
    """The reference: the whole window [clean context ; noisy block] recomputed."""
    seq = torch.cat([x[anchor:start], block])
    mask = _block_causal(seq.numel(), process.block_size, seq.device)
    return _logits(model, process, seq, attn_mask=mask)[start - anchor :]


def block_diffusion(
    model, process, x: torch.Tensor, n_prompt: int, cfg: SampleConfig, sampler: str, gen, window
) -> Iterator[Frame]:
    """Block by block; ``x`` [T] is the prompt then masks (filled in place)."""
    bs = process.block_size
    if bs > window:
        raise ConfigError(f"block size {bs} is larger than the model's window {window}")
    if cfg.block_length not in (0, bs):
        raise ConfigError(
            f"this model was trained with blocks of {bs} tokens: leave block_length at 0 or {bs}"
        )
    total, dev, mask_id = x.numel(), x.device, process.mask_id
    first, last = n_prompt // bs, -(-total // bs)
    keep = (window // bs // 2) * bs
    anchor = first * bs - keep if min(first * bs + bs, total) > window else 0
    unseen = min(anchor, n_prompt)
    yield first_frame(x.tolist(), [i < n_prompt for i in range(total)], unseen)
    shifted = bool(getattr(process, "shift", False))
    kv = (_ShiftedBlockCache if shifted else _BlockCache)(model, process, x, bs)
    uncached = _uncached_shifted_logits if shifted else _uncached_block_logits
    if cfg.cache:
        kv.reset(anchor)
    step = 0
    for j in range(first, last):
        s, e = j * bs, min(j * bs + bs, total)
        if e - anchor > window:  # re-anchor: the block and its context start a new window
            anchor = s - keep
            if cfg.cache:
                kv.reset(anchor)
        if cfg.cache:
            logits_fn = functools.partial(kv.logits, s)
        else:
            logits_fn = functools.partial(uncached, model, process, x, anchor, s)
        block = x[s:e].clone()
        fixed = torch.arange(s, e, device=dev) < n_prompt
        n_steps = _share(cfg.steps, s - n_prompt, e - n_prompt, total - n_prompt) or e - s
        n_steps = min(n_steps, int((~fixed).sum()))
        fixed_list = fixed.tolist()
        for reveal, conf in _denoise(logits_fn, block, fixed, n_steps, sampler, cfg, gen, mask_id):
            step += 1
            masked = (block == mask_id).tolist()
            yield Frame(
                step=step,
                nfe=step,
                tokens=block.tolist(),
                masked=masked,
                changed=sorted(s + i for i in reveal.tolist()),
                confidence=_round(conf),
                fixed=fixed_list,
                done=j == last - 1 and not any(masked),
                offset=s,
                prompt_unseen=unseen,
            )
        x[s:e] = block


# ------------------------------------------------------------------------------- continuation


def continuation(
    run_window: WindowSampler,
    ids: list[int],
    n_prompt: int,
    cfg: SampleConfig,
    window: int,
    device,
    *,
    split_steps: bool,
) -> Iterator[Frame]:
    """A full-sequence sampler past its window: window after window, each conditioned on
    the tail of the text so far (half a window, more when little is left to write; the first
    window conditions on the whole prompt when it fits).

    ``split_steps``: ``cfg.steps`` is a budget for the whole text (masked samplers) and each
    window gets its share; otherwise (uniform) every window runs ``cfg.steps``.
    """
    total = len(ids)
    n_gen = total - n_prompt
    text = list(ids)
    # Prompt tokens before the first window's context are never read (the loop below reads
    # c tokens before position n_prompt first, and only later text after that).
    unseen = 0
    if n_prompt >= window:
        g0 = min(n_gen, window - window // 2)
        unseen = n_prompt - min(n_prompt, window - g0)
    yield first_frame(ids, [i < n_prompt for i in range(total)], unseen)
    step = nfe = 0
    pos = n_prompt
    while pos < total:
        if pos == n_prompt and n_prompt < window:  # a prompt that fits conditions whole
            g, c = min(total - pos, window - pos), pos
        else:
            g = min(total - pos, window - min(pos, window // 2))
            c = min(pos, window - g)
        wcfg = cfg
        if split_steps and cfg.steps > 0:
            wcfg = dataclasses.replace(
                cfg, steps=_share(cfg.steps, pos - n_prompt, pos + g - n_prompt, n_gen)
            )
        x = torch.tensor([text[pos - c : pos + g]], dtype=torch.long, device=device)
        fixed = torch.arange(c + g, device=device) < c
        last = pos + g == total
        base_step, base_nfe = step, nfe
        final = None
        for f in run_window(x, fixed, wcfg):
            final = f
            if f.step == 0:
                continue
            step, nfe = base_step + f.step, base_nfe + f.nfe
            yield Frame(
                step=step,
                nfe=nfe,
                tokens=f.tokens[c:],
                masked=f.masked[c:],
                changed=[pos - c + i for i in f.changed],
                confidence=f.confidence[c:],
                fixed=[False] * g,
                done=f.done and last,
                offset=pos,
                prompt_unseen=unseen,
            )
        assert final is not None
        text[pos : pos + g] = final.tokens[c:]  # (the uniform sampler does not write into x)
        pos += g
