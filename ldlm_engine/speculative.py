"""Self-speculative decoding: the diffusion head drafts, the ar head of the same network
accepts or corrects, so the text follows the ar head's distribution exactly.

A shifted block model (``process.block_shift``) is two models in one network: its noisy
stream denoises a block given the clean prefix, and its clean stream is causal, an ``ar``
model (trained directly by ``process.ar_loss``). Each model call of this sampler does both
jobs, as TiDAR (2025) does:

- **verify**: the drafts d_p..d_{p+n-1} of the last call go through the clean stream
  (cached, causal), which gives the ar head's distribution p at each and one past them;
- **draft**: for the ways the verification most often ends (k = 0 or 1 drafts kept, the
  token at p + k not yet known), the rest of that block, masked from p + k on, is denoised;
  the outcome that happens supplies the next call's drafts, each drawn independently from
  the diffusion head's marginal q (any other outcome: the next call drafts none and writes
  one token, as ar does).

Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) keeps draft d with
probability min(1, p(d) / q(d)); at the first rejection it draws from max(0, p - q),
renormalised, and stops; when every draft is kept it draws one more token from p. Each
committed token is thus distributed exactly as the ar head's p (temperature, top-k and top-p
applied to p and q alike): samples are as good as the ar head, and the ar head's exact NLL
(``ldlm eval``'s "ar head" figure) is the NLL of what this sampler writes. A call commits
between 1 and (block positions left + 1) tokens; the better the drafts, the more.

Draft blocks are counted from the context's anchor, as training counted them from a
window's start, and the context moves on exactly as ``ar`` decoding's does, so at
temperature 0 the text is the ar head's greedy text. The cached path and the uncached one
(recomputing every call, the reference) make the same decisions and give the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .config import SampleConfig
from .decoding import _drop_newest, _logits, _uncached_shifted_logits, first_frame
from .sampling import Frame, top_filter

# Outcomes k = 0 .. OUTCOMES - 1 get a draft block in each call. With the `default` preset
# at 10 CPU-minutes, 87% of calls keep 0 or 1 drafts; drafting every outcome raised tokens
# per call from 1.46 to 1.51 but made each call dearer (benchmarks/speculative.py, 1 thread:
# 710 against 568 tokens/s at best of 3; the ar head alone 703).
OUTCOMES = 2


def target_probs(logits: torch.Tensor, cfg: SampleConfig) -> torch.Tensor:
    """Float64 probabilities [N, V] after temperature, top-k and top-p (one-hot at T = 0):
    the distribution a token is meant to follow, for drafts and ar head alike."""
    if cfg.temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    filtered = top_filter(logits.double(), cfg.top_k, cfg.top_p, cfg.temperature)
    return torch.softmax(filtered / cfg.temperature, dim=-1)


def draw(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One id per row of ``probs`` [N, V] (argmax where a row is one-hot)."""
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(probs.device)


def accept(
    p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, gen: torch.Generator
) -> tuple[list[int], int]:
    """Speculative sampling over n drafts: q [n, V] (what each draft was drawn from), drafts
    [n], and p [n + 1, V] (the ar head at each drafted position and one past the last) or
    [n, V] (no token may follow the drafts in this round).

    Returns (committed ids, number of drafts kept): the kept drafts, then one id drawn from
    the residual max(0, p - q) at the first rejection, or from p past the last draft when it
    has a row there. Every committed id is distributed as p given the ids before it.
    """
    n = drafts.numel()
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    rows = torch.arange(n, device=drafts.device)
    ratio = (p[:n][rows, drafts] / q[rows, drafts]).cpu()
    kept = n
    for i in range(n):
        if u[i] >= ratio[i]:
            kept = i
            break
    out = drafts[:kept].tolist()
    if kept < n:
        residual = (p[kept] - q[kept]).clamp_min(0)
        total = float(residual.sum())
        residual = residual / total if total > 0 else p[kept]  # (p == q: never rejected)
        out.append(int(draw(residual[None], gen)[0]))
    elif p.shape[0] > n:
        out.append(int(draw(p[n][None], gen)[0]))
    return out, kept


