"""Checkpoints: exact resume, tamper/pickle refusal, crash safety (incl. real SIGKILLs)."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ldlm_engine.checkpoint import (
    FORMAT_VERSION,
    atomic_write_bytes,
    atomic_write_text,
    check_compatible,
    checkpoint_meta,
    config_fingerprint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from ldlm_engine.errors import CheckpointError
from ldlm_engine.presets import get_preset

ENGINE_DIR = Path(__file__).resolve().parents[1] / "ldlm_engine"


class Tiny(nn.Module):
    """Embedding + MLP + head tied to the embedding (the tied-weight case safetensors rejects)."""

    def __init__(self, vocab: int = 11, d: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mlp = nn.Sequential(nn.Linear(d, 16), nn.GELU(), nn.Linear(16, d))
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp(self.emb(x)))


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (4, 5), generator=g)
    loss = nn.functional.cross_entropy(model(x).reshape(-1, 11), x.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()


def _make(seed: int) -> tuple[Tiny, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    return model, opt


def _save(d: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, **kw) -> Path:
    return save_checkpoint(
        d,
        model_state=model.state_dict(),
        optimizer_state=opt.state_dict(),
        extra_tensors=kw.pop("extra", {"rng.torch": torch.get_rng_state()}),
        meta={"step": step, "epoch": 0.5, "data_position": {"epoch": 0, "index": 3}, **kw},
    )


def test_round_trip_resumes_identically(tmp_path: Path) -> None:
    model, opt = _make(0)
    for s in range(2):
        _train_step(model, opt, s)
    path = _save(tmp_path, model, opt, 2)
    assert path.name == "step-00000002"
    assert {p.name for p in path.iterdir()} == {
        "model.safetensors",
        "state.safetensors",
        "meta.json",
    }
    assert json.loads((tmp_path / "last.json").read_text()) == {"name": "step-00000002", "step": 2}

    ck = load_checkpoint(tmp_path)
    assert ck.step == 2 and ck.meta["data_position"] == {"epoch": 0, "index": 3}
    assert ck.meta["format_version"] == FORMAT_VERSION
    model2, opt2 = _make(1)  # different init: everything must come from the checkpoint
    model2.load_state_dict(ck.model_state, strict=True)
    opt2.load_state_dict(ck.optimizer_state)
    assert model2.head.weight is model2.emb.weight
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95)

    _train_step(model, opt, 7)
    _train_step(model2, opt2, 7)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_rng_and_extra_tensors_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(123)
    extra = {"rng.torch": torch.get_rng_state(), "rng.gen": g.get_state(), "pos": torch.arange(3)}
    model, opt = _make(0)
    _save(tmp_path, model, opt, 5, extra=extra)
    ck = load_checkpoint(tmp_path, "step-00000005")
    assert set(ck.extra_tensors) == set(extra)
    for k, v in extra.items():
        assert ck.extra_tensors[k].dtype == v.dtype and torch.equal(ck.extra_tensors[k], v)
    g2 = torch.Generator()
    g2.set_state(ck.extra_tensors["rng.gen"])
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=g2))
    assert load_checkpoint(tmp_path, "5").step == 5


def test_tampered_byte_is_refused(tmp_path: Path) -> None:
    model, opt = _make(0)
    path = _save(tmp_path, model, opt, 1)
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as e:
        load_checkpoint(tmp_path)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_truncated_and_missing_files_are_refused(tmp_path: Path) -> None:
    model, opt = _make(0)
    path = _save(tmp_path, model, opt, 1)
    f = path / "state.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path)
    f.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(tmp_path, path.name)


def test_wrong_format_version_is_refused(tmp_path: Path) -> None:
    model, opt = _make(0)
    path = _save(tmp_path, model, opt, 1)
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 98
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(tmp_path)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
def test_pickle_is_refused_without_running_it(tmp_path: Path, kind: str) -> None:
    model, opt = _make(0)
    ckdir = tmp_path / "ck"
    path = _save(ckdir, model, opt, 1)
    marker = tmp_path / "pwned"
    f = path / "model.safetensors"
    if kind == "pickle":
        f.write_bytes(pickle.dumps({"w": _Evil(marker)}))
    else:
        torch.save({"w": torch.zeros(2), "x": _Evil(marker)}, f)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(ckdir)
    # Even with matching checksums (an attacker rewrote meta.json) the parser refuses it.
    import hashlib

    meta = json.loads((path / "meta.json").read_text())
    meta["files"]["model.safetensors"] = {
        "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
        "bytes": f.stat().st_size,
    }
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(ckdir)
    assert not marker.exists()


def test_missing_or_corrupt_last_json_falls_back(tmp_path: Path) -> None:
    model, opt = _make(0)
    for s in (1, 2, 3):
        _save(tmp_path, model, opt, s)
    last = tmp_path / "last.json"
    last.unlink()
    assert load_checkpoint(tmp_path).step == 3
    last.write_text('{"name": "step-000')
    assert load_checkpoint(tmp_path).step == 3
    last.write_text(json.dumps({"name": "step-00000009", "step": 9}))  # dangling
    assert load_checkpoint(tmp_path).step == 3
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing-here")


def test_crash_leftovers_leave_previous_checkpoint_loadable(tmp_path: Path) -> None:
    model, opt = _make(0)
    _save(tmp_path, model, opt, 1)
    # A writer died while building step 2 (temp folder) ...
    tmp = tmp_path / ".tmp-step-00000002-999999999"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\x00" * 10)
    # ... and something left a half-written step-3 folder (no meta.json) and a damaged step-4.
    (tmp_path / "step-00000003").mkdir()
    (tmp_path / "step-00000003" / "model.safetensors").write_bytes(b"partial")
    p4 = _save(tmp_path, model, opt, 4)
    (tmp_path / "last.json").write_text(json.dumps({"name": "step-00000001", "step": 1}))
    (p4 / "model.safetensors").write_bytes(b"oops")
    assert load_checkpoint(tmp_path).step == 1
    (tmp_path / "last.json").unlink()
    assert load_checkpoint(tmp_path).step == 1  # step-4 fails verification, step-3 incomplete
    removed = prune_checkpoints(tmp_path, keep=5)
    assert tmp in removed and not tmp.exists()


def test_resaving_same_step_replaces_it(tmp_path: Path) -> None:
    model, opt = _make(0)
    _save(tmp_path, model, opt, 1)
    _train_step(model, opt, 0)
    _save(tmp_path, model, opt, 1)
    ck = load_checkpoint(tmp_path)
    assert torch.equal(ck.model_state["mlp.0.weight"], model.mlp[0].weight.detach())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_prune_keeps_newest_and_last(tmp_path: Path) -> None:
    model, opt = _make(0)
    for s in range(1, 6):
        _save(tmp_path, model, opt, s)
    own_tmp = tmp_path / f".tmp-step-00000009-{os.getpid()}"
    own_tmp.mkdir()
    prune_checkpoints(tmp_path, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert own_tmp.exists()  # a live writer's (ours) temp folder is left alone
    (tmp_path / "last.json").write_text(json.dumps({"name": "step-00000004", "step": 4}))
    _save(tmp_path, model, opt, 6)
    (tmp_path / "last.json").write_text(json.dumps({"name": "step-00000004", "step": 4}))
    prune_checkpoints(tmp_path, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]


def test_config_fingerprint_and_compatibility() -> None:
    cfg = get_preset("tiny").to_dict()
    meta = checkpoint_meta(cfg, step=3, epoch=0.1)
    assert meta["config_fingerprint"] == config_fingerprint(cfg)
    other = get_preset("tiny").to_dict()
    other["train"]["lr"] = 0.5  # training-only knob: still compatible
    other["model"]["dropout"] = 0.2
    check_compatible(meta, other)
    other["model"]["d_model"] = 128
    with pytest.raises(CheckpointError, match=r"different model configuration.*d_model"):
        check_compatible(meta, other)
    check_compatible({"step": 1}, other)  # nothing stored, nothing to compare


def test_atomic_write_helpers(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    atomic_write_text(p, "hello")
    atomic_write_bytes(p, b"bye")
    assert p.read_bytes() == b"bye"
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


# One helper process imports torch once, then forks a fresh saver per round; the test process
# SIGKILLs each saver at a random moment (a fork per round keeps this test to ~3 s, not ~10).
_SAVER = textwrap.dedent(
    """
    import os, sys, types
    pkg = types.ModuleType("ldlm_engine"); pkg.__path__ = [sys.argv[1]]
    sys.modules["ldlm_engine"] = pkg  # skip the package __init__: only checkpoint is needed
    import torch
    torch.set_num_threads(1)  # no thread pools, so forking is safe
    from ldlm_engine.checkpoint import save_checkpoint, prune_checkpoints
    d = sys.argv[2]
    model = torch.nn.Linear(128, 128)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 128)).sum().backward(); opt.step()
    for line in sys.stdin:
        step = int(line)
        pid = os.fork()
        if pid == 0:
            first = True
            while True:
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float(step))
                save_checkpoint(d, model_state=model.state_dict(),
                                optimizer_state=opt.state_dict(),
                                extra_tensors={"rng.torch": torch.get_rng_state()},
                                meta={"step": step})
                prune_checkpoints(d, keep=2)
                if first:
                    print(os.getpid(), flush=True); first = False
                step += 1
        os.waitpid(pid, 0)
        print("reaped", flush=True)
    """
)


def test_sigkill_during_save_loop_leaves_loadable_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(0)
    step = 1
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(ENGINE_DIR), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        for _ in range(5):
            proc.stdin.write(f"{step}\n")
            proc.stdin.flush()
            saver = int(proc.stdout.readline())
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(saver, signal.SIGKILL)
            assert proc.stdout.readline().strip() == "reaped"
            ck = load_checkpoint(tmp_path)
            assert ck.step >= step
            for v in ck.model_state.values():  # weights belong to the step the meta names
                assert torch.all(v == float(ck.step))
            step = ck.step + 1
        assert len(list_checkpoints(tmp_path)) <= 3
    finally:
        proc.kill()
        proc.wait()
