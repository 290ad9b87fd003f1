"""Samplers: generators that yield one :class:`Frame` per model call.

(stub — being written)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Frame:
    """The sequence after one model call, as plain Python data (safe to send to a UI thread).

    ``tokens`` is the whole sequence (prompt included); ``masked[i]`` is True where position i
    is still undecided (a mask for the masked process); ``changed`` lists the positions whose
    token this call revealed or replaced; ``confidence[i]`` is the model's probability of the
    token now at i (1.0 for fixed positions); ``fixed[i]`` marks prompt/infill context.
    """

    step: int
    nfe: int
    tokens: list[int]
    masked: list[bool]
    changed: list[int]
    confidence: list[float]
    fixed: list[bool]
    done: bool = False
