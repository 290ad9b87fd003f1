"""Run directories: the on-disk interface between a trainer and everything watching it.

A run lives in ``ldlm_home()/runs/<name>/`` (``$LDLM_HOME`` or platformdirs' user data dir)::

    config.json    resolved configuration (written once, atomically, at creation)
    tokenizer.json written by the trainer via ``run.path_of("tokenizer.json")``
    metrics.jsonl  append-only events, one JSON object per line
    status.json    state, pid, host, heartbeat, step (replaced atomically)
    summary.json   created time, best val bits/char, last step: keeps ``list_runs`` O(1) per run
    control.json   the latest pause/resume/stop request from another process
    lock           flock'd by the trainer for its whole lifetime; holds its pid
    checkpoints/   see :mod:`ldlm_engine.checkpoint`
    train.log      stdout/stderr of a detached run

This module imports no torch so that watchers (the TUI, ``ldlm runs list``) start fast.

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
is ignored, so a stale "stop" cannot kill the next resume. ``signal_stop()`` (SIGTERM to the
locked trainer's pid, same host only) is the fallback for a trainer that does not poll.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from .errors import RunError
from .fileio import atomic_write_json

CONTROL_ACTIONS = ("pause", "resume", "stop")
RUNNING_STATES = ("started", "resumed", "paused")
HEARTBEAT_EVERY_S = 2.0
HEARTBEAT_STALE_S = 30.0
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FSYNC_EVENTS = ("status", "checkpoint")


def ldlm_home() -> Path:
    """``$LDLM_HOME`` if set, else the platform's per-user data directory for ldlm."""
    env = os.environ.get("LDLM_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("ldlm"))


def runs_root(home: Path | None = None) -> Path:
    return (Path(home) if home is not None else ldlm_home()) / "runs"


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when missing, partial or not an object."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return d if isinstance(d, dict) else {}


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


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


class MetricsFollower:
    """Non-blocking tail of ``metrics.jsonl`` for UIs that poll on a timer.

    Keeps a byte offset; a trailing line without its newline is held back until it is complete.
    If the file shrinks (run deleted and recreated) it starts again from the beginning.
    """

    def __init__(self, path: Path, *, from_start: bool = True) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        if not from_start:
            with contextlib.suppress(OSError):
                self.offset = self.path.stat().st_size

    def poll(self) -> list[dict[str, Any]]:
        """Events appended since the last call (possibly none)."""
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.offset, self._partial = 0, b""
                if size == self.offset:
                    return []
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial = data
            return []
        self._partial = data[cut + 1 :]
        return _parse_lines(data[: cut + 1])


@dataclass
class RunInfo:
    """One row of ``ldlm runs list``."""

    name: str
    path: Path
    state: str  # liveness(): live/finished/stopped/failed/dead/created/corrupt
    step: int
    best_val_bits_per_char: float | None
    preset: str
    process: str
    created: float
    last_update: float


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
            path = Path(run_dir).expanduser()
            if (path / "config.json").exists():
                raise RunError(f"run directory {path} already holds a run")
            if not NAME_RE.match(path.name):
                raise RunError(f"invalid run name {path.name!r}: use letters, digits, . _ -")
            path.mkdir(parents=True, exist_ok=True)
        else:
            root = runs_root(home)
            root.mkdir(parents=True, exist_ok=True)
            if name is not None:
                if not NAME_RE.match(name):
                    raise RunError(
                        f"invalid run name {name!r}: 1-64 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit"
                    )
                path = root / name
                try:
                    path.mkdir()
                except FileExistsError:
                    raise RunError(f"a run named {name!r} already exists ({path})") from None
            else:
                preset = str(config_dict.get("preset") or "run")
                process = str((config_dict.get("process") or {}).get("kind") or "")
                stem = "-".join(p for p in (preset, process) if p)
                stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:40] or "run"
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
        atomic_write_json(path / "config.json", dict(config_dict))
        atomic_write_json(
            path / "summary.json",
            {"created": time.time(), "best_val_bits_per_char": None, "step": 0},
        )
        (path / "checkpoints").mkdir(exist_ok=True)
        return run

    @classmethod
    def open(cls, path_or_name: str | Path, *, home: Path | None = None) -> RunDir:
        """An existing run, by path (a directory with ``config.json``) or by name."""
        s = str(path_or_name)
        candidates: list[Path] = []
        looks_like_path = isinstance(path_or_name, Path) or os.sep in s or s.startswith(".")
        if looks_like_path:
            candidates.append(Path(s).expanduser())
        elif NAME_RE.match(s):
            candidates.append(runs_root(home) / s)
            candidates.append(Path(s))
        for p in candidates:
            if (p / "config.json").is_file():
                return cls(p)
        raise RunError(f"no run named {s} (see `ldlm runs list`)")

    # ------------------------------------------------------------------ paths

    def path_of(self, filename: str) -> Path:
        return self.path / filename

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def control_path(self) -> Path:
        return self.path / "control.json"

    @property
    def lock_path(self) -> Path:
        return self.path / "lock"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def read_config(self) -> dict[str, Any]:
        """The stored configuration dict (RunError if unreadable)."""
        try:
            d = json.loads(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"run {self.name} has no config.json ({self.path})") from None
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
            msg = str(e).splitlines()[0]
            raise RunError(f"cannot read {self.config_path}: {msg}") from None
        if not isinstance(d, dict):
            raise RunError(f"{self.config_path} is not a JSON object")
        return d

    def latest_checkpoint_step(self) -> int | None:
        """Step named by ``checkpoints/last.json``, or None when there is no checkpoint yet."""
        d = _read_json(self.checkpoints_dir / "last.json")
        step = d.get("step")
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    # ------------------------------------------------------------------ lock

    def acquire_lock(self) -> None:
        """Become this run's only trainer (held until :meth:`release_lock` or process exit)."""
        if self._lock_fd is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunError(f"cannot lock run {self.name}: {e.strerror}") from None
            pid = self._lock_pid()
            raise RunError(
                f"run {self.name} is being trained by another process (pid {pid or '?'})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        # A request made before this trainer existed is not addressed to it.
        self._control_seen = self._control_key(_read_json(self.control_path))

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
            text = self.lock_path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def is_locked(self) -> bool:
        """Whether a live process (this one included) holds the trainer lock."""
        if self._lock_fd is not None:
            return True
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
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
            fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # A writer killed mid-line left a fragment: end it so our first line stays intact.
            size = os.fstat(fd).st_size
            if size:
                with open(self.metrics_path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
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
        except OSError as e:  # disk full, read-only file system ...
            raise RunError(f"cannot write {self.metrics_path}: {e.strerror or e}") from None
        kind = d.get("event")
        if kind in _FSYNC_EVENTS:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        if kind in ("eval", "status", "checkpoint"):
            self._update_summary(d)

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete, parseable events (a torn last line or corrupt line is skipped)."""
        try:
            data = self.metrics_path.read_bytes()
        except OSError:
            return []
        cut = data.rfind(b"\n")
        return _parse_lines(data[: cut + 1]) if cut >= 0 else []

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
            self._summary = _read_json(self.path / "summary.json")
            if not self._summary:
                self._summary = _summary_from_metrics(self)
        s = self._summary
        step = d.get("step")
        if isinstance(step, int):
            s["step"] = max(int(s.get("step") or 0), step)
        v = d.get("val_bits_per_char")
        if d.get("event") == "eval" and isinstance(v, (int, float)) and v == v:
            best = s.get("best_val_bits_per_char")
            if best is None or v < best:
                s["best_val_bits_per_char"] = float(v)
        s["updated"] = time.time()
        with contextlib.suppress(OSError):
            atomic_write_json(self.path / "summary.json", s)

    def read_summary(self) -> dict[str, Any]:
        """``summary.json`` (rebuilt from metrics when missing, e.g. for hand-made runs)."""
        s = _read_json(self.path / "summary.json")
        return s if s else _summary_from_metrics(self)

    # ------------------------------------------------------------------ status

    def write_status(self, state: str, **extra: Any) -> None:
        """Replace ``status.json`` (state, pid, host, heartbeat, step, started_at, extra)."""
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
        """``status.json`` as a dict ({} if the run never started)."""
        return _read_json(self.status_path)

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
            fresh = isinstance(hb, (int, float)) and time.time() - hb < HEARTBEAT_STALE_S
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

    @staticmethod
    def _control_key(d: Mapping[str, Any]) -> Any:
        return (d.get("id"), d.get("time"), d.get("action")) if d else None

    def poll_control(self) -> str | None:
        """The newest unseen request's action, returned once; None most of the time."""
        if not self.control_path.exists():
            return None
        # Read every time (tens of microseconds): mtimes are too coarse to tell two quick
        # requests apart, the unique id is not.
        d = _read_json(self.control_path)
        key = self._control_key(d)
        if key is None or key == self._control_seen:
            return None
        self._control_seen = key
        action = d.get("action")
        return action if action in CONTROL_ACTIONS else None

    def signal_stop(self) -> bool:
        """SIGTERM the trainer (same host, lock held) when it cannot be reached via control."""
        st = self.read_status()
        pid = st.get("pid")
        if st.get("host") != socket.gethostname() or not pid_alive(pid) or pid == os.getpid():
            return False
        if not self.is_locked():  # pid may have been reused by an unrelated process
            return False
        os.kill(pid, signal.SIGTERM)
        return True


def _summary_from_metrics(run: RunDir) -> dict[str, Any]:
    """Fallback scan of ``metrics.jsonl`` (one pass) for runs without ``summary.json``."""
    best: float | None = None
    step = 0
    for e in run.read_metrics():
        s = e.get("step")
        if isinstance(s, int):
            step = max(step, s)
        v = e.get("val_bits_per_char")
        if e.get("event") == "eval" and isinstance(v, (int, float)) and v == v:
            best = v if best is None else min(best, v)
    try:
        created = run.config_path.stat().st_mtime
    except OSError:
        created = 0.0
    return {"created": created, "best_val_bits_per_char": best, "step": step}


def resolve_run(name_or_path: str | Path, *, home: Path | None = None) -> RunDir:
    """A run by name (under ``ldlm_home()/runs``) or by a path to its directory."""
    return RunDir.open(name_or_path, home=home)


def run_info(run: RunDir) -> RunInfo:
    """Summarise one run without reading its metrics (uses summary.json + status.json)."""
    try:
        cfg = run.read_config()
        state = run.liveness()
    except RunError:
        cfg, state = {}, "corrupt"
    summary = run.read_summary()
    status = run.read_status()
    steps = [v for v in (summary.get("step"), status.get("step")) if isinstance(v, int)]
    mtimes = []
    for p in (run.config_path, run.status_path, run.metrics_path, run.path / "summary.json"):
        with contextlib.suppress(OSError):
            mtimes.append(p.stat().st_mtime)
    best = summary.get("best_val_bits_per_char")
    return RunInfo(
        name=run.name,
        path=run.path,
        state=state,
        step=max(steps) if steps else 0,
        best_val_bits_per_char=float(best) if isinstance(best, (int, float)) else None,
        preset=str(cfg.get("preset", "?")),
        process=str((cfg.get("process") or {}).get("kind", "?")),
        created=float(summary.get("created") or (min(mtimes) if mtimes else 0.0)),
        last_update=max(mtimes) if mtimes else 0.0,
    )


def list_runs(home: Path | None = None) -> list[RunInfo]:
    """All runs under ``home/runs`` (default ``ldlm_home()``), newest first."""
    root = runs_root(home)
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    infos = [run_info(RunDir(p)) for p in entries if (p / "config.json").is_file()]
    infos.sort(key=lambda i: (i.created, i.name), reverse=True)
    return infos


def delete_run(name_or_path: str | Path, *, force: bool = False, home: Path | None = None) -> Path:
    """Remove a run directory; refuses a live run.

    ``force`` only overrides a heartbeat that merely *looks* live (status.json fresh, lock not
    held); a run whose lock is held is never deleted.
    """
    run = resolve_run(name_or_path, home=home)
    if run.is_locked():
        pid = run._lock_pid() or run.read_status().get("pid") or "?"
        raise RunError(
            f"run {run.name} is live (pid {pid}); stop it first (`ldlm runs stop {run.name}`)"
        )
    if not force and run.liveness() == "live":
        raise RunError(f"run {run.name} looks live (fresh heartbeat); stop it first or use --force")
    shutil.rmtree(run.path)
    return run.path


__all__ = [
    "CONTROL_ACTIONS",
    "MetricsFollower",
    "RunDir",
    "RunInfo",
    "delete_run",
    "ldlm_home",
    "list_runs",
    "pid_alive",
    "resolve_run",
    "run_info",
    "runs_root",
]
