"""Training events: small, typed, JSON-serialisable records.

The trainer emits these to any number of sinks (the run directory's ``metrics.jsonl``, the
CLI's progress display, the TUI). They hold only numbers and short strings, never tensors, so a
sink can be another thread or another process reading a file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

STATES = ("started", "paused", "resumed", "stopping", "stopped", "finished", "failed")


@dataclass
class Event:
    step: int
    time: float = field(default_factory=time.time, kw_only=True)
    event = "event"

    def to_dict(self) -> dict[str, Any]:
        d = {"event": self.event}
        d.update(dataclasses.asdict(self))
        return d


@dataclass
class StepEvent(Event):
    """One logged optimizer step (emitted every ``train.log_every`` steps)."""

    loss: float
    lr: float
    tokens_per_s: float
    epoch: float
    elapsed_s: float
    total_steps: int = 0  # planned steps for this run (for progress bars and ETA)
    grad_norm: float = 0.0
    peak_mem_mb: float = 0.0
    phase: str = ""  # what the run is learning now: "ar", "block 8" (config.training_phase)
    event = "step"


@dataclass
class EvalEvent(Event):
    """Held-out likelihood: an upper bound for diffusion processes, exact for ``ar``."""

    val_loss: float  # nats per token
    val_bits_per_token: float
    val_bits_per_char: float
    stderr_bits_per_char: float = 0.0
    exact: bool = False
    # A shifted block model's ar head (exact): what its speculative sampler writes.
    ar_head_bits_per_char: float | None = None
    event = "eval"


@dataclass
class SampleEvent(Event):
    text: str
    nfe: int = 0
    event = "sample"


@dataclass
class CheckpointEvent(Event):
    path: str
    event = "checkpoint"


@dataclass
class StatusEvent(Event):
    state: str  # one of STATES
    message: str = ""
    event = "status"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event: cls for cls in (StepEvent, EvalEvent, SampleEvent, CheckpointEvent, StatusEvent)
}


def event_from_dict(d: dict[str, Any]) -> Event | None:
    """Rebuild an event read back from ``metrics.jsonl``; unknown kinds give ``None``."""
    cls = EVENT_TYPES.get(d.get("event", ""))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError:
        return None


class Sink(Protocol):
    """Anything that receives events; must be quick (it runs on the training thread)."""

    def __call__(self, event: Event) -> None: ...
