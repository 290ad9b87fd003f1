"""Run directories: naming, cross-process lock/liveness, metrics tailing, control, discovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ldlm_engine import runs
from ldlm_engine.errors import RunError
from ldlm_engine.events import EvalEvent, StatusEvent, StepEvent
from ldlm_engine.runs import MetricsFollower, RunDir, delete_run, ldlm_home, list_runs, resolve_run

ENGINE_DIR = Path(__file__).resolve().parents[1] / "ldlm_engine"
CFG = {"preset": "tiny", "process": {"kind": "mask"}, "model": {"d_model": 64}}

# Child processes import only ldlm_engine.runs (no torch, no package __init__): fast to start.
_PRELUDE = textwrap.dedent(
    """
    import sys, time, types
    pkg = types.ModuleType("ldlm_engine"); pkg.__path__ = [sys.argv[1]]
    sys.modules["ldlm_engine"] = pkg
    from ldlm_engine.runs import RunDir
    run = RunDir(sys.argv[2])
    """
)


def _spawn(body: str, run_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(body), str(ENGINE_DIR), str(run_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_ldlm_home_respects_env(home: Path) -> None:
    assert ldlm_home() == home
    run = RunDir.create(CFG, name="abc")
    assert run.path == home / "runs" / "abc"
    assert json.loads((run.path / "config.json").read_text()) == CFG


def test_create_open_and_names(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir.create(CFG, name="my.run_1")
    assert RunDir.open("my.run_1").path == run.path
    assert resolve_run(run.path).path == run.path
    assert resolve_run(str(run.path)).name == "my.run_1"
    assert run.path_of("tokenizer.json") == run.path / "tokenizer.json"
    assert run.checkpoints_dir.is_dir() and run.latest_checkpoint_step() is None
    with pytest.raises(RunError, match="already exists"):
        RunDir.create(CFG, name="my.run_1")
    for bad in ("", "-x", ".hidden", "a/b", "a b", "x" * 65, "é"):
        with pytest.raises(RunError, match="invalid run name"):
            RunDir.create(CFG, name=bad)
    with pytest.raises(RunError, match=r"no run named nope \(see `ldlm runs list`\)"):
        RunDir.open("nope")
    (home / "runs" / "empty").mkdir()
    with pytest.raises(RunError, match="no run named"):
        RunDir.open("empty")

    monkeypatch.setattr(runs.time, "strftime", lambda fmt: "20250101-120000")
    names = [RunDir.create(CFG).name for _ in range(3)]
    assert names == [
        "tiny-mask-20250101-120000",
        "tiny-mask-20250101-120000-2",
        "tiny-mask-20250101-120000-3",
    ]
    explicit = RunDir.create(CFG, run_dir=home.parent / "elsewhere" / "r1")
    assert RunDir.open(explicit.path).name == "r1"
    with pytest.raises(RunError, match="already holds a run"):
        RunDir.create(CFG, run_dir=explicit.path)


def test_metrics_append_read_with_torn_last_line(home: Path) -> None:
    run = RunDir.create(CFG, name="m")
    run.append_event(StepEvent(step=1, loss=2.0, lr=0.1, tokens_per_s=1.0, epoch=0.0, elapsed_s=1))
    run.append_event({"event": "sample", "step": 1, "text": "héllo\nworld"})
    with open(run.metrics_path, "ab") as f:
        f.write(b"not json\n")
    run.append_event(StatusEvent(step=2, state="started"))
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"event": "step", "st')  # writer killed mid-line
    events = run.read_metrics()
    assert [e["event"] for e in events] == ["step", "sample", "status"]
    assert events[1]["text"] == "héllo\nworld"
    run.close()
    again = RunDir.open("m")  # a resumed trainer terminates the fragment before appending
    again.append_event({"event": "step", "step": 3})
    assert [e["step"] for e in again.read_metrics()] == [1, 1, 2, 3]
    again.close()


def test_follower_handles_partial_lines_and_stop(home: Path) -> None:
    run = RunDir.create(CFG, name="f")
    follower = MetricsFollower(run.metrics_path)
    assert follower.poll() == []
    with open(run.metrics_path, "ab") as f:
        f.write(b'{"event": "step", "step": 1}\n{"event": "st')
    assert follower.poll() == [{"event": "step", "step": 1}]
    assert follower.poll() == []
    with open(run.metrics_path, "ab") as f:
        f.write(b'ep", "step": 2}\n')
    assert follower.poll() == [{"event": "step", "step": 2}]
    assert MetricsFollower(run.metrics_path, from_start=False).poll() == []

    stop = threading.Event()
    seen: list[dict] = []
    t = threading.Thread(target=lambda: seen.extend(run.follow_metrics(poll_s=0.01, stop=stop)))
    t.start()
    run.append_event({"event": "step", "step": 3})
    deadline = time.time() + 2
    while len(seen) < 3 and time.time() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(2)
    assert not t.is_alive()
    assert [e["step"] for e in seen] == [1, 2, 3]
    run.close()


def test_follower_sees_other_process_within_a_second(home: Path) -> None:
    run = RunDir.create(CFG, name="x")
    child = _spawn(
        """
        print("ready", flush=True)
        for i in range(20):
            run.append_event({"event": "step", "step": i, "time": time.time()})
            time.sleep(0.03)
        """,
        run.path,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        stop = threading.Event()
        lags = []
        for e in run.follow_metrics(poll_s=0.02, stop=stop):
            lags.append(time.time() - e["time"])
            if e["step"] == 19:
                break
        assert len(lags) == 20
        assert max(lags) < 1.0
    finally:
        child.kill()
        child.wait()


def test_lock_conflict_liveness_and_sigkill(home: Path) -> None:
    run = RunDir.create(CFG, name="l")
    assert not run.is_locked() and run.liveness() == "created"
    child = _spawn(
        """
        run.acquire_lock()
        run.write_status("started", step=7)
        print("ready", flush=True)
        sys.stdin.read()
        """,
        run.path,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        watcher = RunDir.open("l")
        assert watcher.is_locked() and watcher.liveness() == "live"
        with pytest.raises(
            RunError, match=rf"being trained by another process \(pid {child.pid}\)"
        ):
            watcher.acquire_lock()
        with pytest.raises(RunError, match="live"):
            delete_run("l")
        assert watcher.read_status()["step"] == 7
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()  # reaped: a zombie would still look alive
    assert not watcher.is_locked()
    assert watcher.read_status()["state"] == "started"
    assert watcher.liveness() == "dead"
    watcher.acquire_lock()  # the kernel released the dead trainer's lock
    assert watcher.liveness() == "live"
    watcher.release_lock()


def test_signal_stop_terminates_live_trainer(home: Path) -> None:
    run = RunDir.create(CFG, name="s")
    assert run.signal_stop() is False  # nothing to stop
    child = _spawn(
        """
        run.acquire_lock()
        run.write_status("started")
        print("ready", flush=True)
        time.sleep(30)
        """,
        run.path,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert run.signal_stop() is True
        assert child.wait(5) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()


def test_status_states(home: Path) -> None:
    run = RunDir.create(CFG, name="st")
    run.write_status("started", step=0)
    st = run.read_status()
    assert st["pid"] == os.getpid() and st["state"] == "started" and st["started_at"] > 0
    assert run.liveness() == "live"  # no lock, but fresh heartbeat from a live local pid
    first = st["heartbeat"]
    run.heartbeat(5)  # throttled: not rewritten within 2 s
    assert run.read_status()["heartbeat"] == first
    run.heartbeat(6, force=True)
    assert run.read_status()["step"] == 6
    for state, expected in (
        ("paused", "live"),
        ("stopping", "stopped"),
        ("finished", "finished"),
        ("failed", "failed"),
    ):
        run.write_status(state, message="x")
        assert run.liveness() == expected, state
    run.write_status("finished", reason="stopped")
    assert run.liveness() == "stopped"
    assert run.read_status()["started_at"] == st["started_at"]
    stale = run.read_status() | {"state": "started", "heartbeat": time.time() - 60}
    run.status_path.write_text(json.dumps(stale))
    assert run.liveness() == "dead"


def test_control_request_and_poll(home: Path) -> None:
    trainer = RunDir.create(CFG, name="c")
    RunDir.open("c").request("stop")  # stale: made before any trainer existed
    trainer.acquire_lock()
    assert trainer.poll_control() is None
    remote = RunDir.open("c")
    remote.request("pause")
    assert trainer.poll_control() == "pause"
    assert trainer.poll_control() is None
    remote.request("resume")
    remote.request("stop")  # two quick requests: the newest wins
    assert trainer.poll_control() == "stop"
    assert trainer.poll_control() is None
    with pytest.raises(RunError, match="unknown control action"):
        remote.request("explode")
    trainer.close()


def test_list_runs_and_delete(home: Path) -> None:
    assert list_runs() == []
    a = RunDir.create(CFG, name="a")
    for step, bpc in ((100, 2.5), (200, 1.8), (300, 2.0)):
        a.append_event(
            EvalEvent(step=step, val_loss=1.0, val_bits_per_token=1, val_bits_per_char=bpc)
        )
    a.write_status("finished", step=300)
    b = RunDir.create({"preset": "seed", "process": {"kind": "uniform"}}, name="b")
    infos = list_runs()
    assert [i.name for i in infos] == ["b", "a"]  # newest first
    ia = infos[1]
    assert ia.best_val_bits_per_char == 1.8 and ia.step == 300 and ia.state == "finished"
    assert (ia.preset, ia.process) == ("tiny", "mask")
    assert infos[0].best_val_bits_per_char is None and infos[0].state == "created"
    assert ia.created <= infos[0].created and ia.last_update >= ia.created
    (a.path / "summary.json").unlink()  # older/hand-made run: falls back to a metrics scan
    assert list_runs(home)[1].best_val_bits_per_char == 1.8

    b.acquire_lock()
    with pytest.raises(RunError, match="live"):
        delete_run("b")
    b.release_lock()
    assert delete_run("b") == b.path and not b.path.exists()
    a.close()
    delete_run(a.path)
    assert list_runs() == []


def test_unknown_names_suggest_only_real_runs_with_plain_names(home: Path) -> None:
    RunDir.create(CFG, name="shakespeare-small")
    RunDir.create(CFG, name="shakespeare-big")
    runs = home / "runs"
    (runs / "shakespeare-smal").mkdir()  # a folder, not a run
    odd = runs / "shakespeare-small\nrm -rf"  # a run folder whose name is not one line
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps(CFG))
    with pytest.raises(RunError) as e:
        RunDir.open("shakespeare-smll")
    assert str(e.value) == (
        "no run named shakespeare-smll (did you mean shakespeare-small, shakespeare-big?)"
    )
    with pytest.raises(RunError, match=r"^no run named zzz \(see `ldlm runs list`\)$"):
        RunDir.open("zzz")
