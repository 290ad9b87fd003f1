"""The Generate pane's sampler settings: the fields, their defaults from a run's sample
settings, and parsing what was typed into the session's overrides (one clear error each).

Kept apart from the pane (layout, worker, frames) because it is the part with rules: the
ranges here are the engine's (``SampleConfig`` validation) spoken in the pane's labels.
"""

from __future__ import annotations

import math
from typing import Any

from ldlm_engine import ConfigError, SampleConfig

# (field, label, input type, tooltip): the sampler settings, in two rows that fit 80 columns.
FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("steps", "steps", "integer", "Model calls (0 = one per token; uniform: 100)."),
    (
        "length",
        "length",
        "integer",
        "Tokens to generate (blank = the run's default, within the model's window). ar and "
        "block write any length; mask continues window by window past the model's seq_len.",
    ),
    (
        "temperature",
        "temp",
        "number",
        "Sampling temperature: 0 = greedy (often one repeated token), 0.8-1 = livelier text.",
    ),
    ("block_length", "block", "integer", "Semi-autoregressive blocks (0 = one block)."),
    ("threshold", "threshold", "number", "Confidence to reveal a token (threshold sampler)."),
    ("top_p", "top-p", "number", "Nucleus: sample among the likeliest tokens holding this "
     "much probability (1 = off)."),
    ("top_k", "top-k", "integer", "Sample among the k likeliest tokens (0 = off)."),
    (
        "seed",
        "seed",
        "integer",
        "The next generation's seed: it moves on after each one unless 'fixed' is ticked. "
        "The same seed and settings give the same text (ldlm generate --seed N).",
    ),
)  # fmt: skip
ROW_1 = ("steps", "length", "temperature")
ROW_2 = ("block_length", "threshold", "top_p", "top_k")
FIXED_TIP = "Keep the seed: every generation uses the one in the seed field."
SAMPLER_TIP = "How tokens are chosen (the first is the process's natural sampler)."


def _parse_int(name: str, value: str, *, minimum: int | None = None, blank: bool = False) -> Any:
    value = value.strip()
    if not value:
        if blank:
            return None
        raise ConfigError(f"{name} must not be empty")
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if minimum is not None and n < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {n}")
    return n


def _parse_float(name: str, value: str, lo: float, hi: float, *, lo_open=False) -> float:
    value = value.strip()
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(x) or x > hi or x < lo or (lo_open and x == lo):
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{name} must be in {bracket}{lo:g}, {hi:g}], got {value}")
    return x


def setting_values(s: SampleConfig, samplers: tuple[str, ...]) -> dict[str, str]:
    """The fields as a run's sample settings fill them (the run's sampler if it fits)."""
    return {
        "sampler": s.sampler if s.sampler in samplers else samplers[0],
        "steps": str(s.steps),
        "length": "",
        "temperature": f"{s.temperature:g}",
        "block_length": str(s.block_length),
        "threshold": f"{s.threshold:g}",
        "top_p": f"{s.top_p:g}",
        "top_k": str(s.top_k),
        "seed": str(s.seed),
    }


def parse_settings(values: dict[str, str], sampler: str) -> dict[str, Any]:
    """The session overrides from the typed fields (length None = the run's default)."""
    overrides = {
        "sampler": sampler,
        "length": _parse_int("length", values["length"], minimum=1, blank=True),
        "steps": _parse_int("steps", values["steps"], minimum=0),
        "temperature": _parse_float("temp", values["temperature"], 0.0, 1e6),
        "block_length": _parse_int("block", values["block_length"], minimum=0),
        "threshold": _parse_float("threshold", values["threshold"], 0.0, 1.0, lo_open=True),
        "top_p": _parse_float("top-p", values["top_p"], 0.0, 1.0, lo_open=True),
        "top_k": _parse_int("top-k", values["top_k"], minimum=0),
        "seed": _parse_int("seed", values["seed"], minimum=0),
    }
    if overrides["seed"] >= 2**63:
        raise ConfigError(f"seed must be below 2**63, got {overrides['seed']}")
    return overrides
