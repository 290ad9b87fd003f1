"""Hostile and damaged files: pickles never run, damage is one clear error, absurd configs fail.

A run directory may come from anyone (a download, a shared drive). Loading one must never
execute code, never allocate what a config merely claims, and always end in one line.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from conftest import run_ldlm
from reliability_helpers import (  # noqa: F401
    assert_one_error_line,
    cli,
    one_torch_thread,
    run,
    train_run,
    trained,
)

from ldlm_engine import (
    CheckpointError,
    ConfigError,
    LdlmError,
    RunConfig,
    RunDir,
    Trainer,
    load_run,
    load_tokenizer,
)


class Evil:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _last(run: Path) -> Path:
    name = json.loads((run / "checkpoints" / "last.json").read_text())["name"]
    return run / "checkpoints" / name


def _rehash(ck: Path, fname: str) -> None:
    """Rewrite meta.json's checksum for ``fname``, as an attacker who edits meta.json would."""
    meta = json.loads((ck / "meta.json").read_text())
    data = (ck / fname).read_bytes()
    meta["files"][fname] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ck / "meta.json").write_text(json.dumps(meta))


def _edit_meta(ck: Path, **changes) -> None:
    meta = json.loads((ck / "meta.json").read_text())
    meta.update(changes)
    (ck / "meta.json").write_text(json.dumps(meta))


# --------------------------------------------------------------------------- code execution


@pytest.mark.parametrize(
    "target",
    ["model.safetensors", "state.safetensors", "model.safetensors:torch.save", "tokenizer.json"],
)
def test_pickles_are_refused_without_running(run: Path, tmp_path: Path, capsys, target) -> None:
    marker = tmp_path / "pwned"
    fname, _, how = target.partition(":")
    if fname == "tokenizer.json":
        path = run / fname
    else:
        path = _last(run) / fname
    if how == "torch.save":
        torch.save({"w": torch.zeros(2), "x": Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"weights": Evil(marker)}))
    if fname != "tokenizer.json":
        _rehash(_last(run), fname)  # checksums match: only the parser stands in the way

    with pytest.raises(CheckpointError) as info:
        load_run("victim", device="cpu")
    assert "\n" not in str(info.value) and fname in str(info.value)
    code, _, err = cli(capsys, "generate", "victim", "--no-animate", "--device", "cpu")
    assert code == 2
    assert_one_error_line(err, fname)
    with pytest.raises(CheckpointError):  # and resuming refuses it too
        cfg = RunConfig.from_dict(RunDir.open("victim").read_config())
        Trainer(cfg, run_dir=RunDir.open("victim"), resume=True).setup()
    assert not marker.exists()


# --------------------------------------------------------------------------- damage


def _truncate(ck: Path) -> None:
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_byte(ck: Path) -> None:
    f = ck / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _huge_header(ck: Path) -> None:
    """A header claiming a 10**6 x 10**6 tensor (4 TB), with checksums to match."""
    f = ck / "model.safetensors"
    header = json.dumps(
        {
            "tok_emb.weight": {
                "dtype": "F32",
                "shape": [10**6, 10**6],
                "data_offsets": [0, 4 * 10**12],
            }
        }
    ).encode()
    f.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    _rehash(ck, "model.safetensors")


def _wrong_shapes(ck: Path) -> None:
    """Valid safetensors, right checksums, tensors of the wrong shape for the model."""
    from safetensors.torch import save_file

    save_file({"tok_emb.weight": torch.zeros(3, 3)}, str(ck / "model.safetensors"))
    _rehash(ck, "model.safetensors")


def _meta_garbage(ck: Path) -> None:
    (ck / "meta.json").write_bytes(b"\x00\xff not json")


def _meta_deep(ck: Path) -> None:
    (ck / "meta.json").write_text("[" * 100_000)


def _meta_bad_types(ck: Path) -> None:
    _edit_meta(ck, step="lots", tied=[1, 2], optimizer={"__items__": 5})


def _meta_no_files(ck: Path) -> None:
    _edit_meta(ck, files=None)


def _last_traversal(ck: Path) -> None:
    """last.json points outside the run, and every real checkpoint is truncated."""
    (ck.parent / "last.json").write_text(json.dumps({"name": "../../../../etc", "step": 9}))
    for p in ck.parent.glob("step-*"):
        _truncate(p)


def _tokenizer_deep(ck: Path) -> None:
    (ck.parent.parent / "tokenizer.json").write_text('{"a":' * 100_000)


def _tokenizer_huge_vocab(ck: Path) -> None:
    chars = [chr(0x4E00 + i) for i in range(20_000)]
    (ck.parent.parent / "tokenizer.json").write_text(
        json.dumps({"kind": "char", "format_version": 1, "chars": chars})
    )


