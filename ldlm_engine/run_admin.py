"""Whole-run operations: listing runs and deleting them, each safe against hostile folders.

Listing never raises: a run that cannot be read is one ``damaged`` row with a reason, so one
hostile run never hides the others. Deleting removes only what ldlm can prove it made: a folder
with the ``.ldlm-run`` marker (or, for runs of older versions, a folder directly under the runs
root), and in it only the names ldlm writes (:func:`ldlm_engine.layout.owned_entries`). If
anything else is there, nothing is deleted. The current directory, its parents, $HOME and the
ldlm folders are never deleted, whatever they hold. Imports no torch.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from . import layout as L
from .errors import ConfigError, RunError
from .fileio import describe_error
from .runs import RunDir, RunInfo, ldlm_home, runs_root

# --------------------------------------------------------------------------- listing


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
    it sits directly in the runs root (runs of older versions); a folder holding anything ldlm
    did not write; the current directory, its parents, $HOME and the ldlm folders. ``force``
    only overrides a heartbeat that merely *looks* live (status.json fresh, lock not held).
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
    _remove(path, files, dirs)
    return path


def _remove(path: Path, files: list[Path], dirs: list[Path]) -> None:
    try:
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)  # a symlink is unlinked, never followed
        for d in dirs:
            os.rmdir(d)
        os.rmdir(path)
    except OSError as e:
        raise RunError(f"cannot delete {e.filename or path}: {describe_error(e)}") from None


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
