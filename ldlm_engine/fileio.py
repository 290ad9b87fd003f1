"""Atomic, durable file replacement: the project's one place for it.

Readers (another terminal, the TUI, a resumed run) must only ever see the old or the new
content of a file, never a mix, even if the writer is killed mid-write. So every write goes to
a temporary file in the same folder, is fsync'd, and is renamed over the target; the folder is
fsync'd so the rename itself survives a power cut. Imports no torch, so light tools stay light.

Files written in place (the appended ``metrics.jsonl`` and ``train.log``; the trainer's
``lock`` through :func:`lock_own`) are opened through :func:`open_own`: a symlink or a FIFO
is refused, and a *hard link* (``st_nlink > 1``: a ``cp -al`` snapshot of a run, or a link
planted to a file elsewhere) is first copied to a new file renamed over the name ("copy on
first write"), so the run gets its own inode and the other name's file is never written.
Files rewritten whole already get a new inode from the rename.

Reads of files a user or another program may have replaced go through :func:`read_bounded`:
it never follows a symlink, never blocks on a FIFO or device, and never reads more than a
stated limit, so a hostile file costs a one-line refusal rather than a hang or the memory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
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


def own_inode(
    path: str | os.PathLike[str], fd: int, *, copy: bool = True, prepare: Any = None
) -> int:
    """An fd on a file that only ``path`` names: ``fd`` itself unless it is a hard link.

    ``fd`` was opened from ``path``. When its file has other names (``st_nlink > 1``), its
    bytes (``copy=False``: none) go to a new file in the same folder, ``prepare(new_fd)`` runs
    (e.g. taking a lock before the name is visible), the new file is renamed over ``path`` and
    ``fd`` is closed: the other names keep the old file, untouched. The new fd keeps ``fd``'s
    O_APPEND. Raises ``OSError``; then ``fd`` is still open and nothing was renamed.
    """
    st = os.fstat(fd)
    if st.st_nlink <= 1:
        return fd
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    new = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, stat.S_IMODE(st.st_mode))
    try:
        os.set_blocking(new, True)
        if copy:
            pos = 0
            while chunk := os.pread(fd, 1 << 20, pos):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(new, view) :]
                pos += len(chunk)
            os.fsync(new)
        if prepare is not None:
            prepare(new)
        os.replace(tmp, path)
    except BaseException:
        os.close(new)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
        fcntl.fcntl(new, fcntl.F_SETFL, fcntl.fcntl(new, fcntl.F_GETFL) | os.O_APPEND)
    os.close(fd)
    fsync_dir(path.parent)
    return new


def same_file(path: str | os.PathLike[str], fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not replaced since it was opened)."""
    try:
        a, b = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def open_own(
    path: str | os.PathLike[str], flags: int, mode: int = 0o644, *, copy: bool = True
) -> int:
    """Open a run file to write in place: :func:`open_nofollow`, then :func:`own_inode`.

    Refuses a symlink or a non-regular file (``OSError`` saying which); a hard link is
    replaced by the run's own copy, so writing never reaches a file outside the run.
    """
    if copy and flags & os.O_ACCMODE == os.O_WRONLY:  # the copy reads the shared file
        flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
    fd = open_nofollow(path, flags, mode)
    try:
        return own_inode(path, fd, copy=copy)
    except BaseException:
        os.close(fd)
        raise


def lock_own(path: str | os.PathLike[str]) -> int:
    """Open ``path`` (created if missing) holding an exclusive ``flock`` on a file of its own.

    ``BlockingIOError`` when another process holds the lock; ``OSError`` for a symlink or a
    non-regular file. A hard-linked lock (a ``cp -al`` snapshot shares the original's) is
    replaced by a new file, locked before its name appears, so the other name's file is
    never truncated. The lock is taken on the file ``path`` names when this returns: a name
    replaced between open and flock (another trainer doing the same) is opened again.
    """
    for _ in range(5):
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
        try:
            _flock_now(fd)
            if same_file(path, fd):
                return own_inode(path, fd, copy=False, prepare=_flock_now)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(errno.EAGAIN, "keeps being replaced", str(path))


def _flock_now(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise BlockingIOError(e.errno, "is locked by another process") from None
        raise


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
