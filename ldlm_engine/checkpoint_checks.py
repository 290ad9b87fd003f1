"""What a checkpoint must hold before any of it is used: typed metadata, fitting tensors.

A checkpoint may have been edited with its checksums recomputed, so passing sha256 proves
nothing about its content. Every ``meta.json`` field is typed and ranged like ``config.json``'s,
and the tensors are checked against the model the run's config builds (names, shapes, dtypes,
finite values) and against what the trainer needs (its RNG states). A mismatch is a damaged
checkpoint (:class:`CheckpointError`, one line), never a traceback or a NaN in a sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .layout import INT_MAX, is_int, is_num, is_str

TensorSpec = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


@dataclass
class Fit:
    """What a checkpoint must fit: the model's tensors (:func:`model_spec`), the state
    tensors the caller needs, the config whose fingerprint it must carry, and ``apply``,
    which puts a checkpoint to use (a trainer's optimizer, RNG, data position) and raises if
    it does not fit; a failure there is damage like any other, so loading may fall back.
    ``ema`` (:func:`ldlm_engine.ema.ema_spec`) is what averaged weights, where saved, must be."""

    spec: TensorSpec | None = None
    extra_keys: tuple[str, ...] = ()
    config: Mapping[str, Any] | None = field(default=None, repr=False)
    apply: Callable[[Any], None] | None = field(default=None, repr=False)
    ema: TensorSpec | None = None


# What putting a damaged state to use raises (torch's load_state_dict, set_rng_state ...).
APPLY_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError)


def _nonneg(v: Any) -> bool:
    return is_num(v) and v >= 0


def _data_position(v: Any) -> bool:
    return v is None or (
        isinstance(v, dict)
        and all(isinstance(k, str) and is_int(x, 0, INT_MAX) for k, x in v.items())
    )


# Field -> check for what ``save_checkpoint`` and the trainer write (absent fields are fine:
# older checkpoints and other callers write fewer; the trainer needs data_position).
_META_FIELDS = {
    "step": is_int,
    "epoch": _nonneg,
    "data_position": _data_position,
    "elapsed_s": _nonneg,
    "tokens_seen": is_int,
    "best_val_bits_per_char": lambda v: v is None or _nonneg(v),
    "total_steps": is_int,
    "saved_at": _nonneg,
    "ldlm_version": is_str,
    "config_fingerprint": lambda v: is_str(v) and len(v) <= 128,
    "relevant_config": lambda v: isinstance(v, dict),
    "extra_keys": lambda v: isinstance(v, list) and all(is_str(k) for k in v),
    "ema_keys": lambda v: isinstance(v, list) and all(is_str(k) for k in v),
    "optimizer": lambda v: v is None or isinstance(v, dict),
}


def check_meta(meta: Mapping[str, Any], where: Path) -> None:
    """Refuse a ``meta.json`` whose known fields have the wrong type or range."""
    bad = [k for k, ok in _META_FIELDS.items() if k in meta and not ok(meta[k])]
    if bad:
        raise CheckpointError(f"checkpoint {where} is damaged: bad {', '.join(bad)} in meta.json")


def model_spec(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor a model's state dict holds (nothing copied)."""
    return {k: (tuple(t.shape), t.dtype) for k, t in model.state_dict().items()}


def _not_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def _check_spec(where: Path, tensors: Mapping[str, torch.Tensor], spec: TensorSpec) -> None:
    """Refuse tensors whose names, shapes or dtypes are not exactly ``spec``'s."""
    missing = sorted(set(spec) - set(tensors))
    unexpected = sorted(set(tensors) - set(spec))
    if missing or unexpected:
        parts = [f"missing {', '.join(missing[:3])}" if missing else ""]
        parts.append(f"unexpected {', '.join(unexpected[:3])}" if unexpected else "")
        raise CheckpointError(
            f"checkpoint {where} does not fit the run's model: " + "; ".join(p for p in parts if p)
        )
    for name, (shape, dtype) in spec.items():
        t = tensors[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise CheckpointError(
                f"checkpoint {where} does not fit the run's model: {name} is "
                f"{list(t.shape)} {t.dtype}, the model needs {list(shape)} {dtype}"
            )


def check_tensors(
    where: Path,
    model_state: Mapping[str, torch.Tensor],
    state_tensors: Mapping[str, torch.Tensor],
    fit: Fit,
) -> None:
    """Refuse tensors that do not fit the model (``fit.spec``) or its average (``fit.ema``),
    miss a needed extra, or are not finite (a NaN weight turns every sample into an error)."""
    if fit.spec is not None:
        _check_spec(where, model_state, fit.spec)
    ema = {k: t for k, t in state_tensors.items() if k.startswith("ema.")}
    if ema and fit.ema is not None:  # averaged weights (train.ema) are checked like the model's
        _check_spec(where, ema, fit.ema)
    for key in fit.extra_keys:
        t = state_tensors.get(f"extra.{key}")
        if t is None or t.dtype != torch.uint8 or t.dim() != 1:
            raise CheckpointError(f"checkpoint {where} is damaged: state {key!r} is missing")
    bad = _not_finite(model_state) or _not_finite(state_tensors)
    if bad is not None:
        raise CheckpointError(f"checkpoint {where} is damaged: {bad} holds NaN or infinity")


__all__ = ["APPLY_ERRORS", "Fit", "check_meta", "check_tensors", "model_spec"]
