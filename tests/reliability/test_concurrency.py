"""Concurrency: one trainer per run, followers agree, a live run cannot be deleted.

A real trainer runs in another process (the fault-injection benchmark's victim: a checkpoint
every step). While it is live, a second trainer (engine and CLI) is refused, deletion (engine
and CLI) is refused, and three followers — two threads here (standing in for the TUI and
`ldlm watch`) and one separate process that imports no torch — see the same events in the
same order, identical to the finished file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import ldlm_env
from engine_helpers import TEXT
from reliability_helpers import BENCHMARKS, REPO, assert_one_error_line, cli, one_torch_thread  # noqa: F401

from ldlm_engine import RunConfig, RunDir, RunError, Trainer, delete_run

FINAL = ("stopped", "finished", "failed")

# Follows metrics.jsonl from another process, importing only the torch-free part of the engine
# (as a light watcher would), and prints every event until the run ends.
_FOLLOWER = textwrap.dedent(
    """
    import json, sys, time, types
    pkg = types.ModuleType("ldlm_engine")
    pkg.__path__ = [sys.argv[1]]
    sys.modules["ldlm_engine"] = pkg
    from ldlm_engine.runs import MetricsFollower
    assert "torch" not in sys.modules
    follower = MetricsFollower(sys.argv[2])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for e in follower.poll():
            print(json.dumps(e, sort_keys=True), flush=True)
            if e.get("event") == "status" and e.get("state") in ("stopped", "finished", "failed"):
                sys.exit(0)
        time.sleep(0.01)
    sys.exit(3)
    """
)


def _follow(run: RunDir, out: list, stop: threading.Event) -> None:
    follower = run.metrics_follower()
    while not stop.is_set():
        for e in follower.poll():
            out.append(json.dumps(e, sort_keys=True))
            if e.get("event") == "status" and e.get("state") in FINAL:
                return
        time.sleep(0.01)


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A trainer process on run ``fi`` (LDLM_HOME shared with this test), killed at teardown."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LDLM_HOME", str(home))
    proc = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / "fault_injection.py"), "--child", str(home)],
        env=ldlm_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        yield proc, home / "runs" / "fi"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_one_trainer_per_run_followers_agree_and_live_runs_are_kept(live, capsys) -> None:
    proc, path = live
    _wait(lambda: (path / "config.json").exists(), 120, "the run directory", proc)
    other = subprocess.Popen(
        [sys.executable, "-c", _FOLLOWER, str(REPO / "ldlm_engine"), str(path / "metrics.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = RunDir(path)
    seen: list[list[str]] = [[], []]
    stop = threading.Event()
    threads = [threading.Thread(target=_follow, args=(run, s, stop), daemon=True) for s in seen]
    for t in threads:
        t.start()
    try:
        _wait(lambda: run.latest_checkpoint_step() is not None, 120, "a checkpoint", proc)
        assert run.liveness() == "live"
        size = run.metrics_path.stat().st_size

        # A second trainer, through the engine and through the CLI, is refused.
        cfg = RunConfig.from_dict(run.read_config())
        with pytest.raises(RunError, match="being trained by another process"):
            Trainer(cfg, run_dir=RunDir(path), resume=True, text=TEXT).run()
        code, _, err = cli(capsys, "train", "--resume", path, "--max-steps", "5000")
        assert code == 2
        assert_one_error_line(err, "being trained")

        # Deleting the live run, through the engine and through the CLI, is refused.
        with pytest.raises(RunError, match="live"):
            delete_run(path)
        with pytest.raises(RunError, match="live"):
            delete_run(path, force=True)
        code, _, err = cli(capsys, "runs", "rm", path, "--yes")
        assert code == 2
        assert_one_error_line(err, "live")
        code, _, err = cli(capsys, "runs", "rm", path, "--yes", "--force")
        assert code == 2
        # Nor can a new run take its name.
        with pytest.raises(RunError, match="already exists"):
            RunDir.create(cfg.to_dict(), name="fi")
        assert (path / "config.json").is_file() and run.liveness() == "live"
        assert run.metrics_path.stat().st_size >= size  # the live trainer kept writing

        run.request("stop")  # as `ldlm runs stop` does
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0, err
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        if other.poll() is None:
            other.kill()
            other.wait()
    final = [json.dumps(e, sort_keys=True) for e in run.read_metrics()]
    assert seen[0] == seen[1] == out.splitlines() == final
    kinds = {json.loads(e)["event"] for e in final}
    assert {"status", "step", "checkpoint"} <= kinds
    assert json.loads(final[-1])["state"] == "stopped"
    assert run.liveness() == "stopped"
    delete_run(path)  # once it has stopped, it can go
    assert not path.exists()