@dataclass
class _Call:
    """What one model call is asked: store the committed tokens x[stored:p] and the first
    ``m`` drafts in the clean stream (the ar head's p for positions p..p+m), and denoise one
    draft block per outcome, each given as (start, tokens) or None (no drafts follow it)."""

    p: int
    drafts: torch.Tensor
    m: int
    blocks: list[tuple[int, torch.Tensor] | None]


class _Cached:
    """The clean stream [BOS, x[anchor:stored]] in a KV cache. A call appends clean tokens
    and carries the draft blocks, whose keys are dropped again; block b sees the clean
    stream up to x[start - 1] and itself, as in training (``shift_attention_mask``)."""

    def __init__(self, model, process, x: torch.Tensor) -> None:
        self.model, self.process, self.x = model, process, x

    def reset(self, anchor: int) -> None:
        self.cache = self.model.new_cache()
        self.anchor = self.stored = anchor
        self.bos = True  # BOS not yet stored

    def run(self, call: _Call) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """One model call: the ar head's logits [m + 1, V] for positions p..p+m, and per
        draft block the logits of its tokens start + 1 .. end - 1 (None where no block)."""
        dev, a = self.x.device, self.anchor
        clean = torch.cat([self.x[self.stored : call.p], call.drafts[: call.m]])
        if self.bos:
            clean = torch.cat([torch.tensor([self.process.bos_id], device=dev), clean])
        lc, lp = len(self.cache), clean.numel()
        blocks = [b for b in call.blocks if b is not None]
        lb = sum(t.numel() for _, t in blocks)
        keys = torch.arange(lc + lp + lb, device=dev)
        rows = [
            torch.cat(
                [
                    keys[: lc + lp] < lc + 1 + torch.arange(lp, device=dev)[:, None],
                    torch.zeros(lp, lb, dtype=torch.bool, device=dev),
                ],
                dim=1,
            )
        ]
        pos, tokens, at = [torch.arange(lc, lc + lp, device=dev)], [clean], lc + lp
        for s, t in blocks:
            own = (keys >= at) & (keys < at + t.numel())
            rows.append(((keys <= s - a) | own).expand(t.numel(), -1))
            pos.append(torch.arange(s - a + 1, s - a + 1 + t.numel(), device=dev))
            tokens.append(t)
            at += t.numel()
        out = _logits(
            self.model,
            self.process,
            torch.cat(tokens),
            torch.cat(pos),
            attn_mask=torch.cat(rows),
            cache=self.cache,
            store=True,
        )
        if lb:
            _drop_newest(self.cache, lb)
        self.bos = False
        self.stored = call.p + call.m
        ar = out[lp - call.m - 1 : lp]  # p's logits off the last committed token, then the drafts'
        noisy, at = [], lp
        for b in call.blocks:
            if b is None:
                noisy.append(None)
                continue
            noisy.append(out[at : at + b[1].numel() - 1])  # tokens start + 1 .. end - 1
            at += b[1].numel()
        return ar, noisy

    def keep(self, call: _Call, kept: int) -> None:
        """Forget the stored drafts after the first ``kept`` (their keys are the newest)."""
        if kept < call.m:
            _drop_newest(self.cache, call.m - kept)
        self.stored = call.p + min(kept, call.m)


class _Recomputed:
    """The reference: every call recomputes from [BOS, x[anchor:...]] (no cache)."""

    def __init__(self, model, process, x: torch.Tensor) -> None:
        self.model, self.process, self.x = model, process, x

    def reset(self, anchor: int) -> None:
        self.anchor = anchor

    def run(self, call: _Call) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        dev, a, p = self.x.device, self.anchor, call.p
        bos = torch.tensor([self.process.bos_id], device=dev)
        seq = torch.cat([bos, self.x[a:p], call.drafts[: call.m]])
        ar = _logits(self.model, self.process, seq, causal=True)[p - a :]
        x = self.x.clone()
        x[p : p + call.drafts.numel()] = call.drafts
        noisy = [
            None if b is None else _uncached_shifted_logits(self.model, self.process, x, a, *b)[1:]
            for b in call.blocks
        ]
        return ar, noisy

    def keep(self, call: _Call, kept: int) -> None:
        pass


