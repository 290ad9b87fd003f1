"""Hostile runs, part two: hard links, typed checkpoint metadata, absurd numbers, FIFOs.

Each test here failed on main 93b737b: a hard link let a resume write a file outside its run,
a mistyped or altered checkpoint gave a traceback, an absurd number hung or ran out of memory,
and a hostile app-state file hung the app's start. Plus the three figures that were off.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import threading
from pathlib import Path

import pytest
import torch
from conftest import make_corpus_text, run_many
from engine_helpers import TEXT, tiny_config
from reliability_helpers import (  # noqa: F401
    assert_one_error_line,
    cli,
    one_torch_thread,
    run,
    train_run,
    trained,
)
from safetensors.torch import load_file, save_file
from test_cached_sampling import Watch, full, random_model
from test_cached_sampling import run as sample

from ldlm_engine import DataError, RunDir, RunError, Trainer, load_corpus, load_run
from ldlm_engine.checkpoint import list_checkpoints, prune_checkpoints


def _last(run: Path) -> Path:
    name = json.loads((run / "checkpoints" / "last.json").read_text())["name"]
    return run / "checkpoints" / name


def _fingerprint(root: Path) -> dict[str, tuple]:
    """Every file under ``root``: bytes digest, size and mtime (what a write would change)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (digest, st.st_size, st.st_mtime_ns)
    return out


def _snapshot_by_links(src: Path, dst: Path) -> None:
    """``cp -al``: the same folders, every file a hard link to the original's."""
    for dirpath, _, names in os.walk(src):
        d = dst / Path(dirpath).relative_to(src)
        d.mkdir(parents=True, exist_ok=True)
        for n in names:
            os.link(Path(dirpath) / n, d / n)


# --------------------------------------------------------------------------- hard links


def test_hard_linked_snapshot_resumes_into_its_own_files(run: Path, capsys) -> None:
    snap = run.parent / "snap"
    _snapshot_by_links(run, snap)
    before = _fingerprint(run)
    code, _, err = cli(capsys, "train", "--resume", "snap", "--max-steps", "6")
    assert code == 0, err
    assert _fingerprint(run) == before  # the original: same bytes, same mtimes
    assert RunDir.open(run).latest_checkpoint_step() == 4
    snap_rd = RunDir.open(snap)
    assert snap_rd.latest_checkpoint_step() == 6
    assert max(e.get("step", 0) for e in snap_rd.read_metrics()) == 6
    for name in ("lock", "metrics.jsonl", "summary.json", "status.json"):
        assert os.stat(snap / name).st_nlink == 1, name  # the snapshot's own inode now


def test_lock_and_metrics_hard_linked_outside_are_never_written(run: Path, tmp_path: Path) -> None:
    outside = {}
    for name in ("lock", "metrics.jsonl"):
        target = tmp_path / f"precious-{name}"
        target.write_bytes((run / name).read_bytes() + b"the user's own bytes\n")
        os.unlink(run / name)
        os.link(target, run / name)
        outside[target] = target.read_bytes()
    rd = RunDir.open(run)
    tr = Trainer(
        tiny_config("mask", max_steps=6, checkpoint_every=2),
        run_dir=rd,
        resume=True,
        text=TEXT,
    )
    try:
        assert tr.run() == "finished"
    finally:
        rd.close()
    for target, data in outside.items():
        assert target.read_bytes() == data, target
    assert b"the user's own bytes" in (run / "metrics.jsonl").read_bytes()  # copied, kept
    assert any(e.get("step") == 6 for e in RunDir.open(run).read_metrics())


def test_a_hard_linked_lock_still_keeps_a_second_trainer_out(run: Path, tmp_path: Path) -> None:
    first = RunDir.open(run)
    first.acquire_lock()
    try:
        os.link(run / "lock", tmp_path / "lock-link")  # the live lock gains a second name
        with pytest.raises(RunError, match="being trained by another process"):
            RunDir.open(run).acquire_lock()
    finally:
        first.close()


