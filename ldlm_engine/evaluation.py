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


@dataclass
class BoundEstimate:
    """NLL (or its upper bound) of held-out text."""

    nats_per_token: float
    stderr_nats_per_token: float
    tokens: int
    chars_per_token: float
    exact: bool

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / LN2

    @property
    def bits_per_char(self) -> float:
        return self.bits_per_token / self.chars_per_token

    @property
    def stderr_bits_per_char(self) -> float:
        return self.stderr_nats_per_token / LN2 / self.chars_per_token

    def to_dict(self) -> dict:
        return {
            "val_loss": self.nats_per_token,
            "val_bits_per_token": self.bits_per_token,
            "val_bits_per_char": self.bits_per_char,
            "stderr_bits_per_char": self.stderr_bits_per_char,
            "tokens": self.tokens,
            "exact": self.exact,
            "bound": "exact" if self.exact else "upper",
        }


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
    """Average the process's per-sequence NLL terms over windows [N, L] and noise draws."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n, length = windows.shape
    draws = 1 if process.exact else samples
    u_all = stratified_uniform(n * draws, gen).view(draws, n)
    per_window = torch.zeros(n, dtype=torch.float64)
    sq = torch.zeros(n, dtype=torch.float64)
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
                    terms = process.nll_terms(model, x0, u, generator=gen).double().cpu()
                per_window[start : start + x0.shape[0]] += terms
                sq[start : start + x0.shape[0]] += terms**2
    finally:
        model.train(was_training)
    mean_w = per_window / draws  # per-window estimate (nats)
    total = float(mean_w.sum()) / (n * length)
    if process.exact:
        stderr = 0.0
    elif draws > 1:  # spread of the draws around each window's mean, pooled over windows
        var_draw = (sq / draws - mean_w**2).clamp_min(0).sum() / (n * draws - n)
        stderr = math.sqrt(float(var_draw) / (n * draws)) / length
    else:  # one draw per window: the spread across windows bounds the noise from above
        stderr = float(mean_w.std()) / math.sqrt(n) / length if n > 1 else 0.0
    return BoundEstimate(total, stderr, n * length, chars_per_token, process.exact)
