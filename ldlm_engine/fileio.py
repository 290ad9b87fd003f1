"""Atomic, durable file replacement: the project's one place for it.

Readers (another terminal, the TUI, a resumed run) must only ever see the old or the new
content of a file, never a mix, even if the writer is killed mid-write. So every write goes to
a temporary file in the same folder, is fsync'd, and is renamed over the target; the folder is
fsync'd so the rename itself survives a power cut. Imports no torch, so light tools stay light.

Reads of files a user or another program may have replaced go through :func:`read_bounded`:
it never follows a symlink, never blocks on a FIFO or device, and never reads more than a
stated limit, so a hostile file costs a one-line refusal rather than a hang or the memory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def open_nofollow(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symlink (and a FIFO or device) as the last component.

    Raises ``OSError`` with a plain reason: ``is a symbolic link`` or ``is not a regular
    file``. O_NONBLOCK only matters for the open itself (a FIFO without a writer).
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "is not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """The whole content of a regular file of at most ``limit`` bytes.

    Never follows a symlink, never blocks on a FIFO or device, never reads past ``limit``
    (a file that grows while being read is refused too). Raises ``OSError`` (``strerror``
    says why: missing, is a symbolic link, is not a regular file, larger than N bytes).
    """
    fd = open_nofollow(path)
    try:
        if os.fstat(fd).st_size > limit:
            raise OSError(errno.EFBIG, f"is larger than {limit:,} bytes", str(path))
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise OSError(errno.EFBIG, f"is larger than {limit:,} bytes", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_tail(path: str | os.PathLike[str], limit: int) -> bytes:
    """The last ``limit`` bytes (or all) of a regular file, with read_bounded's safety."""
    fd = open_nofollow(path)
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - limit)
        chunks, pos = [], start
        while pos < start + limit:
            chunk = os.pread(fd, min(1 << 20, start + limit - pos), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        data = b"".join(chunks)
        if start:  # the first line is cut: drop it
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else b""
        return data
    finally:
        os.close(fd)


def read_json_bounded(path: str | os.PathLike[str], limit: int) -> Any:
    """JSON from :func:`read_bounded` (``OSError`` or ``ValueError`` with a one-line reason)."""
    raw = read_bounded(path, limit)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 ({e.reason})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def describe_error(e: BaseException) -> str:
    """A one-line reason for an OSError/ValueError from the readers above."""
    if isinstance(e, OSError):
        return e.strerror or type(e).__name__
    return (str(e).splitlines() or [type(e).__name__])[0]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames/creations inside ``path`` durable (no-op where a folder can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` so that readers see the old or the new content, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    # O_EXCL | O_NOFOLLOW: a planted file or symlink at the temporary name is never written
    # (and, not being ours, never removed).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Pretty, sorted JSON written atomically (configs, status, pointers)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
