"""The on-disk layout of a run directory: every name ldlm writes, in one torch-free module.

Deleting a run removes exactly these names and nothing else, so this list is also the
boundary between what ldlm owns and what a user (or an attacker) put in the folder::

    .ldlm-run      marker written first at creation: proves ldlm made this folder
    config.json  summary.json  status.json  control.json  lock  metrics.jsonl
    tokenizer.json  train.log
    checkpoints/last.json            pointer to the newest complete checkpoint
    checkpoints/step-00000100/       model.safetensors  state.safetensors  meta.json
    .tmp-*                           temporary files of atomic writes (see fileio)

The size limits bound every read of these files (a hostile 50 GB ``status.json`` or a
symlink to ``/dev/zero`` must cost a refusal, not the machine's memory), and the field checks
below say what a well-formed ``status.json``, ``summary.json`` or metrics event holds, so no
reader ever formats or compares a value of the wrong type.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from .errors import RunError
from .fileio import TMP_PREFIX, describe_error, read_json_bounded

INT_MAX = 2**63 - 1

RUN_MARKER = ".ldlm-run"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
STATUS_FILE = "status.json"
CONTROL_FILE = "control.json"
LOCK_FILE = "lock"
METRICS_FILE = "metrics.jsonl"
TOKENIZER_FILE = "tokenizer.json"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"

LAST_FILE = "last.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
META_FILE = "meta.json"

# Top-level files ldlm writes in a run (the only ones ``delete_run`` removes).
RUN_FILES = frozenset(
    {
        RUN_MARKER,
        CONFIG_FILE,
        SUMMARY_FILE,
        STATUS_FILE,
        CONTROL_FILE,
        LOCK_FILE,
        METRICS_FILE,
        TOKENIZER_FILE,
        LOG_FILE,
    }
)
CHECKPOINT_FILES = frozenset({MODEL_FILE, STATE_FILE, META_FILE})

# Read limits in bytes: generous for real files, far below what could hurt.
KIB, MIB = 1 << 10, 1 << 20
LIMITS = {
    RUN_MARKER: 4 * KIB,
    CONFIG_FILE: 1 * MIB,
    SUMMARY_FILE: 64 * KIB,
    STATUS_FILE: 64 * KIB,
    CONTROL_FILE: 64 * KIB,
    LOCK_FILE: 64,
    LAST_FILE: 4 * KIB,
    META_FILE: 64 * MIB,
    TOKENIZER_FILE: 256 * MIB,
}
METRICS_READ_LIMIT = 64 * MIB  # the newest part of metrics.jsonl that readers parse
CONFIG_FILE_LIMIT = 4 * MIB  # a user's --config settings file

_STEP_RE = re.compile(r"step-(\d{1,18})")
# Atomic writes: .tmp-<name>-<pid>-<ns>; checkpoint folders: .tmp-[old-]step-N-<pid>.
_TMP_FILE_RE = re.compile(re.escape(TMP_PREFIX) + r"(?P<name>.+)-(?P<pid>\d+)-\d+")
_TMP_CKPT_RE = re.compile(re.escape(TMP_PREFIX) + r"(?:old-)?step-\d{1,18}-(?P<pid>\d+)")


def checkpoint_name(step: int) -> str:
    """Folder name for a step; zero-padded so names sort like steps."""
    return f"step-{int(step):08d}"


def parse_step(name: str) -> int | None:
    """The step of a ``step-N`` folder name, or None for any other name."""
    m = _STEP_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def temp_file_target(name: str) -> str | None:
    """The file an atomic-write temporary ``name`` was replacing, or None if not one."""
    m = _TMP_FILE_RE.fullmatch(name)
    return m.group("name") if m else None


def is_temp_checkpoint(name: str) -> bool:
    """Whether ``name`` is a checkpoint folder being written or replaced (``.tmp-step-...``)."""
    return _TMP_CKPT_RE.fullmatch(name) is not None


def temp_pid(name: str) -> int | None:
    """The writer's pid recorded in a temporary name (to spare a live writer's files)."""
    m = _TMP_CKPT_RE.fullmatch(name) or _TMP_FILE_RE.fullmatch(name)
    return int(m.group("pid")) if m else None


def is_real_dir(path: Path) -> bool:
    """A directory that is not a symlink (links inside a run are never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def is_real_file(path: Path) -> bool:
    """A regular file that is not a symlink."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def list_checkpoint_steps(checkpoints_dir: str | os.PathLike[str]) -> list[int]:
    """Steps of the complete checkpoints (real ``step-N`` folders holding a ``meta.json``).

    Sorted oldest first; symlinks, half-written ``.tmp-*`` folders and other names are skipped.
    """
    d = Path(checkpoints_dir)
    if not is_real_dir(d):
        return []
    try:
        names = os.listdir(d)
    except OSError:
        return []
    steps = []
    for name in names:
        step = parse_step(name)
        if step is not None and is_real_dir(d / name) and is_real_file(d / name / META_FILE):
            steps.append(step)
    return sorted(steps)


def owned_entries(path: Path) -> tuple[list[Path], list[Path], list[str]]:
    """``(files, folders deepest first, foreign names)`` of a run folder, links not followed.

    ``files``/``folders`` are exactly what ldlm writes (the names above, ``step-N`` folders,
    temporaries of atomic writes); ``foreign`` names everything else, relative to ``path``.
    """
    files: list[Path] = []
    dirs: list[Path] = []
    foreign: list[str] = []

    def scan(folder: Path, allowed: Any, rel: str) -> None:
        with os.scandir(folder) as it:
            entries = list(it)
        for e in entries:
            is_dir = e.is_dir(follow_symlinks=False)
            sub = allowed(e.name, is_dir)
            if sub is True:
                files.append(folder / e.name)
            elif callable(sub):
                scan(folder / e.name, sub, f"{rel}{e.name}/")
                dirs.append(folder / e.name)
            else:
                foreign.append(f"{rel}{e.name}{'/' if is_dir else ''}")

    def in_checkpoint(name: str, is_dir: bool) -> Any:
        return not is_dir and name in CHECKPOINT_FILES

    def in_checkpoints(name: str, is_dir: bool) -> Any:
        if is_dir:
            ours = parse_step(name) is not None or is_temp_checkpoint(name)
            return in_checkpoint if ours else False
        return name == LAST_FILE or temp_file_target(name) == LAST_FILE

    def top(name: str, is_dir: bool) -> Any:
        if is_dir:
            return in_checkpoints if name == CHECKPOINTS_DIR else False
        return name in RUN_FILES or temp_file_target(name) in RUN_FILES

    scan(path, top, "")
    return files, dirs, foreign


def leftover_run(path: Path) -> bool:
    """A real folder with neither ``config.json`` nor the marker, holding names ldlm writes
    and nothing else: what an interrupted delete of an older ldlm left. Only meaningful
    directly in the runs root, where ldlm made every folder (the caller checks that)."""
    if not is_real_dir(path) or lexists(path / CONFIG_FILE) or lexists(path / RUN_MARKER):
        return False
    try:
        files, dirs, foreign = owned_entries(path)
    except OSError:
        return False
    return bool(files or dirs) and not foreign


# --------------------------------------------------------------------------- checked reads


def read_obj(path: Path, limit: int) -> tuple[dict[str, Any] | None, str]:
    """``(object, "")``; ``(None, "")`` when the file is missing; ``(None, reason)`` if damaged."""
    try:
        d = read_json_bounded(path, limit)
    except FileNotFoundError:
        return None, ""
    except (OSError, ValueError) as e:
        return None, f"{path.name} {describe_error(e)}"
    if not isinstance(d, dict):
        return None, f"{path.name} is not a JSON object"
    return d, ""


def is_int(v: Any, lo: int = 0, hi: int = INT_MAX) -> bool:
    """An int (not a bool) in ``lo..hi``."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def is_num(v: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_number(v: Any) -> bool:
    """An int or float, NaN and infinities included (a NaN loss is a real event)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_str(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 4096


# Field -> check, for what is read back from status.json and metrics.jsonl.
_STATUS_FIELDS = {
    "state": lambda v: is_str(v) and len(v) <= 64,
    "pid": lambda v: is_int(v, 1, 2**31),
    "host": lambda v: is_str(v) and len(v) <= 255,
    "heartbeat": is_num,
    "started_at": is_num,
    "step": is_int,
    "message": is_str,
    "stopped": lambda v: isinstance(v, bool),
    "reason": is_str,
    "pid_start": is_int,  # the trainer's identity (see proc_identity)
    "cmdline_sha256": lambda v: is_str(v) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
}
_EVENT_FIELDS = {
    "event": lambda v: isinstance(v, str),
    "step": is_int,
    "time": is_num,
    **{
        k: is_number
        for k in (
            "loss",
            "lr",
            "tokens_per_s",
            "epoch",
            "elapsed_s",
            "grad_norm",
            "peak_mem_mb",
            "val_loss",
            "val_bits_per_token",
            "val_bits_per_char",
            "stderr_bits_per_char",
        )
    },
    "total_steps": is_int,
    "nfe": is_int,
    "exact": lambda v: isinstance(v, bool),
    **{k: lambda v: isinstance(v, str) for k in ("text", "path", "state", "message")},
}


def valid_event(d: dict[str, Any]) -> bool:
    """An event whose known fields have their types (others are skipped like torn lines)."""
    return all(check(d[k]) for k, check in _EVENT_FIELDS.items() if k in d)


def clean_status(d: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """status.json with mistyped fields dropped, and a reason naming them ('' if none)."""
    bad = [k for k, check in _STATUS_FIELDS.items() if k in d and not check(d[k])]
    clean = {k: v for k, v in d.items() if k not in bad}
    return clean, (f"status.json has a bad {', '.join(bad)}" if bad else "")


def valid_summary(d: dict[str, Any]) -> bool:
    best = d.get("best_val_bits_per_char")
    return (
        is_num(d.get("created"))
        and d["created"] >= 0
        and is_int(d.get("step"))
        and (best is None or (is_num(best) and best >= 0))
        and ("updated" not in d or is_num(d["updated"]))
    )


# --------------------------------------------------------------------------- names and paths


def check_run_arg(s: str) -> None:
    """Refuse run names/paths no file system or terminal should see, with one line."""
    if not s:
        raise RunError("empty run name")
    if any(ord(c) < 32 or ord(c) == 127 for c in s):
        raise RunError(f"invalid run name {s!r}: control characters (a newline?) are not allowed")
    try:
        parts = [p.encode("utf-8", "surrogateescape") for p in s.split(os.sep)]
    except UnicodeError:
        raise RunError(f"invalid run name {s!r}: not valid text") from None
    if any(len(p) > 255 for p in parts) or len(s.encode("utf-8", "surrogateescape")) > 4000:
        raise RunError(f"run name or path too long ({len(s)} characters; the limit is 255 each)")


def expand_user(s: str) -> Path:
    try:
        return Path(s).expanduser()
    except (RuntimeError, KeyError):  # ~nouser: no such user, no home folder
        user = s.split(os.sep, 1)[0]
        raise RunError(f"cannot expand {user}: no such user or home folder") from None


def marker_ok(path: Path) -> bool:
    d, _ = read_obj(path / RUN_MARKER, LIMITS[RUN_MARKER])
    return d is not None and d.get("ldlm_run") == 1


def lexists(path: Path) -> bool:
    try:
        os.lstat(path)
        return True
    except (OSError, ValueError):
        return False


__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKPOINT_FILES",
    "CONFIG_FILE",
    "CONTROL_FILE",
    "INT_MAX",
    "LAST_FILE",
    "LIMITS",
    "LOCK_FILE",
    "LOG_FILE",
    "META_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "RUN_FILES",
    "RUN_MARKER",
    "STATE_FILE",
    "STATUS_FILE",
    "SUMMARY_FILE",
    "TOKENIZER_FILE",
    "check_run_arg",
    "checkpoint_name",
    "clean_status",
    "expand_user",
    "is_int",
    "is_num",
    "is_number",
    "is_real_dir",
    "is_real_file",
    "is_str",
    "is_temp_checkpoint",
    "leftover_run",
    "lexists",
    "list_checkpoint_steps",
    "marker_ok",
    "owned_entries",
    "parse_step",
    "read_obj",
    "temp_file_target",
    "temp_pid",
    "valid_event",
    "valid_summary",
]
