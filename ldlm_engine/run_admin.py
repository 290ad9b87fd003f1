"""Whole-run operations: listing, deleting and stopping runs, each safe against hostile folders.

Listing never raises: a run that cannot be read is one ``damaged`` row with a reason, so one
hostile run never hides the others. Deleting removes only what ldlm can prove it made: a folder
with the ``.ldlm-run`` marker (or, for runs of older versions, a folder directly under the runs
root), and in it only the names ldlm writes (:func:`ldlm_engine.layout.owned_entries`). If
anything else is there, nothing is deleted. The current directory, its parents, $HOME and the
ldlm folders are never deleted, whatever they hold. Imports no torch.

Deletion is all or nothing as far as the file system lets ldlm know in advance: every entry is
checked (its folder writable, not immutable or append-only, no mount point, the sticky bit
respected) before the first unlink, and the order keeps an interrupted delete (SIGKILL, power
loss) visible and finishable: checkpoints first, then the run's files, ``config.json`` and the
``.ldlm-run`` marker last. A folder directly under the runs root that holds only names ldlm
writes but neither of those two (an interrupted delete of an older ldlm, or an empty folder)
is listed as damaged, "incomplete", and ``runs rm`` finishes it.

Stopping signals a process only when it is proven to be the run's trainer on this host
(:mod:`ldlm_engine.proc_identity`); a pid read from ``status.json`` alone is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import stat
import struct
import sys
from pathlib import Path

from . import layout as L
from . import proc_identity
from .errors import ConfigError, RunError
from .fileio import describe_error
from .runs import RunDir, RunInfo, ldlm_home, runs_root

# --------------------------------------------------------------------------- listing

INCOMPLETE = "incomplete (an interrupted delete): `ldlm runs rm` finishes it"


def _mtime(path: Path) -> list[float]:
    with contextlib.suppress(OSError, ValueError):
        return [float(os.lstat(path).st_mtime)]
    return []


def _damaged(run: RunDir, reason: str, mtimes: list[float]) -> RunInfo:
    last = max(mtimes) if mtimes else 0.0
    return RunInfo(run.name, run.path, "damaged", 0, None, "?", "?", last, last, reason)


def run_info(run: RunDir) -> RunInfo:
    """Summarise one run without reading its metrics (uses summary.json + status.json).

    Never raises: a run whose folder, config.json or status.json is damaged is reported as
    state ``damaged`` with a one-line ``reason``.
    """
    mtimes = []
    for name in (L.CONFIG_FILE, L.STATUS_FILE, L.METRICS_FILE, L.SUMMARY_FILE):
        with contextlib.suppress(OSError, ValueError):
            mtimes.append(float(os.lstat(run.path / name).st_mtime))
    try:
        if not L.is_real_dir(run.path):
            return _damaged(run, "not a folder (a symbolic link?)", mtimes)
        try:
            cfg = run.read_config()
        except (RunError, ConfigError) as e:
            return _damaged(run, str(e), mtimes)
        status, problem = run.status_and_problem()
        if problem:
            return _damaged(run, problem, mtimes)
        state = run.liveness()
        summary = run.read_summary()
    except (OSError, ValueError, TypeError, RecursionError) as e:  # a case not foreseen
        return _damaged(run, describe_error(e), mtimes)
    steps = [v for v in (summary.get("step"), status.get("step")) if L.is_int(v)]
    process = cfg.get("process") or {}
    created = summary["created"] or (min(mtimes) if mtimes else 0.0)
    return RunInfo(
        name=run.name,
        path=run.path,
        state=state,
        step=max(steps) if steps else 0,
        best_val_bits_per_char=summary.get("best_val_bits_per_char"),
        preset=str(cfg.get("preset", "?")),
        process=str(process.get("kind", "?")),
        created=float(created),
        last_update=max(mtimes) if mtimes else 0.0,
    )


def list_runs(home: Path | None = None) -> list[RunInfo]:
    """All runs under ``home/runs`` (default ``ldlm_home()``), newest first; never raises.

    A folder counts as a run when it holds a ``config.json`` or the ldlm marker (whatever
    their state); a symbolic link there is listed as damaged rather than followed.
    """
    root = runs_root(home)
    try:
        names = sorted(os.listdir(root))
    except (OSError, ValueError):
        return []
    infos = []
    for name in names:
        p = root / name
        if os.path.islink(p):
            if L.lexists(p / L.CONFIG_FILE):
                infos.append(_damaged(RunDir(p), "a symbolic link (not followed)", []))
        elif L.is_real_dir(p) and (L.lexists(p / L.CONFIG_FILE) or L.lexists(p / L.RUN_MARKER)):
            infos.append(run_info(RunDir(p)))
        elif L.leftover_run(p):
            infos.append(_damaged(RunDir(p), INCOMPLETE, _mtime(p)))
    infos.sort(key=lambda i: (i.created, i.name), reverse=True)
    return infos


# --------------------------------------------------------------------------- deletion


def _is_within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _refuse_protected(path: Path, home: Path | None) -> None:
    """Never delete /, $HOME, the ldlm folders, the current directory or one of its parents."""
    real = os.path.realpath(path)
    protected = ["/", os.path.expanduser("~"), str(ldlm_home() if home is None else home)]
    protected.append(str(runs_root(home)))
    if real in {os.path.realpath(p) for p in protected}:
        raise RunError(f"refusing to delete {path}: it is a protected folder ({real})")
    with contextlib.suppress(OSError):
        if _is_within(os.path.realpath(os.getcwd()), real):
            raise RunError(
                f"refusing to delete {path}: it is the current directory or one of its parents"
            )


def delete_run_dir(run: RunDir, *, force: bool = False, home: Path | None = None) -> Path:
    """Remove a run directory that ldlm made, and only the files ldlm wrote in it.

    Refuses (RunError, nothing deleted): a live run; a folder without the ldlm marker unless
    it sits directly in the runs root (runs of older versions, interrupted deletes); a folder
    holding anything ldlm did not write; an entry the file system would not let go (see the
    module docstring); the current directory, its parents, $HOME and the ldlm folders.
    ``force`` only overrides a heartbeat that merely *looks* live (lock not held).
    """
    path = run.path
    _refuse_protected(path, home)
    if not L.is_real_dir(path):
        raise RunError(f"refusing to delete {path}: not a folder")
    legacy = os.path.realpath(path.parent) == os.path.realpath(runs_root(home))
    if not L.marker_ok(path) and not legacy:
        raise RunError(
            f"refusing to delete {path}: ldlm did not create it (no {L.RUN_MARKER} marker)"
        )
    if run.is_locked():
        pid = run._lock_pid() or run.read_status().get("pid") or "?"
        raise RunError(
            f"run {run.name} is live (pid {pid}); stop it first (`ldlm runs stop {run.name}`)"
        )
    if not force and run.liveness() == "live":
        raise RunError(f"run {run.name} looks live (fresh heartbeat); stop it first or use --force")
    try:
        files, dirs, foreign = L.owned_entries(path)
    except OSError as e:
        raise RunError(f"cannot read {path}: {describe_error(e)}") from None
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise RunError(
            f"refusing to delete {path}: it holds {len(foreign)} file(s) ldlm did not write "
            f"({shown}); move them out first (nothing was deleted)"
        )
    order = removal_order(path, files, dirs)
    problems = removal_problems(order)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RunError(f"cannot delete {path}: {problems[0]}{more}; nothing was deleted")
    _remove(path, order)
    return path


def removal_order(path: Path, files: list[Path], dirs: list[Path]) -> list[tuple[Path, bool]]:
    """``(entry, is_folder)`` in the order a delete removes them, the run folder last.

    Checkpoint files and folders first, then the run's files with ``config.json`` and the
    ``.ldlm-run`` marker last: until the very end, what is left is a run ldlm lists and can
    delete (by its marker, or by its config.json for a run of an older version).
    """
    last = {L.CONFIG_FILE: 1, L.RUN_MARKER: 2}
    nested = [(f, False) for f in files if f.parent != path]
    top = sorted((f for f in files if f.parent == path), key=lambda f: last.get(f.name, 0))
    return [*nested, *((d, True) for d in dirs), *((f, False) for f in top), (path, True)]


# FS_IOC_GETFLAGS = _IOR('f', 1, long) and the inode flags that forbid removing an entry.
_FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
_FS_IMMUTABLE_FL, _FS_APPEND_FL = 0x10, 0x20


def _inode_flags(path: Path, st: os.stat_result) -> int:
    """The inode's immutable/append-only flags (0 when unknown: another OS or file system)."""
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return 0  # never open a FIFO or a device to ask
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8))
        return int.from_bytes(buf[:4], sys.byteorder)
    except OSError:
        return 0
    finally:
        os.close(fd)


