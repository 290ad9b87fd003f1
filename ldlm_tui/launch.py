"""Start training processes that outlive the terminal (``ldlm train --detach``, the TUI).

A detached trainer is an ordinary ``ldlm train --resume RUN_DIR`` process started in its own
session: closing the terminal (SIGHUP to the terminal's process group) or pressing Ctrl+C there
does not reach it, its stdin is ``/dev/null`` and its output goes to the run's ``train.log``
(plain log lines, since that is not a terminal). Everything else (progress, stopping, liveness)
goes through the run directory, exactly as for a foreground run::

    pid = spawn_training(run_dir)              # a run made with RunDir.create(...)
    ldlm watch NAME / tail -f RUN_DIR/train.log / ldlm runs stop NAME

This module imports neither torch nor the engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ldlm_engine.errors import RunError
from ldlm_engine.fileio import describe_error, open_own


def spawn_detached(argv: list[str], log_path: Path, before_start: Any = None) -> int:
    """Run ``ldlm *argv`` in a new session, detached from this terminal; return its pid.

    ``argv`` is the argument list after ``ldlm`` (e.g. ``["train", "--resume", "/runs/x"]``).
    The child is ``sys.executable -m ldlm_tui.cli`` (the same interpreter and environment),
    with stdin from ``/dev/null`` and stdout/stderr appended to ``log_path`` (created, with its
    parent folder, if needed; ``RunError`` when it is a symlink or not a file, before
    ``before_start()`` runs, so a refused log changes nothing). It does not wait for the
    child to finish; a daemon thread reaps it if it ends while this process still runs.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # every log line reaches train.log at once
    env.pop("COLUMNS", None)
    # Never through a symlink planted in a run folder (it could point anywhere), and never
    # into a file shared by hard link (a `cp -al` snapshot): that one is copied first.
    try:
        fd = open_own(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError as e:
        raise RunError(f"cannot write {log_path}: {describe_error(e)}") from None
    if before_start is not None:
        try:
            before_start()
        except BaseException:
            os.close(fd)
            raise
    with os.fdopen(fd, "ab", buffering=0) as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ldlm_tui.cli", *argv],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    # Reap the child when it ends if this process is still alive then (the TUI): no zombie.
    # In a short-lived parent (``ldlm train --detach``) the daemon thread simply dies with it.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


def spawn_training(
    run_dir: str | Path, before_start: Any = None, extra: list[str] | None = None
) -> int:
    """Train (or continue) the run at ``run_dir`` in the background; returns the child's pid.

    The run directory must already hold ``config.json`` (``RunDir.create`` writes it): a run
    that never started begins from scratch, one with a checkpoint resumes from it. Output goes
    to ``run_dir/train.log``. The run must not be live (its trainer lock is checked by the
    child, which then exits with a one-line error in the log).
    ``extra`` are more ``ldlm train`` flags for the child: a finished run extended with
    ``--max-steps``/``--epochs`` is refused without them, whatever its config.json says.
    """
    path = Path(run_dir).expanduser().resolve()
    argv = ["train", "--resume", str(path), *(extra or [])]
    return spawn_detached(argv, path / "train.log", before_start)


__all__ = ["spawn_detached", "spawn_training"]


def continue_in_background(run_dir: Path, name: str, log_path: Path) -> str:
    """Resume a just-stopped run in a detached process; the line to print in the shell."""
    try:
        pid = spawn_detached(["train", "--resume", str(run_dir)], log_path)
    except Exception as e:
        return (
            f"could not continue run {name} in the background ({e}); "
            f"resume it with: ldlm train --resume {name}"
        )
    return f"run {name} continues in the background (pid {pid}): ldlm watch {name}"
