"""Every frame of a generation, kept compactly so the pane can step and replay through it.

A sampler frame may cover only a window of the sequence (``Frame.offset``; a 4,000-token
``ar`` generation makes 4,000 one-token frames), and even a full-window frame changes only a
few positions per call. Keeping every frame as the engine sent it would cost O(frames x
length) memory; here each frame is stored as its *delta* (the positions whose token, mask,
fixed flag or visible confidence changed) in typed arrays, with a full snapshot (*keyframe*)
whenever the deltas since the last one add up to the sequence's length. Memory is then O(total
change), and rebuilding any frame applies at most about one sequence's worth of deltas to the
nearest earlier keyframe; stepping forward from the frame last rebuilt applies one delta.

Confidence is recorded only where a position is decided: a masked position's confidence is
the model's passing guess, which the renderer never shows.
"""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine's sampling module imports torch: not while the app opens
    from ldlm_engine import Frame

MIN_KEYFRAME_GAP = 4096
"""Delta elements between keyframes, at least (short sequences need few snapshots)."""


class _State:
    """The whole sequence at one frame, in typed arrays."""

    __slots__ = ("confidence", "fixed", "masked", "tokens")

    def __init__(self) -> None:
        self.tokens = array("q")
        self.masked = bytearray()
        self.confidence = array("f")
        self.fixed = bytearray()

    def copy(self) -> _State:
        s = _State()
        s.tokens = array("q", self.tokens)
        s.masked = bytearray(self.masked)
        s.confidence = array("f", self.confidence)
        s.fixed = bytearray(self.fixed)
        return s

    def grow(self, end: int) -> None:
        if end > len(self.tokens):
            k = end - len(self.tokens)
            self.tokens.extend([0] * k)
            self.masked.extend(b"\x01" * k)
            self.confidence.extend([0.0] * k)
            self.fixed.extend(b"\x00" * k)


@dataclass(frozen=True)
class _Record:
    """One frame: its header, its delta against the previous frame, and its counters."""

    step: int
    nfe: int
    done: bool
    prompt_unseen: int
    offset: int  # positions before it are final
    end: int  # offset + len(tokens): how far the sampler has planned/written
    length: int  # the sequence length after this frame
    changed: array
    elapsed_s: float
    decided: int  # generated positions no longer masked
    generated: int  # positions that are not prompt/context
    pos: array
    tokens: array
    masked: bytes
    confidence: array
    fixed: bytes


def _apply(state: _State, rec: _Record) -> None:
    state.grow(rec.length)
    for j, p in enumerate(rec.pos):
        state.tokens[p] = rec.tokens[j]
        state.masked[p] = rec.masked[j]
        state.confidence[p] = rec.confidence[j]
        state.fixed[p] = rec.fixed[j]