def removal_problems(order: list[tuple[Path, bool]]) -> list[str]:
    """Why entries of ``order`` could not be removed (one phrase each); [] when all can.

    Checked before anything is deleted: each entry's folder must be writable by this user on
    a writable file system (``access``), neither it nor the entry immutable or append-only,
    a sticky folder must let this user remove the entry, and no folder may be a mount point.
    """
    problems: list[str] = []
    parents: dict[Path, tuple[os.stat_result, str]] = {}
    euid = os.geteuid()
    eff = os.access in os.supports_effective_ids
    for entry, is_dir in order:
        parent = entry.parent
        try:
            est = os.lstat(entry)
            if parent not in parents:
                pst = os.lstat(parent)
                why = ""
                if _inode_flags(parent, pst) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
                    why = f"{parent} is immutable or append-only (chattr)"
                elif not os.access(parent, os.W_OK | os.X_OK, effective_ids=eff):
                    why = f"{parent} is read-only for this user"
                parents[parent] = (pst, why)
        except OSError as e:
            problems.append(f"cannot check {entry}: {describe_error(e)}")
            continue
        pst, why = parents[parent]
        if why:
            if why not in problems:
                problems.append(why)
            continue
        if pst.st_mode & stat.S_ISVTX and euid != 0 and euid not in (est.st_uid, pst.st_uid):
            problems.append(f"{entry} belongs to another user in a sticky folder")
        elif _inode_flags(entry, est) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
            problems.append(f"{entry} is immutable or append-only (chattr)")
        elif is_dir and est.st_dev != pst.st_dev:
            problems.append(f"{entry} is a mount point")
    return problems


