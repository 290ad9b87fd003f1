"""Held-out likelihood: bits per token and per character, with a standard error.

For diffusion processes the figure is a Monte Carlo estimate of an upper bound on the NLL
(report it as "≤"); for ``ar`` it is exact. Draws of the noise level are stratified across all
(window, draw) pairs, which makes two seeds agree far more closely than independent draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .processes import NoiseProcess, stratified_uniform

LN2 = math.log(2.0)
MAX_LEVEL_BINS = 64  # bins of the noise level in the standard error's additive fit


@dataclass
class BoundEstimate:
    """NLL (or its upper bound) of held-out text, and what it was measured on.

    ``chars_per_token`` is the exact ratio for the evaluated tokens (see
    :func:`ldlm_engine.data.count_chars`), so bits/char = bits/token ÷ chars/token.
    """

    nats_per_token: float
    stderr_nats_per_token: float
    tokens: int
    chars_per_token: float
    exact: bool
    windows: int = 0
    draws: int = 0
    # A shifted block model's ar head on the same windows (exact, bits/char): the NLL of what
    # the speculative sampler writes. None for every other process.
    ar_head_bits_per_char: float | None = None

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / LN2

    @property
    def bits_per_char(self) -> float:
        return self.bits_per_token / self.chars_per_token

    @property
    def stderr_bits_per_token(self) -> float:
        return self.stderr_nats_per_token / LN2

    @property
    def stderr_bits_per_char(self) -> float:
        return self.stderr_bits_per_token / self.chars_per_token

    @property
    def chars(self) -> int:
        return round(self.tokens * self.chars_per_token)

    def to_dict(self) -> dict:
        return {
            "val_loss": self.nats_per_token,
            "val_bits_per_token": self.bits_per_token,
            "val_bits_per_char": self.bits_per_char,
            "stderr_bits_per_char": self.stderr_bits_per_char,
            "stderr_bits_per_token": self.stderr_bits_per_token,
            "tokens": self.tokens,
            "chars": self.chars,
            "chars_per_token": self.chars_per_token,
            "windows": self.windows,
            "draws": self.draws,
            "exact": self.exact,
            "bound": "exact" if self.exact else "upper",
            "ar_head_bits_per_char": self.ar_head_bits_per_char,
        }


def _residual_variance(y: torch.Tensor, u: torch.Tensor) -> float:
    """Variance of the per-draw terms ``y`` [n, D] that the noise seed moves (see below).

    Fits y[w, d] ≈ a[w] + b[bin(u[w, d])] by least squares and returns the residual mean
    square. B = √N bins (at most 64) follow b closely yet leave most of the N degrees of
    freedom. The window effects a have a diagonal normal matrix, so eliminating them leaves a
    small B × B system for the level effects b. With one draw per window (D = 1) a window's
    effect cannot be told from its noise; only b is fitted and the result is an upper bound.
    """
    n, draws = y.shape
    total = n * draws
    bins = max(1, min(MAX_LEVEL_BINS, math.isqrt(total)))
    level = (u * bins).long().clamp(0, bins - 1)
    counts = torch.bincount(level.flatten(), minlength=bins).double()
    level_sum = torch.bincount(level.flatten(), weights=y.flatten(), minlength=bins)
    if draws == 1:
        b = level_sum / counts.clamp_min(1)
        resid = y - b[level]
        dof = total - int((counts > 0).sum())
    else:
        window_sum = y.sum(dim=1)
        gram = torch.zeros(bins, bins, dtype=torch.float64)  # M^T M, M[w, k] = draws in bin k
        for lo in range(0, n, 4096):  # in slices: M itself is n x bins
            rows = level[lo : lo + 4096]
            m = torch.zeros(rows.shape[0], bins, dtype=torch.float64)
            m.scatter_add_(1, rows, torch.ones(rows.shape, dtype=torch.float64))
            gram += m.T @ m
        normal = torch.diag(counts) - gram / draws
        window_of = window_sum[:, None].expand(n, draws).flatten()
        rhs = level_sum - torch.bincount(level.flatten(), window_of, minlength=bins) / draws
        b = torch.linalg.pinv(normal) @ rhs
        a = (window_sum - b[level].sum(dim=1)) / draws
        resid = y - a[:, None] - b[level]
        dof = total - n - int(torch.linalg.matrix_rank(normal))
    if dof <= 0:  # too few draws to fit: the plain spread, an upper bound
        return float(y.var()) if total > 1 else 0.0
    return float((resid**2).sum()) / dof


@torch.no_grad()
def estimate_nll(
    model,
    process: NoiseProcess,
    windows: torch.Tensor,
    *,
    chars_per_token: float = 1.0,
    samples: int = 4,
    batch_size: int = 32,
    seed: int = 0,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> BoundEstimate:
    """Average the process's per-sequence NLL terms over windows [N, L] and noise draws.

    Standard error. Between two seeds only the noise changes (the levels u and the masks or
    replacements drawn with them); the windows are fixed. Write each of the N = n·D terms as
    a[w] + b(u) + e: a[w], the window's own difficulty, adds no variance, since every window
    gets exactly D draws whatever the seed; b(u), the cost of a noise level shared by all
    windows, is integrated almost exactly by the stratified grid of u; what varies is e (the
    window × level interaction and the masking noise), nearly independent across the N
    pairs, so Var(mean) ≈ σ_e² / N, with σ_e² from :func:`_residual_variance`. (The old
    formula divided σ²/D by N, once too often, reporting √D too small; ignoring b would
    overstate the uniform process's error by about a third.)
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n, length = windows.shape
    draws = 1 if process.exact else samples
    u_all = stratified_uniform(n * draws, gen).view(draws, n)
    terms = torch.zeros(n, draws, dtype=torch.float64)
    dev = torch.device(device)
    try:
        for d in range(draws):
            for start in range(0, n, batch_size):
                x0 = windows[start : start + batch_size].to(dev, torch.long)
                u = u_all[d, start : start + batch_size].to(dev)
                with torch.autocast(
                    dev.type,
                    dtype=autocast_dtype or torch.bfloat16,
                    enabled=autocast_dtype is not None,
                ):
                    t = process.nll_terms(model, x0, u, generator=gen)
                terms[start : start + x0.shape[0], d] = t.double().cpu()
    finally:
        model.train(was_training)
    total = float(terms.sum()) / (n * draws * length)
    if process.exact:
        stderr = 0.0
    else:
        var = _residual_variance(terms, u_all.T.double())
        stderr = math.sqrt(var / (n * draws)) / length
    est = BoundEstimate(total, stderr, n * length, chars_per_token, process.exact, n, draws)
    head = process.ar_head()
    if head is not None:  # one causal pass more: the exact NLL of the speculative sampler
        ar = estimate_nll(
            model,
            head,
            windows,
            chars_per_token=chars_per_token,
            batch_size=batch_size,
            seed=seed,
            device=device,
            autocast_dtype=autocast_dtype,
        )
        est.ar_head_bits_per_char = ar.bits_per_char
    return est
