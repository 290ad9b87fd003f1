"""Run directories: the on-disk interface between a trainer and everything watching it.

A run lives in ``ldlm_home()/runs/<name>/`` (``$LDLM_HOME`` or platformdirs' user data dir)
or in a ``--run-dir`` folder. Its files (config.json, metrics.jsonl, status.json, summary.json,
control.json, lock, tokenizer.json, checkpoints/ ...) are named in :mod:`ldlm_engine.layout`.
This module imports no torch so that watchers (the TUI, ``ldlm runs list``) start fast.

A run folder is a boundary: every file in it is opened without following symlinks, every read
is bounded, every field read back is type-checked; ``summary.json`` (a cache that keeps
``list_runs`` O(1) per run) is rebuilt from ``metrics.jsonl`` when damaged. Listing and
deleting are in :mod:`ldlm_engine.run_admin`.

Liveness: the trainer holds an exclusive ``flock`` on ``lock``; the kernel drops it when the
process dies, even on SIGKILL, so ``is_locked()`` (a non-blocking shared-lock probe) is the
authority. Without it (e.g. a file system without flock), ``status.json`` counts as live when
its state is started/resumed/paused, its heartbeat (rewritten at most every 2 s) is < 30 s old
and, on the same host, its pid exists. A run whose status says running but has neither is
"dead" (crashed or killed).

Control: another process calls ``run.request("pause"|"resume"|"stop")``, which atomically
replaces ``control.json`` with ``{"action", "time", "id", "pid"}``. The trainer calls
``poll_control()`` once per step (one small read); it returns each request's action once
(requests carry a unique id). A request already present when the trainer took the lock
is ignored, so a stale "stop" cannot kill the next resume. ``signal_stop()`` (SIGTERM, same
host only, to a pid proven to be the trainer: it holds the lock and has the identity recorded
in status.json) is the fallback for a trainer that does not poll.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from . import layout as L
from . import proc_identity, run_names
from .errors import ConfigError, RunError
from .fileio import (
    atomic_write_json,
    describe_error,
    lock_own,
    open_nofollow,
    open_own,
    read_bounded,
    read_json_bounded,
    read_tail,
)
from .metrics_log import MetricsFollower, parse_lines
from .run_names import NAME_RE

CONTROL_ACTIONS = ("pause", "resume", "stop")
RUNNING_STATES = ("started", "resumed", "paused")
HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_STALE_S = 30.0
_FSYNC_EVENTS = ("status", "checkpoint")


def ldlm_home() -> Path:
    """``$LDLM_HOME`` if set, else the platform's per-user data directory for ldlm."""
    env = os.environ.get("LDLM_HOME")
    if env:
        with contextlib.suppress(RuntimeError, KeyError):
            return Path(env).expanduser()
        return Path(env)
    return Path(platformdirs.user_data_dir("ldlm"))


def runs_root(home: Path | None = None) -> Path:
    return (Path(home) if home is not None else ldlm_home()) / "runs"


def _read_json(path: Path, limit: int = L.LIMITS[L.STATUS_FILE]) -> dict[str, Any]:
    """A JSON object file, or {} when missing, damaged or not an object."""
    return L.read_obj(path, limit)[0] or {}


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid exists on this host (zombies count as alive)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


@dataclass
class RunInfo:
    """One row of ``ldlm runs list``."""

    name: str
    path: Path
    state: str  # liveness(): live/finished/stopped/failed/dead/created, or damaged
    step: int
    best_val_bits_per_char: float | None
    preset: str
    process: str
    created: float
    last_update: float
    reason: str = ""  # why the run is damaged (one line), else ""


