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
        """Restore a checkpoint's shadow, checked against :func:`ema_spec` when it loaded;
        one saved without an average starts from the current weights (EMA switched on for a
        run that had none)."""
        if not tensors:
            torch._foreach_copy_(self.shadow, [p.detach().float() for p in self.params])
            return
        torch._foreach_copy_(self.shadow, [tensors[name] for name in self.names])

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

    ``ck`` is a :class:`~ldlm_engine.checkpoint.Checkpoint` loaded with ``Fit(ema=
    ema_spec(model))``, which checked the average's names, shapes and dtypes (RuntimeError,
    from torch, when the raw weights do not fit).
    """
    model.load_state_dict(ck.model_state)
    if ck.ema_state:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(ck.ema_state[name])


__all__ = ["EMA", "ema_decay", "ema_spec", "load_weights"]
