"""An exponential moving average of a model's weights (``train.ema``, 0 = off).

The average of the last few hundred steps' weights usually evaluates and samples better than
the last step's, which carry that step's gradient noise. The trainer keeps an fp32 shadow of
every parameter, updated after each optimizer step, and keeps training the raw weights.

Checkpoints store the shadow as ``ema.<parameter name>`` tensors in ``state.safetensors``,
beside the raw model (``model.safetensors``) and the optimizer, so a resume continues exactly;
:func:`load_weights` is how everything that uses a checkpoint's model (generate, eval, the
app, ``--init-from``) gets the averaged weights when a checkpoint has them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from .errors import CheckpointError


def ema_decay(decay: float, step: int) -> float:
    """The decay of the update after ``step`` earlier ones.

    ``min(decay, (1 + step) / (10 + step))``: the warm-up of TensorFlow's
    ExponentialMovingAverage, so the average forgets the random initial weights within a few
    steps instead of the ~1/(1 - decay) steps a fixed 0.999 would take.
    """
    return min(decay, (1 + step) / (10 + step))


def ema_spec(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``ema.<name>`` -> (shape, float32) of the tensors a checkpoint's average must hold."""
    return {f"ema.{n}": (tuple(p.shape), torch.float32) for n, p in model.named_parameters()}


class EMA:
    """The fp32 shadow of ``model``'s parameters (tied weights once, as named_parameters)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the shadow toward the current weights (one fused call per step)."""
        weight = 1.0 - ema_decay(self.decay, step)
        src = [p.detach() if p.dtype == torch.float32 else p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, src, weight)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name -> shadow tensor (not copied: the checkpoint writer copies)."""
        return dict(zip(self.names, self.shadow, strict=True))

    @torch.no_grad()
    def load(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore a checkpoint's shadow; one saved without an average starts from the
        current weights (EMA switched on for a run that had none). Raises ValueError when
        it does not fit (the checkpoint is then damaged, see ``Trainer._apply``)."""
        if not tensors:
            for s, p in zip(self.shadow, self.params, strict=True):
                s.copy_(p)
            return
        if set(tensors) != set(self.names):
            raise ValueError("its averaged weights do not fit the model's parameters")
        for name, s in zip(self.names, self.shadow, strict=True):
            if tensors[name].shape != s.shape:
                raise ValueError(f"its averaged weight {name} does not fit the model")
            s.copy_(tensors[name])

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside (evaluate, sample) and its own, bit
        for bit, after: training continues on the raw weights."""
        with torch.no_grad():
            raw = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, raw)

    def state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """A CPU copy of ``model``'s state dict with the averaged weights (live snapshots);
        the model itself is not touched, so another thread may call this between steps."""
        by_id = {id(p): s for p, s in zip(self.params, self.shadow, strict=True)}
        out = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in by_id:
                out[name] = by_id[id(p)].to("cpu", p.dtype, copy=True)
        return out


def load_weights(model: torch.nn.Module, ck: Any) -> None:
    """Fill ``model`` with a checkpoint's weights for use: its average when it has one.

    ``ck`` is a :class:`~ldlm_engine.checkpoint.Checkpoint`; raises CheckpointError when the
    average does not fit ``model`` (RuntimeError, from torch, when the raw weights do not).
    """
    model.load_state_dict(ck.model_state)
    if not ck.ema_state:
        return
    params = dict(model.named_parameters())
    ema = ck.ema_state
    if set(ema) != set(params) or any(ema[n].shape != p.shape for n, p in params.items()):
        raise CheckpointError(f"checkpoint {ck.path}: its averaged weights do not fit the model")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(ema[name])


__all__ = ["EMA", "ema_decay", "ema_spec", "load_weights"]
