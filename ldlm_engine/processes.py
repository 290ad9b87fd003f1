"""Noise processes: how clean text is corrupted, the training loss, and a likelihood bound.

Every process trains the same network to predict the clean token x0 (D3PM's x0
parameterisation); they differ in the corruption and in how the loss bounds the NLL:

- ``mask``  (LLaDA/MDLM): each token becomes ``<mask>`` with probability t ~ U(eps, 1); the
  1/t-weighted cross-entropy on masked tokens is an upper bound on -log p(x0).
- ``uniform`` (the seed's): at step i of T each token is replaced by a random token with
  probability 1 - alpha_bar(i); trained with plain CE against x0, bounded by D3PM's
  discrete-time ELBO for uniform transitions.
- ``ar``: the same transformer, causal, next-token CE; the exact NLL, the yardstick.
- ``block`` (BD3-LM): blocks generated left to right, masked diffusion inside a block given
  the clean blocks before it; its bound lies between ``ar``'s NLL and ``mask``'s bound.

``nll_terms`` returns one Monte Carlo draw of the per-sequence bound (nats) for given uniform
numbers ``u``, so :mod:`ldlm_engine.evaluation` can stratify draws and report a standard error.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F

from .config import ProcessConfig
from .model import DiffusionTransformer


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform noise drawn where the generator lives (on the GPU when training there, so no
    host-to-device copy stalls the step), then moved to ``device`` if it differs."""
    return torch.rand(shape, generator=generator, device=_gen_device(generator)).to(device)