def _remove(path: Path, order: list[tuple[Path, bool]]) -> None:
    try:
        for entry, is_dir in order:
            if is_dir:
                os.rmdir(entry)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry)  # a symlink is unlinked, never followed
    except OSError as e:  # a race the checks could not foresee: what is left still lists
        where = e.filename or path
        raise RunError(
            f"cannot delete {where}: {describe_error(e)}; the run is partly deleted "
            "(`ldlm runs rm` finishes it once that is fixed)"
        ) from None


# --------------------------------------------------------------------------- stopping


def find_trainer(run: RunDir) -> tuple[int | None, str, bool]:
    """``(pid, why, reachable)``: the proven pid of the run's trainer on this host, or None
    and why not. ``reachable``: a trainer may still read the stop request (its lock is held,
    or it runs on another host), so waiting for it to stop makes sense."""
    st = run.read_status()
    host = st.get("host")
    if host is not None and host != socket.gethostname():
        return None, f"its trainer runs on host {host}", True
    if not run.is_locked():
        return None, "no process holds its lock", False
    problem = proc_identity.trainer_problem(st.get("pid"), st, run.lock_path)
    return (None, problem, True) if problem else (st["pid"], "", True)


def signal_trainer(run: RunDir) -> int | None:
    """SIGTERM the run's trainer if it is proven to be it; its pid, or None (nothing sent).

    Where the OS has pidfds, the process is pinned first and checked again, so a pid reused
    between the check and the signal cannot be hit.
    """
    pid = find_trainer(run)[0]
    if pid is None:
        return None
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(pid)
    try:
        if pidfd is None:
            os.kill(pid, signal.SIGTERM)
        elif find_trainer(run)[0] == pid:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        else:
            return None
    except (ProcessLookupError, PermissionError):
        return None
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return pid


def discard_new_run(run: RunDir) -> None:
    """Undo :meth:`RunDir.create` for a run that never trained (e.g. its data was unusable).

    Removes only the files ldlm wrote, and the folder if that empties it (a ``--run-dir``
    the user made keeps anything else). Never raises.
    """
    with contextlib.suppress(OSError, RunError):
        if run.checkpoint_steps() or not L.is_real_dir(run.path):
            return
        files, dirs, foreign = L.owned_entries(run.path)
        for f in files:
            with contextlib.suppress(OSError):
                os.unlink(f)
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if not foreign:
            os.rmdir(run.path)