class RunDir:
    """A run directory; also the trainer-side handle (lock, metrics, status, control)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self._lock_fd: int | None = None
        self._metrics_fd: int | None = None
        self._status: dict[str, Any] = {}
        self._last_heartbeat = 0.0
        self._control_seen: Any = None
        self._summary: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ create / open

    @classmethod
    def create(
        cls,
        config_dict: Mapping[str, Any],
        *,
        name: str | None = None,
        run_dir: Path | None = None,
        home: Path | None = None,
    ) -> RunDir:
        """Make a new run directory with ``config.json``; never reuses an existing run."""
        try:
            return cls._create(config_dict, name=name, run_dir=run_dir, home=home)
        except OSError as e:  # read-only or full disk, a file where a folder should be ...
            where = e.filename or (run_dir if run_dir is not None else runs_root(home))
            raise RunError(f"cannot create a run in {where}: {e.strerror or e}") from None

    @classmethod
    def _create(
        cls,
        config_dict: Mapping[str, Any],
        *,
        name: str | None = None,
        run_dir: Path | None = None,
        home: Path | None = None,
    ) -> RunDir:
        if hasattr(config_dict, "to_dict"):
            config_dict = config_dict.to_dict()
        if run_dir is not None:
            L.check_run_arg(str(run_dir))
            path = L.expand_user(str(run_dir))
            if not NAME_RE.fullmatch(path.name):
                raise RunError(f"invalid run name {path.name!r}: use letters, digits, . _ -")
            if os.path.islink(path):
                raise RunError(f"run directory {path} is a symbolic link; give a real folder")
            if path.exists():
                if not path.is_dir():
                    raise RunError(f"run directory {path} exists and is not a folder")
                if L.lexists(path / L.RUN_MARKER) or L.lexists(path / L.CONFIG_FILE):
                    raise RunError(f"run directory {path} already holds a run")
                with os.scandir(path) as entries:
                    foreign = any(entries)
                if foreign:
                    raise RunError(
                        f"run directory {path} is not empty and is not an ldlm run; "
                        "give a new or empty folder"
                    )
            path.mkdir(parents=True, exist_ok=True)
        else:
            root = runs_root(home)
            root.mkdir(parents=True, exist_ok=True)
            if name is not None:
                if not NAME_RE.fullmatch(name):
                    raise RunError(
                        f"invalid run name {name!r}: 1-64 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit"
                    )
                path = root / name
                try:
                    path.mkdir()
                except FileExistsError:
                    # An empty folder (the last step of an interrupted delete) is no run: it
                    # is replaced, so that only one of two racing creators can win the name.
                    try:
                        path.rmdir()
                        path.mkdir()
                    except OSError:
                        hint = " (an interrupted delete: `ldlm runs rm` finishes it)"
                        hint = hint if L.leftover_run(path) else ""
                        raise RunError(
                            f"a run named {name!r} already exists ({path}){hint}"
                        ) from None
            else:
                preset = str(config_dict.get("preset") or "run")
                process = config_dict.get("process")
                kind = process.get("kind") if isinstance(process, Mapping) else ""
                stem = "-".join(p for p in (preset, str(kind or "")) if p)
                stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:40].lstrip("._-") or "run"
                base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
                path = root / base
                n = 1
                while True:
                    try:
                        path.mkdir()
                        break
                    except FileExistsError:
                        n += 1
                        path = root / f"{base}-{n}"
        run = cls(path)
        # The marker first: whatever happens next, the folder is provably ldlm's.
        atomic_write_json(
            path / L.RUN_MARKER, {"ldlm_run": 1, "id": uuid.uuid4().hex, "created": time.time()}
        )
        atomic_write_json(path / L.CONFIG_FILE, dict(config_dict))
        atomic_write_json(
            path / L.SUMMARY_FILE,
            {"created": time.time(), "best_val_bits_per_char": None, "step": 0},
        )
        (path / L.CHECKPOINTS_DIR).mkdir(exist_ok=True)
        return run

    @classmethod
    def open(cls, path_or_name: str | Path, *, home: Path | None = None) -> RunDir:
        """An existing run, by name (only under the runs root) or by path.

        A bare name never falls back to the current directory: ``myproj`` is the run
        ``$LDLM_HOME/runs/myproj``; a folder here must be written as a path (``./myproj``).
        """
        s = str(path_or_name)
        L.check_run_arg(s)
        looks_like_path = isinstance(path_or_name, Path) or os.sep in s or s.startswith((".", "~"))
        if looks_like_path:
            p = Path(os.path.abspath(L.expand_user(s)))  # the printed path works from anywhere
        elif NAME_RE.fullmatch(s):
            p = runs_root(home) / s
        else:
            raise RunError(
                f"no run named {s!r}: a run name is 1-64 letters, digits, '.', '_' or '-' "
                "(write a folder as a path, e.g. ./NAME)"
            )
        try:
            st = os.lstat(p)
        except OSError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise RunError(f"run {s} is a symbolic link; ldlm does not follow links to runs")
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        if is_dir and (L.lexists(p / L.CONFIG_FILE) or L.lexists(p / L.RUN_MARKER)):
            return cls(p)
        in_root = os.path.realpath(p.parent) == os.path.realpath(runs_root(home))
        if in_root and L.leftover_run(p):  # an interrupted delete: `runs rm` finishes it
            return cls(p)
        if looks_like_path:
            raise RunError(f"no run at {s} (see `ldlm runs list`)")
        return cls(run_names.by_prefix(runs_root(home), s))

    # ------------------------------------------------------------------ paths

    def path_of(self, filename: str) -> Path:
        return self.path / filename

    @property
    def config_path(self) -> Path:
        return self.path / L.CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / L.METRICS_FILE

    @property
    def status_path(self) -> Path:
        return self.path / L.STATUS_FILE

    @property
    def control_path(self) -> Path:
        return self.path / L.CONTROL_FILE

    @property
    def lock_path(self) -> Path:
        return self.path / L.LOCK_FILE

    @property
    def log_path(self) -> Path:
        return self.path / L.LOG_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / L.CHECKPOINTS_DIR

    def read_config(self) -> dict[str, Any]:
        """The stored configuration dict, its shape and types checked (one-line error if not).

        Values are range-checked later, by ``RunConfig.from_dict``; here every section must be
        an object of known settings with the right types, so readers can use any field.
        """
        try:
            d = read_json_bounded(self.config_path, L.LIMITS[L.CONFIG_FILE])
        except FileNotFoundError:
            raise RunError(f"run {self.name} has no config.json ({self.path})") from None
        except (OSError, ValueError) as e:
            raise RunError(f"cannot read {self.config_path}: {describe_error(e)}") from None
        if not isinstance(d, dict):
            raise RunError(f"{self.config_path} is not a JSON object")
        from .config import LEGACY_ACTIVATION, RunConfig, apply_overrides  # torch-free

        try:
            apply_overrides(RunConfig(), d)
        except ConfigError as e:
            raise ConfigError(f"{self.config_path}: {e}") from None
        if isinstance(d.get("model"), dict):  # saved before the setting existed
            d["model"].setdefault("activation", LEGACY_ACTIVATION)
        return d

    def latest_checkpoint_step(self) -> int | None:
        """Step named by ``checkpoints/last.json``, or None when there is no checkpoint yet."""
        d = _read_json(self.checkpoints_dir / L.LAST_FILE, L.LIMITS[L.LAST_FILE])
        step = d.get("step")
        return step if L.is_int(step) else None

    def checkpoint_steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        return L.list_checkpoint_steps(self.checkpoints_dir)

    # ------------------------------------------------------------------ lock

    def acquire_lock(self) -> None:
        """Become this run's only trainer (held until :meth:`release_lock` or process exit)."""
        if self._lock_fd is not None:
            return
        try:
            fd = lock_own(self.lock_path)
        except BlockingIOError:
            pid = self._lock_pid()
            raise RunError(
                f"run {self.name} is being trained by another process (pid {pid or '?'})"
            ) from None
        except OSError as e:  # a symlink planted as the lock must not be truncated
            raise RunError(
                f"cannot lock run {self.name}: {self.lock_path} {describe_error(e)}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        # A request made before this trainer existed is not addressed to it.
        self._control_seen = self._control_key(self._read_control())

    def release_lock(self) -> None:
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _lock_pid(self) -> int | None:
        try:
            text = read_bounded(self.lock_path, L.LIMITS[L.LOCK_FILE]).decode("ascii").strip()
            pid = int(text) if text else None
        except (OSError, ValueError):
            return None
        return pid if L.is_int(pid, 1, 2**31) else None

    def is_locked(self) -> bool:
        """Whether a live process (this one included) holds the trainer lock."""
        if self._lock_fd is not None:
            return True
        try:
            fd = open_nofollow(self.lock_path)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def close(self) -> None:
        """Release the lock and the metrics file descriptor."""
        if self._metrics_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._metrics_fd)
            self._metrics_fd = None
        self.release_lock()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ metrics

    def _open_metrics(self) -> int:
        if self._metrics_fd is None:
            # Never through a link: a hard-linked log (a `cp -al` snapshot) is copied first.
            fd = open_own(self.metrics_path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            # A writer killed mid-line left a fragment: end it so our first line stays intact.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")
            self._metrics_fd = fd
        return self._metrics_fd

    def append_event(self, event: Mapping[str, Any] | Any) -> None:
        """Append one event (a dict or an ``events.Event``) as one line with a single write."""
        d = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        data = (json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            fd = self._open_metrics()
            n = os.write(fd, data)
            if n < len(data):  # only on a full disk or a signal; finish the line
                view = memoryview(data)[n:]
                while view:
                    view = view[os.write(fd, view) :]
        except OSError as e:  # disk full, read-only file system, a planted symlink ...
            raise RunError(f"cannot write {self.metrics_path}: {describe_error(e)}") from None
        kind = d.get("event")
        if kind in _FSYNC_EVENTS:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        if kind in ("eval", "status", "checkpoint"):
            self._update_summary(d)

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete, well-typed events (a torn, corrupt or mistyped line is skipped).

        Only the newest ``METRICS_READ_LIMIT`` bytes are read (a hostile file stays cheap).
        """
        try:
            data = read_tail(self.metrics_path, L.METRICS_READ_LIMIT)
        except OSError:
            return []
        cut = data.rfind(b"\n")
        return parse_lines(data[: cut + 1]) if cut >= 0 else []

    def metrics_follower(self, *, from_start: bool = True) -> MetricsFollower:
        return MetricsFollower(self.metrics_path, from_start=from_start)

    def follow_metrics(
        self,
        poll_s: float = 0.1,
        stop: threading.Event | None = None,
        from_start: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Yield existing then newly appended events (``tail -f``) until ``stop`` is set."""
        follower = self.metrics_follower(from_start=from_start)
        while True:
            yield from follower.poll()
            if stop is not None:
                if stop.wait(poll_s):
                    yield from follower.poll()
                    return
            else:
                time.sleep(poll_s)

    # ------------------------------------------------------------------ summary

    def _update_summary(self, d: Mapping[str, Any]) -> None:
        # Written only on eval/status/checkpoint events (rare), so list_runs never scans metrics.
        if self._summary is None:
            self._summary = self.read_summary()
        s = self._summary
        step = d.get("step")
        if L.is_int(step):
            s["step"] = max(s["step"], step)
        v = d.get("val_bits_per_char")
        if d.get("event") == "eval" and L.is_num(v) and v >= 0:
            best = s.get("best_val_bits_per_char")
            if best is None or v < best:
                s["best_val_bits_per_char"] = float(v)
        s["updated"] = time.time()
        with contextlib.suppress(OSError):
            atomic_write_json(self.path / L.SUMMARY_FILE, s)

    def read_summary(self) -> dict[str, Any]:
        """``summary.json``, a cache: rebuilt from metrics when missing or damaged.

        The result always has a finite ``created``, an integer ``step`` and a finite or None
        ``best_val_bits_per_char``.
        """
        s, _ = L.read_obj(self.path / L.SUMMARY_FILE, L.LIMITS[L.SUMMARY_FILE])
        return dict(s) if s is not None and L.valid_summary(s) else _summary_from_metrics(self)

    # ------------------------------------------------------------------ status

    def write_status(self, state: str, **extra: Any) -> None:
        """Replace ``status.json`` (state, pid and its identity, host, heartbeat, step,
        started_at, extra); the identity lets ``runs stop`` prove which process to signal."""
        now = time.time()
        prev = self._status
        step = extra.pop("step", prev.get("step", 0))
        started_at = prev.get("started_at")
        if started_at is None or state == "started":
            started_at = now
        self._status = {
            **extra,
            "state": state,
            "pid": os.getpid(),
            **proc_identity.own(),
            "host": socket.gethostname(),
            "heartbeat": now,
            "step": step,
            "started_at": started_at,
        }
        atomic_write_json(self.status_path, self._status)
        self._last_heartbeat = now

    def heartbeat(self, step: int, *, force: bool = False) -> None:
        """Record progress; rewrites ``status.json`` at most every ~2 s (cheap to call per step)."""
        if not self._status:
            self._status = {"step": step}
            return
        self._status["step"] = step
        now = time.time()
        if force or now - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self._status["heartbeat"] = now
            atomic_write_json(self.status_path, self._status)
            self._last_heartbeat = now

    def read_status(self) -> dict[str, Any]:
        """``status.json`` as a dict ({} if the run never started), mistyped fields dropped."""
        return self.status_and_problem()[0]

    def status_and_problem(self) -> tuple[dict[str, Any], str]:
        """The checked status and why it is damaged ('' when it is not)."""
        d, problem = L.read_obj(self.status_path, L.LIMITS[L.STATUS_FILE])
        if d is None:
            return {}, problem
        return L.clean_status(d)

    def liveness(self) -> str:
        """One of live, finished, stopped, failed, dead, created (see the module docstring)."""
        if self.is_locked():
            return "live"
        st = self.read_status()
        state = st.get("state")
        if state is None:
            return "created"
        if state in RUNNING_STATES:
            hb = st.get("heartbeat")
            # A heartbeat from the future (a planted status.json) is not fresh either.
            fresh = isinstance(hb, (int, float)) and abs(time.time() - hb) < HEARTBEAT_STALE_S
            same_host = st.get("host") == socket.gethostname()
            if fresh and (not same_host or pid_alive(st.get("pid"))):
                return "live"
            return "dead"
        if state == "stopping" or (
            state == "finished" and (st.get("stopped") is True or st.get("reason") == "stopped")
        ):
            return "stopped"
        if state in ("finished", "failed"):
            return state
        return str(state)

    # ------------------------------------------------------------------ control

    def request(self, action: str) -> None:
        """Ask the run's trainer to pause, resume or stop (see the module docstring)."""
        if action not in CONTROL_ACTIONS:
            raise RunError(f"unknown control action {action!r}; use {', '.join(CONTROL_ACTIONS)}")
        atomic_write_json(
            self.control_path,
            {"action": action, "time": time.time(), "id": uuid.uuid4().hex, "pid": os.getpid()},
        )

    def _read_control(self) -> dict[str, Any]:
        d = _read_json(self.control_path, L.LIMITS[L.CONTROL_FILE])
        if not (L.is_str(d.get("id")) and L.is_num(d.get("time")) and L.is_str(d.get("action"))):
            return {}
        return d

    @staticmethod
    def _control_key(d: Mapping[str, Any]) -> Any:
        return (d.get("id"), d.get("time"), d.get("action")) if d else None

    def poll_control(self) -> str | None:
        """The newest unseen request's action, returned once; None most of the time."""
        # Read every time (tens of microseconds, bounded: a huge file is refused from its
        # size): mtimes are too coarse to tell two quick requests apart, the unique id is not.
        d = self._read_control()
        key = self._control_key(d)
        if key is None or key == self._control_seen:
            return None
        self._control_seen = key
        action = d.get("action")
        return action if action in CONTROL_ACTIONS else None

    def signal_stop(self) -> bool:
        """SIGTERM the trainer, only when it is proven to be this run's (see run_admin)."""
        from .run_admin import signal_trainer

        return signal_trainer(self) is not None


def _summary_from_metrics(run: RunDir) -> dict[str, Any]:
    """Rebuild the summary from ``metrics.jsonl`` (the source of truth), one pass."""
    best: float | None = None
    step = 0
    for e in run.read_metrics():
        s = e.get("step")
        if L.is_int(s):
            step = max(step, s)
        v = e.get("val_bits_per_char")
        if e.get("event") == "eval" and L.is_num(v) and v >= 0:
            best = v if best is None else min(best, v)
    try:
        created = float(os.lstat(run.config_path).st_mtime)
    except (OSError, ValueError):
        created = 0.0
    return {"created": created, "best_val_bits_per_char": best, "step": step}


def resolve_run(name_or_path: str | Path, *, home: Path | None = None) -> RunDir:
    """A run by name (under ``ldlm_home()/runs``) or by a path to its directory."""
    return RunDir.open(name_or_path, home=home)


def close_run_names(name: str, *, home: Path | None = None) -> list[str]:
    """Names of runs that look like ``name`` (a typo), best first; [] when none or unreadable."""
    return run_names.close_names(runs_root(home), name)


def run_info(run: RunDir) -> RunInfo:
    """One row of ``ldlm runs list``; never raises (see :mod:`ldlm_engine.run_admin`)."""
    from .run_admin import run_info as info

    return info(run)


def list_runs(home: Path | None = None) -> list[RunInfo]:
    """All runs under ``home/runs``, newest first; never raises (see run_admin)."""
    from .run_admin import list_runs as listing

    return listing(home)


def delete_run(name_or_path: str | Path, *, force: bool = False, home: Path | None = None) -> Path:
    """Remove a run folder that ldlm made, and only what ldlm wrote in it (see run_admin)."""
    from .run_admin import delete_run_dir

    return delete_run_dir(resolve_run(name_or_path, home=home), force=force, home=home)


def discard_new_run(run: RunDir) -> None:
    """Undo :meth:`RunDir.create` for a run that never trained (see run_admin)."""
    from .run_admin import discard_new_run as discard

    discard(run)


__all__ = [
    "CONTROL_ACTIONS",
    "MetricsFollower",
    "RunDir",
    "RunInfo",
    "close_run_names",
    "delete_run",
    "discard_new_run",
    "ldlm_home",
    "list_runs",
    "pid_alive",
    "resolve_run",
    "run_info",
    "runs_root",
]