def stratified_uniform(n: int, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """n numbers in [0, 1), one in each of n equal strata, in random order (antithetic draws)."""
    gdev = _gen_device(generator)
    u0 = torch.rand((), generator=generator, device=gdev)
    perm = torch.randperm(n, generator=generator, device=gdev)
    return ((u0 + perm.double()) / n).float().to(device)


class NoiseProcess:
    """Shared plumbing: which token ids the model may predict, and the logits it predicts."""

    kind = "base"
    exact = False  # True when nll_terms is the exact NLL rather than a bound

    def __init__(
        self,
        cfg: ProcessConfig,
        vocab_size: int,
        mask_id: int,
        pad_id: int,
        bos_id: int,
        unwritable: tuple[int, ...] = (),
    ):
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.pad_id = pad_id
        self.bos_id = bos_id
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[[mask_id, pad_id]] = False
        self.allowed = allowed  # ids a clean text may contain (never <mask> or <pad>)
        self.allowed_ids = allowed.nonzero().squeeze(1)
        # Ids a sampler may write: the bound keeps every allowed id (a corpus can contain
        # <unk>), but generated text never gets <unk>, <start> or <end>, which decode to
        # nothing and which an under-trained model still gives some probability.
        writable = allowed.clone()
        writable[list(unwritable)] = False
        self.writable = writable

    def to(self, device: torch.device | str) -> NoiseProcess:
        """Move the process's lookup tensors next to the model (returns self, like a module)."""
        self.allowed = self.allowed.to(device)
        self.allowed_ids = self.allowed_ids.to(device)
        self.writable = self.writable.to(device)
        return self

    def x0_logits(
        self,
        model: DiffusionTransformer,
        xt: torch.Tensor,
        t: torch.Tensor | None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Float32 logits for x0 with the impossible ids (mask, pad) removed: [B, L, V], or
        [R, V] at the positions ``keep`` [B, L] selects (see ``DiffusionTransformer``)."""
        logits = model(xt, t, keep=keep).float()
        return logits.masked_fill(~self.allowed.to(logits.device), float("-inf"))

    def sampling_logits(
        self, model: DiffusionTransformer, xt: torch.Tensor, t: torch.Tensor | None
    ) -> torch.Tensor:
        """Float32 logits for what a sampler may write: text ids only (see ``writable``)."""
        logits = model(xt, t).float()
        return logits.masked_fill(~self.writable.to(logits.device), float("-inf"))

    def ar_head(self) -> NoiseProcess | None:
        """The same network read as an exact ar model, where it has one besides this
        process's bound (a shifted block model); else None."""
        return None

    def draw_u(self, batch: int, generator: torch.Generator | None, device) -> torch.Tensor:
        if self.cfg.antithetic:
            return stratified_uniform(batch, generator, device)
        return rand(batch, generator, device)

    def loss(self, model, x0: torch.Tensor, generator: torch.Generator | None = None):
        raise NotImplementedError

    def nll_terms(self, model, x0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# On a CPU the masked process runs its last block at the masked positions only (masked_ce);
# benchmarks/train_throughput.py turns this off to time the whole pass beside it.
_MASKED_ROWS_ONLY = True


class MaskedProcess(NoiseProcess):
    """LLaDA's absorbing process: mask with probability t, predict the masked tokens."""

    kind = "mask"

    def t_from_u(self, u: torch.Tensor) -> torch.Tensor:
        eps = self.cfg.eps
        return eps + (1.0 - eps) * u

    def corrupt(self, x0: torch.Tensor, t: torch.Tensor, generator=None):
        """Mask each token independently with probability t (per row); returns (xt, mask)."""
        r = rand(x0.shape, generator, x0.device)
        mask = r < t[:, None]
        return x0.masked_fill(mask, self.mask_id), mask

    def masked_ce(
        self, model, x0: torch.Tensor, xt: torch.Tensor, mask: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy [B, L] of x0 at the masked positions (``mask`` [B, L], masked in
        ``xt``), 0 elsewhere.

        On a CPU the network's last block and head run at the masked positions only (no loss
        is read elsewhere): at the seed's dimensions 6% fewer FLOPs a step and 5% less time
        (docs/benchmarks.md, "Only the scored positions"). Elsewhere the whole pass runs:
        selecting rows by a mask makes the host wait for the GPU, which costs a small model
        more than it saves.
        """
        if x0.device.type != "cpu" or not _MASKED_ROWS_ONLY:
            logits = self.x0_logits(model, xt, t)
            ce = F.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none")
            return ce.view(x0.shape) * mask
        ce = F.cross_entropy(self.x0_logits(model, xt, t, keep=mask), x0[mask], reduction="none")
        return torch.zeros(x0.shape, dtype=ce.dtype, device=ce.device).masked_scatter(mask, ce)

    def _weighted_ce(self, model, x0, u, generator):
        t = self.t_from_u(u)
        xt, mask = self.corrupt(x0, t, generator)
        return self.masked_ce(model, x0, xt, mask, t) / t[:, None]

    def loss(self, model, x0, generator=None):
        """Sum over masked positions of CE / t, divided by the number of positions."""
        u = self.draw_u(x0.shape[0], generator, x0.device)
        return self._weighted_ce(model, x0, u, generator).sum() / x0.numel()

    def nll_terms(self, model, x0, u, generator=None):
        """One draw of the same bound with exactly k ~ U{1..L} masked tokens, weighted L/k.

        Integrating Binomial(L, t) masking against 1/t gives exactly this estimator, whose
        largest weight is L instead of 1/eps: far lower variance for evaluation.
        """
        length = x0.shape[1]
        k = (u * length).long().clamp(0, length - 1) + 1  # [B] in 1..L
        scores = rand(x0.shape, generator, x0.device)
        ranks = scores.argsort(dim=1).argsort(dim=1)
        mask = ranks < k[:, None]
        xt = x0.masked_fill(mask, self.mask_id)
        return self.masked_ce(model, x0, xt, mask, k.float() / length).sum(dim=1) * length / k


def alpha_bar_schedule(timesteps: int, schedule: str) -> torch.Tensor:
    """alpha_bar[i] for i = 0..T: the probability that a token is still clean at step i."""
    i = torch.arange(timesteps + 1, dtype=torch.float64)
    if schedule == "linear":
        return 1.0 - i / timesteps
    s = 0.008  # Nichol & Dhariwal's offset, so that alpha_bar(1) is just below 1
    f = torch.cos((i / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    ab[-1] = 0.0  # cos(pi/2) is 6e-17 in floating point: make the prior exactly uniform
    return ab.clamp(0.0, 1.0)


class UniformProcess(NoiseProcess):
    """The seed's process: replace tokens with uniformly random ones, 1000 cosine steps."""

    kind = "uniform"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.T = self.cfg.timesteps
        self.alpha_bar = alpha_bar_schedule(self.T, self.cfg.schedule)  # float64 [T+1]
        self.K = int(self.allowed_ids.numel())

    def replace_prob(self, i: torch.Tensor) -> torch.Tensor:
        """p(i) = 1 - alpha_bar(i): the chance a token has been replaced by step i."""
        return (1.0 - self.alpha_bar[i.cpu()]).float().to(i.device)

    def random_tokens(self, shape, generator, device) -> torch.Tensor:
        idx = torch.randint(self.K, shape, generator=generator, device=_gen_device(generator))
        return self.allowed_ids.to(idx.device)[idx].to(device)

    def corrupt(self, x0: torch.Tensor, i: torch.Tensor, generator=None):
        """Replace each token with a random allowed token with probability p(i) (per row)."""
        p = self.replace_prob(i)
        r = rand(x0.shape, generator, x0.device)
        replace = r < p[:, None]
        noise = self.random_tokens(x0.shape, generator, x0.device)
        return torch.where(replace, noise, x0), replace

    def step_from_u(self, u: torch.Tensor) -> torch.Tensor:
        """Map u in [0, 1) to a step i in 1..T."""
        return (u * self.T).long().clamp(0, self.T - 1) + 1

    def model_time(self, i: torch.Tensor) -> torch.Tensor:
        return i.float() / self.T

    def loss(self, model, x0, generator=None):
        """Cross-entropy against x0 at every position (the seed's objective, x0-parameterised)."""
        i = self.step_from_u(self.draw_u(x0.shape[0], generator, x0.device))
        xt, _ = self.corrupt(x0, i, generator)
        logits = self.x0_logits(model, xt, self.model_time(i))
        return F.cross_entropy(logits.flatten(0, 1), x0.flatten())

    def _log_mix(self, p: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """log(keep * p + (1 - keep) / K) over allowed ids; ``keep`` is [B] float64."""
        keep = keep.to(p.dtype)[:, None, None]
        return torch.log(keep * p + (1.0 - keep) / self.K)

    def posterior_logits(
        self, xt: torch.Tensor, p_x0: torch.Tensor, i: torch.Tensor, s: torch.Tensor
    ) -> torch.Tensor:
        """Unnormalised log p(x_s | x_i) = log sum_x0 q(x_i | x_s) q(x_s | x0) p(x0 | x_i).

        ``p_x0`` is a distribution over the allowed ids [B, L, K] (a one-hot x0 gives the true
        posterior q(x_s | x_i, x0)). Uniform transitions make the sum closed-form: O(K).
        """
        ab_i, ab_s = self.alpha_bar[i.cpu()], self.alpha_bar[s.cpu()]
        a = (ab_i / ab_s.clamp_min(1e-300)).to(p_x0.device)  # alpha_{i|s}
        onehot_xt = F.one_hot(self._allowed_index(xt), self.K).to(p_x0.dtype)
        a_ = a.to(p_x0.dtype)[:, None, None]
        log_fwd = torch.log(a_ * onehot_xt + (1.0 - a_) / self.K)
        return log_fwd + self._log_mix(p_x0, ab_s.to(p_x0.device))

    def _allowed_index(self, x: torch.Tensor) -> torch.Tensor:
        lookup = torch.cumsum(self.allowed.long(), 0) - 1
        return lookup.to(x.device)[x]

    def model_x0_probs(self, model, xt, i) -> torch.Tensor:
        logits = self.x0_logits(model, xt, self.model_time(i))
        return torch.softmax(logits[..., self.allowed.to(logits.device)].double(), dim=-1)

    def prior_kl(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x0) || uniform) per sequence; zero when alpha_bar(T) = 0 (cosine)."""
        ab = float(self.alpha_bar[-1])
        q_hit = ab + (1 - ab) / self.K
        q_miss = (1 - ab) / self.K
        kl = q_hit * math.log(q_hit * self.K)
        if q_miss > 0:
            kl += (self.K - 1) * q_miss * math.log(q_miss * self.K)
        return torch.full((x0.shape[0],), kl * x0.shape[1], dtype=torch.float64, device=x0.device)

    def nll_terms(self, model, x0, u, generator=None):
        """One draw of D3PM's ELBO: T * L_{i-1} at a random step i, plus the prior term."""
        i = self.step_from_u(u)
        xt, _ = self.corrupt(x0, i, generator)
        p_x0 = self.model_x0_probs(model, xt, i)
        x0_idx = self._allowed_index(x0)
        s = i - 1
        log_p = torch.log_softmax(self.posterior_logits(xt, p_x0, i, s), dim=-1)
        onehot = F.one_hot(x0_idx, self.K).double()
        log_q = torch.log_softmax(self.posterior_logits(xt, onehot, i, s), dim=-1)
        q = log_q.exp()
        kl = (q * (log_q - log_p)).nan_to_num(0.0).sum(-1)  # 0 * log 0 = 0
        nll0 = -log_p.gather(-1, x0_idx[..., None]).squeeze(-1)  # step 1: -log p(x0 | x1)
        term = torch.where((i == 1)[:, None], nll0, kl).sum(dim=1)
        return (self.T * term + self.prior_kl(x0)).float()


class AutoregressiveProcess(NoiseProcess):
    """Left-to-right baseline: causal attention, next-token cross-entropy, exact NLL."""

    kind = "ar"
    exact = True

    def shift_right(self, x0: torch.Tensor) -> torch.Tensor:
        bos = torch.full_like(x0[:, :1], self.bos_id)
        return torch.cat([bos, x0[:, :-1]], dim=1)

    def _ce(self, model, x0):
        logits = self.x0_logits(model, self.shift_right(x0), None)
        return F.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none").view(x0.shape)

    def loss(self, model, x0, generator=None):
        return self._ce(model, x0).mean()

    def nll_terms(self, model, x0, u=None, generator=None):
        return self._ce(model, x0).sum(dim=1)


def shift_attention_mask(length: int, block_size: int, device=None) -> torch.Tensor:
    """Who may attend to whom in a *shifted* block pass over ``[x_t ; BOS, x_0[:length - B]]``.

    Returns a boolean [N, N], N = 2 length - B + 1 (True = may attend). Clean position k holds
    x_{k-1} (BOS at 0) and is causal among the clean tokens: exactly an ``ar`` model's pass.
    A noisy token of block b sees its own block's noisy tokens and the clean positions
    0..bB, i.e. BOS and every token before the block.
    """
    clean = length - block_size + 1
    blk = torch.arange(length, device=device) // block_size
    kc = torch.arange(clean, device=device)
    noisy_rows = torch.cat(
        [blk[:, None] == blk[None, :], kc[None, :] <= (blk * block_size)[:, None]], dim=1
    )
    clean_rows = torch.cat(
        [torch.zeros(clean, length, dtype=torch.bool, device=device), kc[None, :] <= kc[:, None]],
        dim=1,
    )
    return torch.cat([noisy_rows, clean_rows], dim=0)


def shift_rows(
    length: int, block_size: int, device=None, clean_rows: bool = True, wrap: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which output rows a shifted block pass needs, and where each token's logits are.

    Returns (rows, index): ``rows`` are the noisy positions whose output predicts the next
    token of the same block (i - 1 for every i that does not start a block), with ``wrap``
    each block's last noisy position (see ``ProcessConfig.block_wrap``), then the clean
    positions (k predicts x_k): every one with ``clean_rows`` (the ar loss reads them all),
    else only those before a block. ``index[i]`` is the place of token i's logits in ``rows``
    (a block's first token: its clean row).
    The head runs on these rows only: with a word vocabulary it is most of a step's cost.
    """
    clean = length - block_size + 1
    i = torch.arange(length, device=device)
    inner = i[i % block_size != 0]
    starts = i[i % block_size == 0]
    kept = torch.arange(clean, device=device) if clean_rows else starts
    lasts = starts + block_size - 1 if wrap else starts[:0]
    rows = torch.cat([inner - 1, lasts, length + kept])
    index = torch.empty(length, dtype=torch.long, device=device)
    index[inner] = torch.arange(inner.numel(), device=device)
    first = inner.numel() + lasts.numel()
    index[starts] = first + (starts if clean_rows else torch.arange(starts.numel()))
    return rows, index


def block_attention_mask(
    length: int, block_size: int, clean: int | None = None, device=None
) -> torch.Tensor:
    """Who may attend to whom in a block-diffusion pass over ``[x_t ; x_0[:clean]]``.

    Returns a boolean [length + clean, length + clean] (True = may attend). A noisy token in
    block b sees the noisy tokens of block b and the clean tokens of blocks < b; a clean token
    in block b sees the clean tokens of blocks <= b and never a noisy one. ``clean`` defaults
    to ``length - block_size``: the last block's clean copy is attended by nobody, so it is
    left out.
    """
    clean = length - block_size if clean is None else clean
    blk = torch.arange(length, device=device) // block_size
    cblk = blk[:clean]
    noisy_rows = torch.cat([blk[:, None] == blk[None, :], cblk[None, :] < blk[:, None]], dim=1)
    clean_rows = torch.cat(
        [
            torch.zeros(clean, length, dtype=torch.bool, device=device),
            cblk[None, :] <= cblk[:, None],
        ],
        dim=1,
    )
    return torch.cat([noisy_rows, clean_rows], dim=0)


class BlockProcess(MaskedProcess):
    """Block diffusion (BD3-LM): blocks left to right, masked diffusion inside each block.

    Training scores the noisy copy x_t (a noise level per block) against the clean copy x_0
    under :func:`block_attention_mask`; ``block_clean_grad = True`` does it in BD3-LM's one
    joint pass over ``[x_t ; x_0]``, slicing the noisy half before the head. The bound is
    the sum over blocks of the masked bound of block b given the clean blocks < b: between
    the masked process's and the exact AR NLL, and exact itself at ``block_size`` 1.
    ``block_size == seq_len`` is the masked process at its cost: the same bound, and the same
    loss draw for draw with ``block_masking = "bernoulli"``.

    ``block_masking = "exact"`` draws exactly k ~ U{1..B} masks per block, weighted B/k: the
    same expected loss as Bernoulli(t) masks weighted 1/t, without the 1/eps outliers that a
    small block's single noise level makes frequent. ``block_clean_grad = False`` (the
    default) computes the clean copy in a no-grad pass whose keys/values enter the noisy pass
    as constants: a step costs 1.5x a masked step instead of 2.35x, but the gradient is
    biased (it ignores how the clean keys depend on the weights) and learns less per step,
    hardly at all with blocks of 1 or 2.

    ``block_shift`` (Fast-dLLM v2's token shift) reads a masked token's logits off the
    position before it and a block's first token off the clean copy, which is then causal:
    an ar model's pass. Blocks of 1 are exactly ar, an ar run's weights carry over
    (``--init-from``), ``ar_loss`` trains the clean copy's next-token predictions for free,
    and ``full_blocks`` steps over the whole window let the same weights infill.
    ``block_wrap`` lets a block's first token see the rest of its block once any of it is
    known, as the masked bound assumes; without it the bound stays above the exact NLL even
    for a perfect model (the first token is always guessed from the prefix alone).
    """

    kind = "block"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.block_size = int(self.cfg.block_size)
        self.exact = self.block_size == 1  # one token per block: the chain rule, no noise
        self.progress = 1.0  # fraction of training done; the Trainer sets it before each step
        self.shift = bool(self.cfg.block_shift)
        self.wrap = self.shift and bool(self.cfg.block_wrap)
        self._masks: dict[tuple[int, int, str], torch.Tensor] = {}
        self._shift: dict[tuple[int, int, str], tuple[torch.Tensor, ...]] = {}
        self._split_masks: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def ar_head(self) -> BlockProcess | None:
        """The same network read as an ar model (a shifted process with blocks of 1): the
        distribution the speculative sampler's text follows. None without the shift, and
        for blocks of 1, which already are that model."""
        if not self.shift or self.block_size == 1:
            return None
        head = copy.copy(self)  # (its shape-keyed caches are shared: the keys hold the size)
        head.cfg = dataclasses.replace(self.cfg, block_size=1, full_blocks=0.0, ar_phase=0.0)
        head.block_size, head.exact = 1, True
        return head

    def _mask(self, length: int, bs: int, device: torch.device) -> torch.Tensor:
        key = (length, bs, str(device))
        if key not in self._masks:
            self._masks[key] = block_attention_mask(length, bs, device=device)
        return self._masks[key]

    def _split_mask(self, length: int, bs: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The joint mask cut for the no-grad clean pass: (clean rows over clean keys, noisy
        rows over [cached clean keys ; noisy keys]), the cache putting the clean keys first.
        Built once per shape, not at every training step."""
        key = (length, bs, str(device))
        if key not in self._split_masks:
            mask = self._mask(length, bs, device)
            rows = mask[:length]
            noisy = torch.cat([rows[:, length:], rows[:, :length]], dim=1)
            self._split_masks[key] = (mask[length:, length:], noisy)
        return self._split_masks[key]

    def _blocks(self, length: int, bs: int) -> int:
        if length % bs:
            raise ValueError(f"sequence length {length} is not a multiple of {bs}")
        return length // bs

    def _shift_tables(self, length: int, bs: int, device, ar: bool) -> tuple[torch.Tensor, ...]:
        key = (length, bs, str(device), ar)
        if key not in self._shift:
            rows, index = shift_rows(length, bs, device, clean_rows=ar, wrap=self.wrap)
            pos = torch.arange(length + 1, device=device)
            positions = torch.cat([pos[1:], pos[: length - bs + 1]])
            self._shift[key] = (shift_attention_mask(length, bs, device), rows, index, positions)
        return self._shift[key]

    def shifted_logits(
        self, model, xt: torch.Tensor, x0: torch.Tensor, bs: int, ar: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One shifted pass: (token logits [B, L, V], clean-stream logits [B, L - bs + 1, V]
        when ``ar``, else None).

        Token i's logits come from the noisy position i - 1 of its block, or, for a block's
        first token, from the clean position holding x_{i-1}: the ar prediction. The clean
        stream's logits at k predict x_k (the next-token loss of ``ar_loss``). With blocks of
        1 every token starts a block: the pass is the clean stream alone, causal, an ar pass.
        """
        length = x0.shape[1]
        bos = torch.full_like(x0[:, :1], self.bos_id)
        if bs == 1:
            logits = model(torch.cat([bos, x0[:, :-1]], dim=1), None, causal=True)
            return logits, logits
        mask, rows, index, positions = self._shift_tables(length, bs, x0.device, ar)
        inp = torch.cat([xt, bos, x0[:, : length - bs]], dim=1)
        out = model(inp, None, positions=positions, attn_mask=mask, rows=rows)
        tok = out[:, index]
        if self.wrap:
            nb = length // bs
            wrapped = out[:, length - nb : length]  # (the rows after the inner ones)
            blocks = xt.view(-1, nb, bs)
            tok[:, ::bs] = self.first_logits(tok[:, ::bs], wrapped, blocks)  # (tok: a copy)
        return tok, (out[:, rows.numel() - (length - bs + 1) :] if ar else None)

    def first_logits(self, ar: torch.Tensor, last: torch.Tensor, blocks: torch.Tensor):
        """A block's first-token logits, for training and both block decoders alike: the ar
        prediction ``ar`` [..., V], plus the block's last noisy position's ``last`` with
        ``block_wrap`` when another of the block's noisy tokens ``blocks`` [..., B] is
        known."""
        if not self.wrap:
            return ar
        known = (blocks[..., 1:] != self.mask_id).any(-1, keepdim=True)
        return torch.where(known, ar + last, ar)

    def sampling_logits(self, model, xt: torch.Tensor, t=None) -> torch.Tensor:
        """A shifted model denoises a whole window as one block (infill); see ``full_blocks``."""
        if not self.shift:
            return super().sampling_logits(model, xt, t)
        logits = self.shifted_logits(model, xt, xt, xt.shape[1], ar=False)[0].float()
        return logits.masked_fill(~self.writable.to(logits.device), float("-inf"))

    def noisy_logits(
        self, model, xt: torch.Tensor, x0: torch.Tensor, bs: int | None = None
    ) -> torch.Tensor:
        """Float32 x0-logits [B, L, V] of the noisy tokens, each block seeing the clean prefix."""
        bs = self.block_size if bs is None else bs
        if self.shift:
            logits = self.shifted_logits(model, xt, x0, bs, ar=False)[0].float()
            return logits.masked_fill(~self.allowed.to(logits.device), float("-inf"))
        length = x0.shape[1]
        clean = length - bs
        dev = x0.device
        if clean == 0:  # one block: exactly the masked process's pass
            logits = model(xt, None)
        elif self.cfg.block_clean_grad:
            pos = torch.arange(length, device=dev)
            logits = model(
                torch.cat([xt, x0[:, :clean]], dim=1),
                None,
                positions=torch.cat([pos, pos[:clean]]),
                attn_mask=self._mask(length, bs, dev),
                n_logits=length,
            )
        else:
            logits = self._stop_grad_logits(model, xt, x0, bs)
        logits = logits.float()
        return logits.masked_fill(~self.allowed.to(logits.device), float("-inf"))

    def _stop_grad_logits(self, model, xt, x0, bs: int) -> torch.Tensor:
        """Clean keys/values from a no-grad pass, cached; then the noisy pass attends to them."""
        length, dev = x0.shape[1], x0.device
        clean = length - bs
        clean_mask, noisy_mask = self._split_mask(length, bs, dev)
        pos = torch.arange(length, device=dev)
        net = getattr(model, "module", model)  # DDP / compile wrappers keep the model here
        net = getattr(net, "_orig_mod", net)
        cache = net.new_cache()
        with torch.no_grad():
            model(
                x0[:, :clean],
                None,
                positions=pos[:clean],
                attn_mask=clean_mask,
                cache=cache,
                store=True,
                n_logits=0,
            )
        return model(xt, None, positions=pos, attn_mask=noisy_mask, cache=cache)

    def _exact_k(self, x0: torch.Tensor, u: torch.Tensor, bs: int, generator):
        """Mask exactly k = ceil(u B) random tokens of each block; u is [batch, blocks].

        Returns (mask [B, L], per-token weight B/k [B, L]).
        """
        b, length = x0.shape
        k = (u * bs).long().clamp(0, bs - 1) + 1  # [B, nb] in 1..bs
        scores = rand(x0.shape, generator, x0.device).view(b, -1, bs)
        ranks = scores.argsort(dim=-1).argsort(dim=-1)
        mask = (ranks < k[..., None]).view(b, length)
        weight = (bs / k.float()).repeat_interleave(bs, dim=1)
        return mask, weight

    def _ce(self, model, x0, mask, bs: int) -> torch.Tensor:
        xt = x0.masked_fill(mask, self.mask_id)
        logits = self.noisy_logits(model, xt, x0, bs)
        ce = F.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none")
        return ce.view(x0.shape)

    def training_block_size(self, length: int, generator=None) -> int:
        """The block size of this training step: 1 during ``ar_phase`` (shifted: an ar pass),
        the whole window during ``block_warmup`` and for a ``full_blocks`` share of the steps
        (so the same weights can infill a whole window), else ``block_size``."""
        p = self.cfg
        if self.shift and self.progress < p.ar_phase:
            return 1
        if self.progress < p.block_warmup:
            return length
        if p.full_blocks > 0:
            u = torch.rand((), generator=generator, device=_gen_device(generator))
            if float(u) < p.full_blocks:
                return length
        return self.block_size

    def loss(self, model, x0, generator=None):
        """Weighted CE on masked tokens, summed and divided by the number of positions.

        Noise levels are drawn per block (stratified over every block of the batch). During
        the first ``block_warmup`` of training the whole sequence is one block (the masked
        process, at its cost), as BD3-LM pre-trains with MDLM before fine-tuning its blocks.
        A shifted model adds ``ar_loss`` times the next-token loss its clean copy gives for
        free: one network trained on both objectives.
        """
        bs = self.training_block_size(x0.shape[1], generator)
        if self.shift:
            return self._shifted_loss(model, x0, bs, generator)
        nb = self._blocks(x0.shape[1], bs)
        u = self.draw_u(x0.shape[0] * nb, generator, x0.device).view(-1, nb)
        if self.cfg.block_masking == "exact":
            mask, weight = self._exact_k(x0, u, bs, generator)
        else:  # MDLM's form; with one block it is the masked process's loss draw for draw
            t = self.t_from_u(u).repeat_interleave(bs, dim=1)
            mask = rand(x0.shape, generator, x0.device) < t
            weight = 1.0 / t
        return (self._ce(model, x0, mask, bs) * mask * weight).sum() / x0.numel()

    def _shifted_loss(self, model, x0, bs: int, generator) -> torch.Tensor:
        if bs == 1:  # ar: every token masked with weight 1, the clean pass alone
            logits = self.shifted_logits(model, x0, x0, 1)[0].float()
            logits = logits.masked_fill(~self.allowed.to(logits.device), float("-inf"))
            return F.cross_entropy(logits.flatten(0, 1), x0.flatten())
        nb = self._blocks(x0.shape[1], bs)
        u = self.draw_u(x0.shape[0] * nb, generator, x0.device).view(-1, nb)
        mask, weight = self._exact_k(x0, u, bs, generator)
        xt = x0.masked_fill(mask, self.mask_id)
        tok, clean = self.shifted_logits(model, xt, x0, bs, ar=self.cfg.ar_loss > 0)
        allowed = self.allowed.to(tok.device)
        tok = tok.float().masked_fill(~allowed, float("-inf"))
        ce = F.cross_entropy(tok.flatten(0, 1), x0.flatten(), reduction="none").view(x0.shape)
        loss = (ce * mask * weight).sum() / x0.numel()
        if clean is not None:
            clean = clean.float().masked_fill(~allowed, float("-inf"))
            target = x0[:, : clean.shape[1]]
            ar = F.cross_entropy(clean.flatten(0, 1), target.flatten())
            loss = loss + self.cfg.ar_loss * ar
        return loss

    def nll_terms(self, model, x0, u, generator=None):
        """One draw of the bound: for each block, k ~ U{1..B} masks weighted B/k, given the
        clean blocks before it. Block b uses (u + b / n_blocks) mod 1, so a sequence's blocks
        spread over the noise levels; with one block this is MaskedProcess.nll_terms."""
        bs = self.block_size
        nb = self._blocks(x0.shape[1], bs)
        offsets = torch.arange(nb, device=u.device, dtype=u.dtype) / nb
        mask, weight = self._exact_k(x0, (u[:, None] + offsets) % 1.0, bs, generator)
        return (self._ce(model, x0, mask, bs) * mask * weight).sum(dim=1)


PROCESS_TYPES = {
    "mask": MaskedProcess,
    "uniform": UniformProcess,
    "ar": AutoregressiveProcess,
    "block": BlockProcess,
}


def make_process(cfg: ProcessConfig, tokenizer) -> NoiseProcess:
    """Build the configured process for a tokenizer's vocabulary and special ids."""
    cls = PROCESS_TYPES[cfg.kind]
    specials = (tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id)
    return cls(
        cfg,
        tokenizer.vocab_size,
        tokenizer.mask_id,
        tokenizer.pad_id,
        tokenizer.bos_id,
        unwritable=specials,
    )
