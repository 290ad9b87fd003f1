"""Who a process is, from ``/proc``: so ``runs stop`` signals its trainer and nothing else.

A pid alone proves nothing: ``status.json`` can be damaged or planted, and a pid is reused
once its process exits. A trainer records its identity in ``status.json`` (:func:`own`: the
process's start time, field 22 of ``/proc/PID/stat``, in clock ticks since boot, and a digest
of its ``/proc/PID/cmdline``); :func:`trainer_problem` accepts a pid only when that process
still has the same identity *and* has the run's lock file open. Where ``/proc`` cannot tell
(another OS, another user's process), nothing is proven and nothing is signalled.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat`` (when the process started), or None if unreadable."""
    try:
        data = (PROC / str(pid) / "stat").read_bytes()
        # The name (field 2) may hold spaces and parentheses: count fields after the last ')'.
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def cmdline_digest(pid: int) -> str | None:
    """SHA-256 of ``/proc/PID/cmdline`` (bounded read), or None if unreadable or empty."""
    try:
        with open(PROC / str(pid) / "cmdline", "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest() if data else None


@functools.lru_cache(maxsize=1)
def _own(pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    start, digest = start_ticks(pid), cmdline_digest(pid)
    if start is not None:
        out["pid_start"] = start
    if digest is not None:
        out["cmdline_sha256"] = digest
    return out


def own() -> dict[str, Any]:
    """This process's identity as the trainer records it in ``status.json`` ({} off Linux)."""
    return dict(_own(os.getpid()))  # keyed by pid: a forked child is not its parent


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has the file ``path`` open (links in ``/proc/PID/fd``)."""
    try:
        want = os.stat(path)
        fds = os.listdir(PROC / str(pid) / "fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.stat(PROC / str(pid) / "fd" / fd)
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                return True
    return False


def trainer_problem(pid: Any, status: dict[str, Any], lock_path: Path) -> str:
    """'' when ``pid`` is provably the trainer that wrote ``status`` and holds ``lock_path``;
    otherwise why not, in a few words (the caller must then not signal it)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return f"status.json names no usable pid ({pid!r})"
    if pid == os.getpid():
        return f"pid {pid} is this process"
    start, digest = status.get("pid_start"), status.get("cmdline_sha256")
    if start is None and digest is None:
        return f"pid {pid} cannot be checked: the trainer recorded no identity (an older ldlm?)"
    if not has_open(pid, lock_path):
        return f"pid {pid} does not hold the run's lock"
    if start is not None and start_ticks(pid) != start:
        return f"pid {pid} is another process (its start time differs from the trainer's)"
    if start is None and cmdline_digest(pid) != digest:
        return f"pid {pid} is another process (its command line differs from the trainer's)"
    return ""


__all__ = ["cmdline_digest", "has_open", "own", "start_ticks", "trainer_problem"]
