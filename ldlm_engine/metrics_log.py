"""Reading ``metrics.jsonl`` as it grows: the event log every watcher follows.

Torch-free and bounded: a watcher (the app, ``ldlm watch``, a script) polls on a timer and
never blocks, never follows a symlink, and never holds more than one read's worth of a
hostile file.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from . import layout as L
from .fileio import open_nofollow


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The valid events in a chunk of ``metrics.jsonl`` (torn or mistyped lines skipped)."""
    out = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(obj, dict) and L.valid_event(obj):
            out.append(obj)
    return out


class MetricsFollower:
    """Non-blocking tail of ``metrics.jsonl`` for UIs that poll on a timer.

    Keeps a byte offset; a trailing line without its newline is held back until it is complete.
    If the file shrinks (run deleted and recreated) it starts again from the beginning. Each
    poll reads at most ``max_read`` bytes, and a "line" longer than that is dropped, so a
    hostile file cannot take the watcher's memory; a symlink or FIFO is never opened.
    """

    def __init__(self, path: Path, *, from_start: bool = True, max_read: int = 16 * L.MIB) -> None:
        self.path = Path(path)
        self.offset = 0
        self.max_read = max_read
        self._partial = b""
        if not from_start:
            with contextlib.suppress(OSError):
                self.offset = os.lstat(self.path).st_size

    def poll(self) -> list[dict[str, Any]]:
        """Events appended since the last call (possibly none)."""
        try:
            fd = open_nofollow(self.path)
        except OSError:
            return []
        try:
            size = os.fstat(fd).st_size
            if size < self.offset:
                self.offset, self._partial = 0, b""
            if size == self.offset:
                return []
            data = os.pread(fd, min(size - self.offset, self.max_read), self.offset)
        except OSError:
            return []
        finally:
            os.close(fd)
        self.offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial = data if len(data) <= self.max_read else b""
            return []
        self._partial = data[cut + 1 :]
        if len(self._partial) > self.max_read:
            self._partial = b""
        return parse_lines(data[: cut + 1])