def _draft_block(x, drafts, p: int, k: int, anchor: int, bs: int, limit: int, mask_id: int):
    """Outcome k's draft block: the block holding p + k, whose token there is not known yet
    (masked, like every later position), with the committed tokens and the k kept drafts
    before it. None when the next call starts a block (its first token is the ar head's)
    or reaches the limit."""
    here = p + k
    s = anchor + (here - anchor) // bs * bs
    e = min(s + bs, limit)
    if here + 1 >= e:
        return None
    known = torch.cat([x[s:p], drafts[: max(0, here - max(s, p))]])[: here - s]
    return s, torch.cat([known, torch.full((e - here,), mask_id, device=x.device)])


def speculative(
    model, process, x: torch.Tensor, n_prompt: int, cfg: SampleConfig, gen, window: int
) -> Iterator[Frame]:
    """Verify the last drafts and draft the next in one call per round; ``x`` [T] is the
    prompt then masks (filled in place). One frame per call."""
    bs = process.block_size  # (a shifted block process: sampling.resolve_sampler checked)
    total, dev, mask_id = x.numel(), x.device, process.mask_id
    keep = window // 2
    anchor = n_prompt - keep if n_prompt >= window else 0
    unseen = anchor
    yield first_frame(x.tolist(), [i < n_prompt for i in range(total)], unseen)
    streams = (_Cached if cfg.cache else _Recomputed)(model, process, x)
    streams.reset(anchor)
    conf = torch.zeros(total, dtype=torch.float64)
    conf[:n_prompt] = 1.0
    p, step = n_prompt, 0
    drafts = torch.zeros(0, dtype=torch.long, device=dev)
    q = torch.zeros(0, 0, dtype=torch.float64)
    while p < total:
        if p - anchor >= window:  # [BOS, x[anchor:p]] would not fit: re-anchor
            anchor = p - keep
            streams.reset(anchor)
            drafts = drafts[:0]
        n = drafts.numel()
        limit = min(total, anchor + window)  # the ar head predicts at most x[limit - 1]
        m = n if p + n < limit else n - 1  # the drafts' own rows predict up to x[p + m]

        blocks = [
            _draft_block(x, drafts, p, k, anchor, bs, limit, mask_id) if k < OUTCOMES else None
            for k in range(m + 1)
        ]
        call = _Call(p, drafts, m, blocks)
        ar_logits, noisy = streams.run(call)
        pr = target_probs(ar_logits, cfg)
        committed, kept = accept(pr, q, drafts, gen)
        streams.keep(call, kept)
        committed = committed[: total - p]
        ids = torch.tensor(committed, dtype=torch.long, device=dev)
        x[p : p + len(committed)] = ids
        conf[p : p + len(committed)] = pr[torch.arange(len(committed)), ids].cpu()
        step += 1
        first, last = p, p + len(committed)
        # the next drafts: the outcome that happened, from the position after its token
        nxt = call.blocks[kept] if kept < len(call.blocks) and last < total else None
        if nxt is None:
            drafts, q = drafts[:0], q[:0]
        else:
            s_k = nxt[0]
            q = target_probs(noisy[kept][last - 1 - s_k :], cfg)  # type: ignore[index]
            drafts = draw(q, gen)
        s = anchor + (first - anchor) // bs * bs
        p = last
        end = max(last, min(s + bs, total))
        yield Frame(
            step=step,
            nfe=step,
            tokens=x[s:end].tolist(),
            masked=[i >= p for i in range(s, end)],
            changed=list(range(first, last)),
            confidence=[round(c, 4) for c in conf[s:end].tolist()],
            fixed=[i < n_prompt for i in range(s, end)],
            done=p >= total,
            offset=s,
            prompt_unseen=unseen,
        )
