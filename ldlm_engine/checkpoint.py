"""Safe, atomic checkpoints: safetensors + JSON only, never pickle.

Layout of one checkpoint (a folder ``step-00000100`` under a run's ``checkpoints/``)::

    model.safetensors   weights (tied tensors stored once, see below)
    state.safetensors   optimizer tensors ``opt.*``, caller tensors ``extra.<key>`` (RNG ...)
                        and averaged weights ``ema.<parameter>`` (train.ema, see ema.py)
    meta.json           step/epoch/data position, the optimizer's non-tensor structure,
                        format version and the sha256 of both .safetensors files

Why this shape:

* No pickle anywhere, so loading a checkpoint from an untrusted source cannot run code; a
  damaged, truncated or substituted file fails its sha256 or the safetensors parser and raises a
  one-line :class:`CheckpointError`.
* Crash safety: the folder is built under ``.tmp-<name>-<pid>``, every file and the folder are
  fsync'd, then it is renamed into place and only then ``last.json`` (the pointer to the latest
  checkpoint) is replaced atomically. A SIGKILL at any instant leaves ``last.json`` naming a
  complete checkpoint; if ``last.json`` itself is missing or damaged, loading falls back to the
  highest-numbered ``step-*`` folder that verifies. If the checkpoint it names is incomplete
  (a file or the folder missing: a partial copy or clean-up), loading falls back to the newest
  intact one and says so in ``Checkpoint.note``; one whose files are present but fail their
  checksums is an error (naming the intact one to fall back to), never silently skipped.
* Nothing in a run is trusted: no symlink is followed, ``meta.json``/``last.json`` reads are
  bounded, every field is type-checked. The names live in :mod:`ldlm_engine.layout`.
* Tied weights: safetensors refuses tensors that share storage, so a state-dict entry that is the
  very same tensor as an earlier one is stored once and recorded in ``meta["tied"]``; loading
  puts the alias back (same tensor object), so ``load_state_dict(strict=True)`` is happy.

:func:`atomic_write_text` / :func:`atomic_write_bytes` are the project's one place for atomic
file replacement.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import layout as L
from .checkpoint_checks import APPLY_ERRORS, Fit, check_meta, check_tensors
from .config import MODEL_SHAPE_KEYS, TOKENIZER_KEYS
from .errors import CheckpointError
from .fileio import (
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_write_text,
    describe_error,
    fsync_dir,
    fsync_file,
    open_nofollow,
    read_json_bounded,
)
from .layout import LAST_FILE, META_FILE, MODEL_FILE, STATE_FILE, checkpoint_name
from .runs import pid_alive

FORMAT_VERSION = 1
_NO_FIT = Fit()


# --------------------------------------------------------------------------- atomic writes


# --------------------------------------------------------------------------- config fingerprint

# Settings that change what the weights mean; training-only knobs (lr, dropout, eps ...) may
# change between a checkpoint and its resume.
_RELEVANT = {
    "model": (*MODEL_SHAPE_KEYS, "vocab_size"),
    "process": ("kind", "timesteps", "schedule", "block_shift"),
    "data": TOKENIZER_KEYS,
}


# Settings added after checkpoints existed: part of the fingerprint only when switched on, so
# an older checkpoint (whose fingerprint never had them) still matches its own config.
_ONLY_WHEN_SET = frozenset({"block_shift"})


def relevant_config(config_dict: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The model-, process- and tokenizer-defining part of a config (``RunConfig`` or its dict)."""
    if hasattr(config_dict, "to_dict"):
        config_dict = config_dict.to_dict()
    out: dict[str, Any] = {}
    for section, keys in _RELEVANT.items():
        sec = config_dict.get(section) or {}
        for k in keys:
            if k in sec and not (k in _ONLY_WHEN_SET and not sec[k]):
                out[f"{section}.{k}"] = sec[k]
    return out