def test_open_own_copies_hard_links_and_refuses_links_and_fifos(tmp_path: Path) -> None:
    from ldlm_engine.fileio import open_own

    outside = tmp_path / "outside.log"
    outside.write_bytes(b"old\n")
    log = tmp_path / "train.log"
    os.link(outside, log)
    fd = open_own(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, b"new\n")
    finally:
        os.close(fd)
    assert outside.read_bytes() == b"old\n"
    assert log.read_bytes() == b"old\nnew\n" and os.stat(log).st_nlink == 1
    os.unlink(log)
    log.symlink_to(outside)
    with pytest.raises(OSError, match="symbolic link"):
        open_own(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.unlink(log)
    os.mkfifo(log)
    with pytest.raises(OSError, match="not a regular file"):
        open_own(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def test_detach_with_a_symlinked_train_log_is_one_line(run: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.log"
    target.write_text("not ldlm's\n")
    (run / "train.log").symlink_to(target)
    config = (run / "config.json").read_bytes()
    home = run.parent.parent
    res = run_many(
        {"detach": (("train", "--resume", "victim", "--max-steps", "8", "--detach"), home)}
    )
    p = res["detach"]
    assert p.returncode == 2, p.stderr
    assert_one_error_line(p.stderr, "train.log", "symbolic link")
    assert target.read_text() == "not ldlm's\n"
    assert (run / "config.json").read_bytes() == config  # refused before anything changed


# --------------------------------------------------------------------------- checkpoints


def _edit_meta(ck: Path, **changes) -> None:
    meta = json.loads((ck / "meta.json").read_text())
    meta.update(changes)
    (ck / "meta.json").write_text(json.dumps(meta))


def _rewrite(ck: Path, fname: str, change) -> None:
    """Alter a checkpoint's tensors and recompute meta.json's checksum to match."""
    tensors = load_file(str(ck / fname))
    change(tensors)
    save_file(tensors, str(ck / fname))
    data = (ck / fname).read_bytes()
    meta = json.loads((ck / "meta.json").read_text())
    meta["files"][fname] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ck / "meta.json").write_text(json.dumps(meta))


def _nan_weight(t: dict) -> None:
    name = next(k for k, v in t.items() if v.is_floating_point())
    t[name] = t[name].clone()
    t[name].view(-1)[0] = math.nan


def _wrong_dtype(t: dict) -> None:
    name = next(k for k, v in t.items() if v.is_floating_point())
    t[name] = t[name].double()


def _bad_optimizer_moment(t: dict) -> None:
    name = next(k for k in t if k.startswith("opt.") and t[k].dim() > 0)
    t[name] = torch.zeros(3)


META_DAMAGE = {
    "data_position": {"data_position": "x"},
    "data_position-fields": {"data_position": {"epoch": "x", "index": -5}},
    "optimizer": {"optimizer": "garbage"},
    "optimizer-groups": {"optimizer": {"state": {}, "param_groups": [{"params": "x"}]}},
    "elapsed_s": {"elapsed_s": "x"},
    "epoch": {"epoch": math.inf},
    "tokens_seen": {"tokens_seen": -1},
    "best_val": {"best_val_bits_per_char": "low"},
    "extra_keys": {"extra_keys": 5},
}
TENSOR_DAMAGE = {
    "no-rng-noise": ("state.safetensors", lambda t: t.pop("extra.rng_noise")),
    "extra-model-tensor": ("model.safetensors", lambda t: t.update(planted=torch.zeros(2))),
    "nan-weight": ("model.safetensors", _nan_weight),
    "wrong-dtype": ("model.safetensors", _wrong_dtype),
    "optimizer-moment-shape": ("state.safetensors", _bad_optimizer_moment),
}


def _assert_damaged_everywhere(run: Path, capsys, *fragments: str) -> None:
    """Resume, generate and eval each end in one line (naming the intact step-2)."""
    for args in (
        ("train", "--resume", "victim", "--max-steps", "8"),
        ("generate", "victim", "--no-animate", "--length", "8", "--device", "cpu"),
        ("eval", "victim", "--max-tokens", "64", "--device", "cpu"),
    ):
        code, _, err = cli(capsys, *args)
        if args[0] != "train" and code == 0:
            continue  # damage only the trainer reads (optimizer, RNG, data position)
        assert code == 2, (args, err)
        assert_one_error_line(err, *fragments)


@pytest.mark.parametrize("kind", list(META_DAMAGE))
def test_mistyped_checkpoint_metadata_is_damage(run: Path, capsys, kind: str) -> None:
    _edit_meta(_last(run), **META_DAMAGE[kind])
    _assert_damaged_everywhere(run, capsys, "step-00000004", "step-00000002")


@pytest.mark.parametrize("kind", list(TENSOR_DAMAGE))
def test_altered_checkpoint_tensors_are_damage(run: Path, capsys, kind: str) -> None:
    fname, change = TENSOR_DAMAGE[kind]
    _rewrite(_last(run), fname, change)
    _assert_damaged_everywhere(run, capsys, "step-00000004")


def test_damaged_newest_checkpoint_falls_back_when_no_pointer(run: Path) -> None:
    """Without last.json the newest checkpoint that verifies loads, with a note."""
    _rewrite(_last(run), "model.safetensors", _nan_weight)
    os.unlink(run / "checkpoints" / "last.json")
    loaded = load_run("victim", device="cpu")
    assert loaded.step == 2 and "NaN" in loaded.note and "step-00000002" in loaded.note


# --------------------------------------------------------------------------- absurd numbers


def test_absurd_numbers_are_one_line(run: Path, tmp_path: Path, corpus_file: Path, capsys) -> None:
    home = run.parent.parent
    huge = "99999999999999999999"
    b0 = tmp_path / "b0.toml"
    b0.write_text("[process]\nblock_size = 0\n")
    sparse = tmp_path / "sparse.txt"
    with open(sparse, "wb") as f:
        f.truncate(10 << 30)  # 10 GB that cost no disk
    # The reported defects, through the real executable (a hang, tracebacks, MemoryError) ...
    jobs = {
        "generate-num": (("generate", "victim", "--num", huge, "--length", "1"), "--num must"),
        "eval-samples": (("eval", "victim", "--samples", huge), "--samples must be"),
        "run-dir-nouser": (
            ("train", "--data", corpus_file, "--run-dir", "~nouser-ldlm/x"),
            "cannot expand ~nouser-ldlm",
        ),
        "sparse-corpus": (("train", "--data", sparse), "more than the corpus limit"),
    }
    res = run_many({k: (args, home) for k, (args, _) in jobs.items()}, parallel=4)
    for key, (_, fragment) in jobs.items():
        assert res[key].returncode == 2, (key, res[key].stderr)
        assert_one_error_line(res[key].stderr, fragment)
    # ... and their neighbours, in this process (the same entry point, no torch import each).
    for args, fragment in (
        (("eval", "victim", "--samples", "1000000"), "--samples must be"),
        (("generate", "victim", "--steps", huge), "sample.steps must be"),
        (("generate", "victim", "--length", huge), "sample.length must"),
        (("train", "--data", corpus_file, "--process", "block", "--config", b0), "block_size"),
        (("data", "inspect", sparse), "--max-corpus-mb"),
    ):
        code, _, err = cli(capsys, *args)
        assert code == 2, (args, err)
        assert_one_error_line(err, fragment)


def test_corpus_size_limit_is_stated_and_can_be_raised(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_text("abc def\n" * (300 * 1024))  # 2.4 MiB
    with pytest.raises(DataError, match=r"is 2 MiB, more than the corpus limit of 1 MiB"):
        load_corpus(str(big), max_mb=1)
    assert len(load_corpus(str(big), max_mb=3).text) == big.stat().st_size
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text("x" * (400 * 1024))
    with pytest.raises(DataError, match="corpus limit of 1 MiB"):
        load_corpus(str(folder), max_mb=1)


def test_a_resume_can_raise_the_corpus_limit(run: Path, tmp_path: Path) -> None:
    from ldlm_engine import plan_resume

    grown = tmp_path / "grown.txt"
    grown.write_text("abc def\n" * (300 * 1024))  # 2.4 MiB
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"].update(source=str(grown), max_corpus_mb=1)
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="corpus limit of 1 MiB; raise it with --max-corpus-mb"):
        plan_resume("victim", max_steps=8)
    plan = plan_resume("victim", max_steps=8, max_corpus_mb=3)
    assert plan.config.data.max_corpus_mb == 3 and len(plan.text) == grown.stat().st_size


# --------------------------------------------------------------------------- the app's state


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dev-urandom", "sparse"])
def test_hostile_app_state_file_reads_as_empty(tmp_path: Path, monkeypatch, kind: str) -> None:
    from ldlm_tui.state import load_state

    monkeypatch.setenv("LDLM_STATE_DIR", str(tmp_path))
    path = tmp_path / "tui-state.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.write(b'{"theme": "')
            f.truncate(4 << 30)
    else:
        path.symlink_to("/dev/zero" if kind == "dev-zero" else "/dev/urandom")
    result: list = []
    reader = threading.Thread(target=lambda: result.append(load_state()), daemon=True)
    reader.start()
    reader.join(60)  # a guard against a hang, not a speed check
    assert result == [{}]


# --------------------------------------------------------------------------- pruning


def test_pruning_deletes_only_ldlm_files_in_a_step_folder(run: Path) -> None:
    ck_dir = run / "checkpoints"
    old = ck_dir / "step-00000002"
    (old / "my-notes.txt").write_text("the user's own notes\n")
    removed = prune_checkpoints(ck_dir, keep=1)
    assert old in removed
    assert (old / "my-notes.txt").read_text() == "the user's own notes\n"
    assert sorted(p.name for p in old.iterdir()) == ["my-notes.txt"]
    assert [s for s, _ in list_checkpoints(ck_dir)] == [4]  # no longer a checkpoint
    (old / "my-notes.txt").unlink()
    prune_checkpoints(ck_dir, keep=1)
    assert old.exists()  # an empty folder that is no checkpoint is not pruning's business


def test_pruning_removes_an_empty_step_folder(run: Path) -> None:
    removed = prune_checkpoints(run / "checkpoints", keep=1)
    assert [p.name for p in removed] == ["step-00000002"]
    assert not (run / "checkpoints" / "step-00000002").exists()


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize("kind", ["mask", "uniform"])
def test_prompt_unseen_counts_exactly_the_tokens_never_read(kind: str) -> None:
    model, proc, tok = random_model(kind)
    prompt, length = TEXT[:100], 10
    watch = Watch(model)
    frames = sample(model, proc, tok, prompt, length=length, seed=3)
    unseen = frames[-1].prompt_unseen
    assert 0 < unseen < 100
    assert watch.lengths[0] == 100 - unseen + length  # the first window starts at `unseen`
    changed = "".join("y" if c == "x" else "x" for c in prompt[:unseen]) + prompt[unseen:]
    again = sample(model, proc, tok, changed, length=length, seed=3)
    assert full(again)[100:] == full(frames)[100:]  # the unseen tokens changed nothing


def test_epochs_are_exact_on_a_small_corpus() -> None:
    text = make_corpus_text(6000)
    cfg = tiny_config("mask", max_steps=None, epochs=20, log_every=1000)
    cfg.model.seq_len, cfg.train.batch_size = 64, 16
    tr = Trainer(cfg.validate(), text=text)
    assert tr.run() == "finished"
    windows = tr.batcher.n_windows
    assert windows % 16  # the last batch of the budget is a partial one
    assert tr.batcher.epoch == 20 and tr.batcher.epoch_progress == 20.0
    assert tr.batcher.windows_done == 20 * windows
