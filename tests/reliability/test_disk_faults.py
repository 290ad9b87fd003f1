"""Disk full, read-only and misplaced run directories: one clear error, earlier work intact.

Tests run as root in CI, where chmod stops nothing, so the faults are real kernel errors made
other ways: ``RLIMIT_FSIZE`` (writes past N bytes fail with EFBIG, as on a full disk),
``/dev/full`` (every write fails with ENOSPC), the immutable attribute (``chattr +i``: EPERM even
for root; chmod when not root), and a file where a folder should be.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ldlm_env
from engine_helpers import TEXT
from reliability_helpers import REPO, assert_one_error_line, cli, one_torch_thread, train_run  # noqa: F401

from ldlm_engine import CheckpointError, RunConfig, RunDir, Trainer
from ldlm_engine.checkpoint import list_checkpoints, load_checkpoint

# The child lowers its file-size limit right after its first checkpoint is announced, so the
# next checkpoint (a ~400 KB model file) cannot be written, as on a disk that just filled up.
_DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk sends no signal either
    from ldlm_engine import runs
    append = runs.RunDir.append_event
    def append_then_fill(self, event):
        append(self, event)
        if dict(event).get("event") == "checkpoint":
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    runs.RunDir.append_event = append_then_fill
    from ldlm_tui.cli import main
    main(sys.argv[1:])
    """
)


def test_disk_full_during_checkpoint_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    args = [
        "train", "--data", str(corpus), "--preset", "tiny", "--max-steps", "8",
        "--checkpoint-every", "2", "--eval-every", "0", "--sample-every", "0",
        "--seq-len", "32", "--batch-size", "4", "--device", "cpu", "--name", "full",
    ]  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-c", _DISK_FULL_CHILD, *args],
        env=ldlm_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert res.returncode == 2, res.stderr
    assert_one_error_line(res.stderr, "cannot write checkpoint step-00000004", "File too large")
    ckdir = home / "runs" / "full" / "checkpoints"
    ck = load_checkpoint(ckdir)  # the previous checkpoint is intact ...
    assert ck.step == 2
    assert [s for s, _ in list_checkpoints(ckdir)] == [2]
    assert not [p for p in ckdir.iterdir() if p.name.startswith(".tmp-")]  # ... and no debris
    run = RunDir(ckdir.parent)
    assert run.liveness() in ("failed", "dead")
    # Space is back: the run resumes from that checkpoint and finishes.
    cfg = RunConfig.from_dict(run.read_config())
    tr = Trainer(cfg, run_dir=run, resume=True, text=corpus.read_text())
    assert tr.run() == "finished" and tr.step == 8
    run.close()


_FULL_AT_START_CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk sends no signal either
    limit = int(os.environ["LDLM_TEST_FSIZE"])  # no file may grow past what metrics.jsonl has
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    from ldlm_tui.cli import main
    main(sys.argv[1:])
    """
)


def test_metrics_on_a_full_disk(ldlm_home: Path, tmp_path: Path) -> None:
    """The disk is full when a resumed run appends to metrics.jsonl: one line, exit 2.

    (A metrics.jsonl that is a symlink to /dev/full is refused outright: run files are never
    opened through a symlink, see test_run_boundary.)
    """
    _, rd, _, _ = train_run("devfull", steps=2)
    rd.close()
    env = ldlm_env(tmp_path)
    env["LDLM_HOME"] = str(ldlm_home)
    env["LDLM_TEST_FSIZE"] = str(rd.metrics_path.stat().st_size)
    res = subprocess.run(
        [sys.executable, "-c", _FULL_AT_START_CHILD, "train", "--resume", "devfull",
         "--max-steps", "4"],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert_one_error_line(res.stderr, "metrics.jsonl", "File too large")
    assert load_checkpoint(rd.checkpoints_dir).step == 2


@contextlib.contextmanager
def read_only(path: Path):
    """Make ``path`` (a folder) refuse new entries, for root too; skip where impossible."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    ok = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if not ok:
        pytest.skip("running as root without chattr +i: cannot make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _probe_read_only(tmp_path: Path) -> None:
    d = tmp_path / "probe"
    d.mkdir()
    with read_only(d), pytest.raises(OSError):
        (d / "x").write_text("x")


def test_read_only_checkpoints_mid_run(ldlm_home: Path, tmp_path: Path) -> None:
    """The checkpoints folder turns read-only after step 2: CheckpointError at step 4."""
    _probe_read_only(tmp_path)
    stack = contextlib.ExitStack()

    def freeze(event):
        if event.event == "checkpoint" and event.step == 2:
            stack.enter_context(read_only(RunDir.open("ro").checkpoints_dir))

    with stack, pytest.raises(CheckpointError) as info:
        train_run("ro", steps=6, sinks=[freeze])
    msg = str(info.value)
    assert "\n" not in msg and "cannot write checkpoint step-00000004" in msg
    assert "previous checkpoint is kept" in msg
    rd = RunDir.open("ro")
    assert load_checkpoint(rd.checkpoints_dir).step == 2
    assert rd.read_status()["state"] == "failed"


def test_read_only_run_directory_cli(ldlm_home: Path, tmp_path: Path, capsys) -> None:
    """`ldlm train --resume` on a read-only run: exit 2, one line; the checkpoint survives."""
    _probe_read_only(tmp_path)
    _, rd, _, _ = train_run("rorun", steps=2)
    before = (rd.path / "status.json").read_bytes()
    with read_only(rd.path):
        code, _, err = cli(capsys, "train", "--resume", "rorun", "--max-steps", "4")
    assert code == 2
    assert_one_error_line(err, str(rd.path))
    assert (rd.path / "status.json").read_bytes() == before
    assert load_checkpoint(rd.checkpoints_dir).step == 2


def test_checkpoints_path_is_a_file(ldlm_home: Path) -> None:
    """Something else sits where the checkpoints folder should be: one-line CheckpointError."""
    from engine_helpers import tiny_config

    cfg = tiny_config("mask", max_steps=4, checkpoint_every=2)
    rd = RunDir.create(cfg.to_dict(), name="clash")
    rd.checkpoints_dir.rmdir()
    rd.checkpoints_dir.write_text("not a folder")
    with pytest.raises(CheckpointError, match="cannot write checkpoint step-00000002") as info:
        Trainer(cfg, run_dir=rd, text=TEXT).run()
    assert "\n" not in str(info.value)
    assert rd.checkpoints_dir.read_text() == "not a folder"  # nothing of the user's destroyed
    rd.close()


def test_unwritable_ldlm_home_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    """LDLM_HOME is a file: `ldlm train` says so in one line (exit 2), creates nothing."""
    home = tmp_path / "home-is-a-file"
    home.write_text("oops")
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    monkeypatch.setenv("LDLM_HOME", str(home))
    code, _, err = cli(capsys, "train", "--data", corpus, "--preset", "tiny", "--max-steps", "2")
    assert code == 2
    assert_one_error_line(err, "cannot create a run", str(home))
    assert home.read_text() == "oops"