def config_fingerprint(config_dict: Mapping[str, Any] | Any) -> str:
    """sha256 of :func:`relevant_config`, to refuse resuming into a different model."""
    blob = json.dumps(relevant_config(config_dict), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def checkpoint_meta(
    config_dict: Mapping[str, Any] | Any,
    *,
    step: int,
    epoch: float = 0.0,
    data_position: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the caller part of ``meta`` (with the fingerprint :func:`check_compatible` reads)."""
    return {
        "step": int(step),
        "epoch": epoch,
        "data_position": data_position,
        "config_fingerprint": config_fingerprint(config_dict),
        "relevant_config": relevant_config(config_dict),
        **extra,
    }


def check_compatible(meta: Mapping[str, Any], config_dict: Mapping[str, Any] | Any) -> None:
    """Raise if the checkpoint was written for another model; silent when no fingerprint stored."""
    stored = meta.get("config_fingerprint")
    if not stored or stored == config_fingerprint(config_dict):
        return
    now = relevant_config(config_dict)
    old = meta.get("relevant_config")
    if isinstance(old, dict):
        diffs = [
            f"{k}: {old.get(k)!r} -> {now.get(k)!r}"
            for k in sorted(set(old) | set(now))
            if old.get(k) != now.get(k)
        ]
        detail = ", ".join(diffs) or "fingerprint differs"
    else:
        detail = "fingerprint differs"
    where = meta.get("path") or f"step {meta.get('step')}"
    raise CheckpointError(
        f"checkpoint {where} was written for a different model configuration ({detail})"
    )


# --------------------------------------------------------------------------- tensor helpers


def _to_cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # An independent, contiguous CPU copy: safetensors refuses shared storage and the trainer
    # keeps mutating the live tensors.
    return t.detach().to("cpu", copy=True).contiguous()


def _dedupe_model_state(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store each distinct tensor once; map alias key -> canonical key for tied weights."""
    seen: dict[tuple[Any, ...], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    for key, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"model state entry {key!r} is not a tensor")
        ident = (
            t.device.type,
            t.untyped_storage().data_ptr() if t.numel() else id(t),
            t.storage_offset(),
            tuple(t.shape),
            tuple(t.stride()),
            t.dtype,
        )
        if ident in seen:
            tied[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = _to_cpu_copy(t)
    return tensors, tied


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Turn an optimizer state dict into JSON, moving tensors out under their path names."""
    if isinstance(obj, torch.Tensor):
        name = path
        i = 1
        while name in tensors:
            i += 1
            name = f"{path}~{i}"
        tensors[name] = _to_cpu_copy(obj)
        return {"__tensor__": name}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {
            "__items__": [
                [_encode(k, f"{path}.key", tensors), _encode(v, f"{path}.{k}", tensors)]
                for k, v in obj.items()
            ]
        }
    raise CheckpointError(f"cannot store optimizer value of type {type(obj).__name__} at {path}")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor], where: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        name = obj["__tensor__"]
        if name not in tensors:
            raise CheckpointError(f"checkpoint {where} is damaged: tensor {name!r} is missing")
        return tensors[name]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, where) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors, where): _decode(v, tensors, where) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors, where) for k, v in obj.items()}


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    fd = open_nofollow(path)  # never a symlink to a file (or device) outside the run
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _ldlm_version() -> str:
    try:
        from importlib.metadata import version

        return version("ldlm")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


# --------------------------------------------------------------------------- save


def save_checkpoint(
    directory: Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any] | None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
    meta: Mapping[str, Any],
    ema_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write one checkpoint atomically and point ``last.json`` at it; returns its folder.

    ``meta`` must hold an integer ``step``; everything in it must be JSON-able (use
    :func:`checkpoint_meta`). Saving a step that already exists replaces it (old folder moved
    aside first; during that instant loading falls back to the previous step).
    ``ema_tensors`` (averaged weights by parameter name) are stored as ``ema.<name>``.
    """
    directory = Path(directory)
    if "step" not in meta:
        raise CheckpointError("checkpoint meta needs a 'step'")
    step = int(meta["step"])
    name = checkpoint_name(step)
    if os.path.islink(directory):
        raise CheckpointError(
            f"cannot write checkpoint {name}: {directory} is a symbolic link (not followed)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(directory, name, e) from None

    model_tensors, tied = _dedupe_model_state(model_state)
    state_tensors: dict[str, torch.Tensor] = {}
    opt_struct = _encode(dict(optimizer_state), "opt", state_tensors) if optimizer_state else None
    for key, t in (extra_tensors or {}).items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"extra tensor {key!r} is not a tensor")
        state_tensors[f"extra.{key}"] = _to_cpu_copy(t)
    for key, t in (ema_tensors or {}).items():
        state_tensors[f"ema.{key}"] = _to_cpu_copy(t)

    tmp = directory / f"{TMP_PREFIX}{name}-{os.getpid()}"
    try:
        _remove_entry(tmp)  # our own leftover (same pid): never followed if a link
        tmp.mkdir()
    except OSError as e:
        raise _write_error(directory, name, e) from None
    try:
        files: dict[str, dict[str, Any]] = {}
        for fname, tensors in ((MODEL_FILE, model_tensors), (STATE_FILE, state_tensors)):
            p = tmp / fname
            save_file(tensors, str(p), metadata={"format": "pt"})
            fsync_file(p)
            files[fname] = {"sha256": _sha256_file(p), "bytes": p.stat().st_size}
        full_meta = dict(meta)
        full_meta.update(
            {
                "step": step,
                "format_version": FORMAT_VERSION,
                "ldlm_version": _ldlm_version(),
                "saved_at": time.time(),
                "tied": tied,
                "optimizer": opt_struct,
                "extra_keys": sorted((extra_tensors or {}).keys()),
                "ema_keys": sorted((ema_tensors or {}).keys()),
                "files": files,
            }
        )
        try:
            text = json.dumps(full_meta, indent=1, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint meta is not JSON-serialisable: {e}") from None
        meta_path = tmp / META_FILE
        meta_path.write_text(text, encoding="utf-8")
        fsync_file(meta_path)
        fsync_dir(tmp)

        final = directory / name
        if L.lexists(final):
            trash = directory / f"{TMP_PREFIX}old-{name}-{os.getpid()}"
            _remove_entry(trash)
            os.rename(final, trash)
            os.rename(tmp, final)
            with contextlib.suppress(OSError):
                _remove_entry(trash)
        else:
            os.rename(tmp, final)
        fsync_dir(directory)
    except (OSError, SafetensorError) as e:  # disk full, read-only file system, ...
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(directory, name, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        atomic_write_text(directory / LAST_FILE, json.dumps({"name": name, "step": step}) + "\n")
    except OSError as e:  # last.json still names the previous checkpoint
        raise _write_error(directory, name, e) from None
    return final


def _remove_checkpoint_folder(p: Path) -> None:
    """Delete the files ldlm wrote in a step folder (meta.json first: the folder stops being
    a checkpoint at once), then the folder only if nothing else is in it (a user's notes)."""
    for fname in (META_FILE, MODEL_FILE, STATE_FILE):
        f = p / fname
        if L.is_real_file(f) or os.path.islink(f):
            with contextlib.suppress(OSError):
                os.unlink(f)
    with contextlib.suppress(OSError):
        os.rmdir(p)


def _remove_entry(p: Path) -> None:
    """Remove a file, a link (not its target) or a checkpoint folder of ours (its files only,
    see :func:`_remove_checkpoint_folder`); nothing if absent."""
    if L.is_real_dir(p):
        _remove_checkpoint_folder(p)
    elif L.lexists(p):
        os.unlink(p)


def _write_error(directory: Path, name: str, e: BaseException) -> CheckpointError:
    """A failed checkpoint write as one line; earlier checkpoints and last.json are untouched."""
    reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
    return CheckpointError(
        f"cannot write checkpoint {name} in {directory}: {reason}; the previous checkpoint is kept"
    )


# --------------------------------------------------------------------------- load


@dataclass
class Checkpoint:
    """A verified checkpoint, ready for ``model/optimizer.load_state_dict``.

    ``note`` is empty, or one line telling the user that the newest checkpoint
    (``fallback_from``) was incomplete and this older intact one was loaded instead.
    ``ema_state``: the averaged weights by parameter name (empty when trained without).
    """

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    extra_tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path
    tied: dict[str, str] = field(default_factory=dict)
    note: str = ""
    fallback_from: str | None = None
    ema_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


class IncompleteCheckpoint(CheckpointError):
    """A checkpoint folder with a file (or itself) missing: loading may fall back past it."""


def read_last(checkpoints_dir: Path) -> dict[str, Any] | None:
    """The ``last.json`` pointer, or None when missing or unreadable (bounded, no symlink)."""
    try:
        d = read_json_bounded(Path(checkpoints_dir) / LAST_FILE, L.LIMITS[LAST_FILE])
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("name"), str):
        return None
    if L.parse_step(d["name"]) is None:
        return None
    return d


def list_checkpoints(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of checkpoints renamed into place (with ``meta.json``), oldest first."""
    d = Path(checkpoints_dir)
    return [(step, d / checkpoint_name(step)) for step in L.list_checkpoint_steps(d)]


def _checked_file(path: Path, fname: str, info: Any, meta_path: Path) -> None:
    """Refuse a checkpoint file that is missing, a link, not regular, or not what meta says."""
    p = path / fname
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
        raise CheckpointError(f"checkpoint {meta_path} has no checksum for {fname}")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise IncompleteCheckpoint(f"checkpoint file {p} is missing") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint file {p}: {describe_error(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise CheckpointError(f"checkpoint file {p} is {what}")
    expected = info.get("bytes")
    if expected is not None and st.st_size != expected:
        raise CheckpointError(
            f"checkpoint file {p} is truncated or altered ({st.st_size} bytes, expected {expected})"
        )
    try:
        digest = _sha256_file(p)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint file {p}: {describe_error(e)}") from None
    if digest != info["sha256"]:
        raise CheckpointError(f"checkpoint file {p} is damaged or altered (sha256 mismatch)")


def _load_folder(path: Path, fit: Fit = _NO_FIT) -> Checkpoint:
    if not L.is_real_dir(path):
        if L.lexists(path):
            raise CheckpointError(f"checkpoint {path} is not a folder (a symbolic link?)")
        raise IncompleteCheckpoint(f"checkpoint {path} does not exist")
    meta_path = path / META_FILE
    try:
        meta = read_json_bounded(meta_path, L.LIMITS[META_FILE])
    except FileNotFoundError:
        raise IncompleteCheckpoint(
            f"checkpoint {path} is incomplete: {META_FILE} is missing"
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {meta_path} is unreadable: {describe_error(e)}"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {meta_path} is not a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; "
            f"this ldlm reads version {FORMAT_VERSION}"
        )
    check_meta(meta, path)
    if fit.config is not None:
        check_compatible({**meta, "path": str(path)}, fit.config)
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"checkpoint {meta_path} lists no files")
    for fname in (MODEL_FILE, STATE_FILE):  # every file present before any is verified
        if not L.lexists(path / fname):
            raise IncompleteCheckpoint(f"checkpoint file {path / fname} is missing")
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for fname in (MODEL_FILE, STATE_FILE):
        p = path / fname
        _checked_file(path, fname, files.get(fname), meta_path)
        try:
            # safetensors only parses a JSON header and raw buffers: no code can run here.
            loaded[fname] = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(
                f"checkpoint file {p} is not a valid safetensors file: {msg}"
            ) from None

    model_state = loaded[MODEL_FILE]
    tied = meta.get("tied") or {}
    step = meta.get("step")
    if (
        not L.is_int(step)
        or not isinstance(tied, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items())
    ):
        raise CheckpointError(f"checkpoint {meta_path} is damaged: bad step or tied weights")
    for canonical in tied.values():
        if canonical not in model_state:
            raise CheckpointError(
                f"checkpoint {path} is damaged: tied weight {canonical!r} missing"
            )
    # Rebuild in the saved order with aliases as the very same tensor (tied weights).
    ordered: dict[str, torch.Tensor] = {}
    for k in list(model_state) + list(tied):
        ordered[k] = model_state[tied.get(k, k)]
    state_tensors = loaded[STATE_FILE]
    opt = meta.get("optimizer")
    try:
        optimizer_state = _decode(opt, state_tensors, path) if opt is not None else None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError):
        raise CheckpointError(
            f"checkpoint {meta_path} is damaged: bad optimizer structure"
        ) from None
    check_tensors(path, ordered, state_tensors, fit)
    extra = {k[len("extra.") :]: v for k, v in state_tensors.items() if k.startswith("extra.")}
    ema = {k[len("ema.") :]: v for k, v in state_tensors.items() if k.startswith("ema.")}
    if sorted(ema) != meta.get("ema_keys", []):  # an average is whole or absent
        raise CheckpointError(f"checkpoint {path} is damaged: its averaged weights are incomplete")
    meta["path"] = str(path)
    ck = Checkpoint(ordered, optimizer_state, extra, meta, path, dict(tied), ema_state=ema)
    if fit.apply is not None:
        try:
            fit.apply(ck)
        except APPLY_ERRORS as e:
            reason = (str(e).splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"checkpoint {path} is damaged: {reason}") from None
    return ck


def _newest_intact(checkpoints_dir: Path, skip: str, fit: Fit) -> Checkpoint | None:
    for _, p in reversed(list_checkpoints(checkpoints_dir)):
        if p.name != skip:
            with contextlib.suppress(CheckpointError):
                return _load_folder(p, fit)
    return None


def load_checkpoint(
    checkpoints_dir: Path,
    name: str | None = None,
    *,
    fit: Fit = _NO_FIT,
) -> Checkpoint:
    """Load and verify a checkpoint (``name=None``/``"last"``: the latest complete one).

    ``fit`` says what the checkpoint is for (the model's tensors, the state the caller needs,
    the config): one that does not fit is damaged, like one that fails its checksums.

    The latest is the one ``last.json`` names. If that one is incomplete, the newest intact
    checkpoint is loaded instead and ``Checkpoint.note`` says so; if its files were altered
    (checksums fail), the error names the intact checkpoint the user may fall back to.
    """
    checkpoints_dir = Path(checkpoints_dir)
    if L.lexists(checkpoints_dir) and not L.is_real_dir(checkpoints_dir):
        raise CheckpointError(
            f"{checkpoints_dir} is not a folder (symbolic links are not followed)"
        )
    if name is not None and name != "last":
        if L.parse_step(name) is None and name.isdigit() and len(name) <= 18:
            name = checkpoint_name(int(name))
        if L.parse_step(name) is None:
            raise CheckpointError(f"no checkpoint named {name!r} (use step-N or N)")
        return _load_folder(checkpoints_dir / name, fit)
    last = read_last(checkpoints_dir)
    if last is not None:
        try:
            return _load_folder(checkpoints_dir / last["name"], fit)
        except IncompleteCheckpoint as e:
            ck = _newest_intact(checkpoints_dir, last["name"], fit)
            if ck is None:
                raise
            ck.fallback_from = last["name"]
            ck.note = f"{e}; loaded {ck.path.name}, the newest intact checkpoint, instead"
            return ck
        except CheckpointError as e:
            ck = _newest_intact(checkpoints_dir, last["name"], fit)
            if ck is None:
                raise
            raise CheckpointError(
                f"{e} (the older checkpoint {ck.path.name} is intact: delete "
                f"{checkpoints_dir / last['name']} to fall back to it)"
            ) from None
    # No usable pointer (crash before the first pointer write, or damaged): newest that verifies.
    candidates = list_checkpoints(checkpoints_dir)
    if not candidates:
        raise CheckpointError(f"no checkpoint found in {checkpoints_dir}")
    first_error: CheckpointError | None = None
    for _, p in reversed(candidates):
        try:
            ck = _load_folder(p, fit)
        except CheckpointError as e:
            first_error = first_error or e
            continue
        if first_error is not None:
            ck.fallback_from = candidates[-1][1].name
            ck.note = f"{first_error}; loaded {p.name}, the newest intact checkpoint, instead"
        return ck
    assert first_error is not None
    raise first_error


# --------------------------------------------------------------------------- prune


def prune_checkpoints(checkpoints_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (never the one ``last.json`` names).

    Also removes ``.tmp-*`` leftovers of writers that are no longer running. Returns what was
    removed. Only real folders and files of ldlm's names are touched; links are never followed.
    """
    checkpoints_dir = Path(checkpoints_dir)
    keep = max(1, int(keep))
    removed: list[Path] = []
    if not L.is_real_dir(checkpoints_dir):
        return removed
    last = read_last(checkpoints_dir)
    protected = last["name"] if last else None
    complete = list_checkpoints(checkpoints_dir)
    for _, p in complete[: max(0, len(complete) - keep)]:
        if p.name == protected:
            continue
        _remove_checkpoint_folder(p)
        removed.append(p)
    try:
        names = os.listdir(checkpoints_dir)
    except OSError:
        return removed
    for name in names:
        pid = L.temp_pid(name)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        p = checkpoints_dir / name
        with contextlib.suppress(OSError):
            _remove_entry(p)
            removed.append(p)
    return removed


__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "IncompleteCheckpoint",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_compatible",
    "checkpoint_meta",
    "checkpoint_name",
    "config_fingerprint",
    "fsync_dir",
    "list_checkpoints",
    "load_checkpoint",
    "prune_checkpoints",
    "read_last",
    "relevant_config",
    "save_checkpoint",
]