DAMAGE = {
    "truncated": (_truncate, "truncated"),
    "flipped-byte": (_flip_byte, "sha256"),
    "huge-header": (_huge_header, "safetensors"),
    "wrong-shapes": (_wrong_shapes, "does not fit"),
    "meta-garbage": (_meta_garbage, "meta.json"),
    "meta-deep-nesting": (_meta_deep, "meta.json"),
    "meta-bad-types": (_meta_bad_types, "damaged"),
    "meta-no-files": (_meta_no_files, "lists no files"),
    "last-json-traversal": (_last_traversal, "truncated"),
    "tokenizer-deep-nesting": (_tokenizer_deep, "tokenizer"),
    "tokenizer-vocab-mismatch": (_tokenizer_huge_vocab, "tokens but the model expects"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_run_is_one_clear_error(run: Path, capsys, kind: str) -> None:
    damage, fragment = DAMAGE[kind]
    damage(_last(run))
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(LdlmError) as info:
            load_run("victim", device="cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert "\n" not in msg and fragment in msg, msg
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MB allocated to refuse a {kind} checkpoint"
    assert time.perf_counter() - t0 < 10
    code, out, err = cli(capsys, "generate", "victim", "--no-animate", "--device", "cpu")
    assert code == 2 and not out
    assert_one_error_line(err, fragment)


def test_tampered_checkpoint_through_the_executable(run: Path, ldlm_home: Path) -> None:
    """`ldlm generate RUN` on a tampered checkpoint: exit 2, one line, no traceback."""
    _flip_byte(_last(run))
    res = run_ldlm("generate", "victim", "--no-animate", "--device", "cpu", home=ldlm_home)
    assert res.returncode == 2, res.stderr
    assert_one_error_line(res.stderr, "damaged or altered")
    assert not res.stdout


def test_hostile_run_does_not_break_runs_list(run: Path, capsys) -> None:
    """One run with a hostile config.json must not stop `ldlm runs list` from listing others."""
    shutil.copytree(run, run.parent / "bystander")
    (run / "config.json").write_text("[" * 100_000)
    code, out, err = cli(capsys, "runs", "list")
    assert code == 0, err
    assert "bystander" in out and "victim" in out
    code, _, err = cli(capsys, "generate", "victim", "--no-animate")
    assert code == 2
    assert_one_error_line(err, "config.json")


# --------------------------------------------------------------------------- absurd configs

ABSURD = {
    "negative-d-model": {"model": {"d_model": -64}},
    "zero-layers": {"model": {"n_layers": 0}},
    "huge-vocab": {"model": {"vocab_size": 10**12}},
    "seq-len-1e9": {"model": {"seq_len": 10**9}},
    "d-model-1e7": {"model": {"d_model": 10**7, "n_heads": 1}},
    "d-ff-1e12": {"model": {"d_ff": 10**12}},
    "layers-1e6": {"model": {"n_layers": 10**6}},
    "every-limit-at-once": {
        "model": {
            "d_model": 16_384,
            "n_heads": 64,
            "n_layers": 256,
            "d_ff": 131_072,
            "seq_len": 65_536,
            "vocab_size": 1_000_000,
        }
    },
    "negative-batch": {"train": {"batch_size": -1}},
    "huge-batch": {"train": {"batch_size": 10**9}},
    "nan-lr": {"train": {"lr": float("nan")}},
    "inf-dropout": {"model": {"dropout": float("inf")}},
    "string-size": {"model": {"d_model": "64"}},
    "bool-size": {"model": {"n_layers": True}},
    "section-not-object": {"model": [1, 2, 3]},
    "unknown-key": {"model": {"d_modle": 64}},
    "timesteps-1e9": {"process": {"timesteps": 10**9}},
    "sample-length-1e9": {"sample": {"length": 10**9}},
    "version-999": {"version": 999},
}


@pytest.mark.parametrize("kind", list(ABSURD))
def test_absurd_config_rejected_before_allocating(kind: str) -> None:
    d = json.loads(json.dumps(ABSURD[kind]))  # exactly what a config.json would give
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            RunConfig.from_dict(d)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 0.5
    assert peak < 2**20, f"{peak} bytes allocated while validating"
    assert "\n" not in str(info.value)
    if kind == "every-limit-at-once":  # each value is allowed alone; together, terabytes
        assert "too large" in str(info.value)


def test_absurd_config_json_in_a_run(run: Path, capsys) -> None:
    """Through load_run and `ldlm generate`: rejected before the model is built."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"].update(seq_len=10**9, d_model=10**7)
    (run / "config.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"seq_len|d_model"):
        load_run("victim", device="cpu")
    assert time.perf_counter() - t0 < 1
    code, _, err = cli(capsys, "generate", "victim", "--no-animate")
    assert code == 2
    assert_one_error_line(err, "must be in")


def test_tokenizer_file_claims_are_bounded(tmp_path: Path) -> None:
    """A tokenizer.json listing more than MAX_VOCAB entries is refused, quickly."""
    path = tmp_path / "tokenizer.json"
    words = [f"w{i}" for i in range(1_000_001)]
    path.write_text(json.dumps({"kind": "word", "format_version": 1, "vocab": words}))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="larger than"):
        load_tokenizer(path)
    assert time.perf_counter() - t0 < 5