class FrameHistory:
    """Append frames as they arrive (``append``); ``self[i]`` rebuilds frame ``i`` in full.

    ``self[i]`` is a :class:`~ldlm_engine.Frame` at offset 0 covering the whole sequence as
    it stood after frame ``i`` (``changed`` in absolute positions), so the view never has to
    know which sampler produced it. ``end(i)`` is how far that frame's window reached.
    """

    def __init__(self) -> None:
        self._records: list[_Record] = []
        self._cur = _State()  # the state after the last appended frame
        self._key_index: list[int] = []
        self._keys: list[_State] = []
        self._since_key = 0
        self._view: tuple[int, _State] | None = None  # the last rebuilt frame, for stepping
        self._decided = 0
        self._generated = 0
        self.had_masks = False  # frame 0 had masks (not the uniform process)

    def __len__(self) -> int:
        return len(self._records)

    def __bool__(self) -> bool:
        return bool(self._records)

    def append(self, frame: Any, elapsed_s: float = 0.0) -> None:
        """Record one engine frame (windowed or not) and the model time spent so far."""
        cur = self._cur
        off = int(getattr(frame, "offset", 0))
        toks, masked, conf, fixed = frame.tokens, frame.masked, frame.confidence, frame.fixed
        end = off + len(toks)
        cur.grow(end)
        pos, d_tok, d_mask, d_conf, d_fixed = array("q"), array("q"), bytearray(), array("f"), []
        first = not self._records
        for j in range(len(toks)):
            p = off + j
            t, m, f = int(toks[j]), bool(masked[j]), bool(fixed[j])
            c = 0.0 if m else float(conf[j])
            old_m, old_f = bool(cur.masked[p]), bool(cur.fixed[p])
            if (
                first
                or cur.tokens[p] != t
                or old_m != m
                or old_f != f
                or (not m and abs(cur.confidence[p] - c) > 1e-6)
            ):
                if not first:
                    self._generated -= not old_f
                    self._decided -= not old_f and not old_m
                self._generated += not f
                self._decided += not f and not m
                pos.append(p)
                d_tok.append(t)
                d_mask.append(m)
                d_conf.append(c)
                d_fixed.append(f)
                cur.tokens[p], cur.masked[p], cur.confidence[p], cur.fixed[p] = t, m, c, f
        if first:
            self.had_masks = any(masked)
        rec = _Record(
            step=int(frame.step),
            nfe=int(frame.nfe),
            done=bool(frame.done),
            prompt_unseen=int(getattr(frame, "prompt_unseen", 0)),
            offset=off if frame.step > 0 else 0,
            end=end if frame.step > 0 else len(cur.tokens),
            length=len(cur.tokens),
            changed=array("q", frame.changed),
            elapsed_s=float(elapsed_s),
            decided=self._decided,
            generated=self._generated,
            pos=pos,
            tokens=d_tok,
            masked=bytes(d_mask),
            confidence=d_conf,
            fixed=bytes(d_fixed),
        )
        self._records.append(rec)
        self._since_key += len(pos)
        if first or self._since_key >= max(len(cur.tokens), MIN_KEYFRAME_GAP):
            self._key_index.append(len(self._records) - 1)
            self._keys.append(cur.copy())
            self._since_key = 0

    # ------------------------------------------------------------------ reading

    def _state(self, i: int) -> _State:
        """The state after frame ``i`` (shared with the cache: do not modify)."""
        if i == len(self._records) - 1:
            return self._cur
        if self._view is not None and self._view[0] <= i:
            start, state = self._view
            if i - start > 64:  # far ahead: a keyframe may be closer
                k = bisect.bisect_right(self._key_index, i) - 1
                if self._key_index[k] > start:
                    start, state = self._key_index[k], self._keys[k].copy()
        else:
            k = bisect.bisect_right(self._key_index, i) - 1
            start, state = self._key_index[k], self._keys[k].copy()
        for j in range(start + 1, i + 1):
            _apply(state, self._records[j])
        self._view = (i, state)
        return state

    def __getitem__(self, i: int) -> Frame:
        return self.slice(i, 0)

    def slice(self, i: int, start: int = 0) -> Frame:
        """Frame ``i`` from position ``start`` on (``offset=start``; ``changed`` absolute):
        what the view redraws without copying the text it has already drawn for good."""
        n = len(self._records)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        from ldlm_engine import Frame  # frames exist: torch is already loaded

        rec, s = self._records[i], self._state(i)
        return Frame(
            step=rec.step,
            nfe=rec.nfe,
            tokens=s.tokens[start:].tolist(),
            masked=list(map(bool, s.masked[start:])),
            changed=rec.changed.tolist(),
            confidence=[round(c, 4) for c in s.confidence[start:].tolist()],
            fixed=list(map(bool, s.fixed[start:])),
            done=rec.done,
            offset=start,
            prompt_unseen=rec.prompt_unseen,
        )

    def final(self, i: int) -> int:
        """Positions before this are final in frame ``i`` (and in every later frame)."""
        return self._records[i].offset

    def length(self, i: int) -> int:
        return self._records[i].length

    def end(self, i: int) -> int:
        """Where frame ``i``'s window ended: positions beyond are not reached yet."""
        return self._records[i].end

    def elapsed(self, i: int) -> float:
        return self._records[i].elapsed_s

    def tokens_per_s(self, i: int) -> float | None:
        """Generated tokens decided per second of model time, up to frame ``i``."""
        rec = self._records[i]
        if rec.elapsed_s <= 1e-6 or rec.nfe == 0:
            return None
        if not self.had_masks and not rec.done:  # uniform: all positions hold tokens at once
            return None
        return rec.decided / rec.elapsed_s

    def tokens_per_call(self, i: int) -> float | None:
        rec = self._records[i]
        if rec.nfe == 0 or (not self.had_masks and not rec.done):
            return None
        return rec.decided / rec.nfe

    @property
    def last(self) -> Frame:
        return self[len(self._records) - 1]

    def final_tokens(self) -> tuple[list[int], list[bool]]:
        """The latest whole sequence and its fixed flags (cheap: no rebuild)."""
        return self._cur.tokens.tolist(), [bool(f) for f in self._cur.fixed]

    def nbytes(self) -> int:
        """Approximate memory held by the recorded frames (for tests and curiosity)."""
        total = 0
        for r in self._records:
            total += 200 + r.pos.itemsize * len(r.pos) * 2 + len(r.masked) * 2
            total += r.confidence.itemsize * len(r.confidence) + r.changed.itemsize * len(r.changed)
        for k in self._keys:
            total += len(k.tokens) * 14
        return total
