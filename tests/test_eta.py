"""One ETA, computed by the engine from a run's step events and plan, shown the same by the
CLI's progress line, the app's statistics and ``ldlm runs list/show``; none for an ended run.

The events come from a real tiny training; the "live" run is a copy of its first steps whose
trainer lock this test holds (so ``ldlm`` subprocesses see it as live).
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import run_many
from engine_helpers import TEXT, tiny_config
from rich.console import Console

from ldlm_engine import RunDir, Trainer
from ldlm_engine.eta import Eta, format_eta, run_eta
from ldlm_engine.events import event_from_dict
from ldlm_tui.messages import event_to_message
from ldlm_tui.progress import PlainDisplay, RichDisplay
from ldlm_tui.widgets.stats import TrainStats

KEEP = 12  # step events the "live" copy keeps, of 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ldlm_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LDLM_HOME", str(home))
        cfg = tiny_config("mask", eval_every=10)
        rd = RunDir.create(cfg, name="done")
        assert Trainer(cfg, run_dir=rd, text=TEXT, handle_signals=False).run() == "finished"
        rd.close()
    return rd.path


@pytest.fixture
def live(trained: Path, ldlm_home: Path):
    """A copy of the run cut after KEEP step events, its trainer lock held here."""
    path = ldlm_home / "runs" / "going"
    shutil.copytree(trained, path)
    lines, steps = [], 0
    for line in (trained / "metrics.jsonl").read_text().splitlines():
        steps += json.loads(line)["event"] == "step"
        if steps > KEEP:
            break
        lines.append(line)
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rd = RunDir(path)
    rd.acquire_lock()
    yield rd, [json.loads(line) for line in lines]
    rd.release_lock()


def _app_eta(events: list[dict]) -> str:
    """What the app's statistics widget shows, fed as the Train pane feeds it."""
    stats = TrainStats()
    for e in events:
        msg = event_to_message(e, "going")
        if e["event"] == "step":
            stats.update_step(
                msg.step, msg.total_steps, msg.loss, msg.lr, msg.tokens_per_s, msg.epoch,
                msg.elapsed_s, msg.peak_mem_mb,
            )  # fmt: skip
        elif e["event"] == "status":
            stats.set_state(msg.state, msg.message)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(stats.render_stats())
    return re.search(r"ETA\s+(\S+)", console.file.getvalue()).group(1)


def _cli_eta(events: list[dict]) -> str:
    """The ETA on the CLI's last progress line."""
    out = io.StringIO()
    display = PlainDisplay(out)
    for e in events:
        display(event_from_dict(e))
    step_lines = [x for x in out.getvalue().splitlines() if x.startswith("step ")]
    return step_lines[-1].rsplit("| eta ", 1)[1]


def test_the_same_metrics_give_the_same_eta_everywhere(live, ldlm_home: Path) -> None:
    rd, events = live
    expected = run_eta(rd).text
    assert re.fullmatch(r"\d+(h\d\dm|m\d\ds|s)", expected), expected  # a real ETA, not "-"
    assert _cli_eta(events) == _app_eta(events) == expected
    res = run_many(
        {
            "list": (("runs", "list", "--json"), ldlm_home),
            "show": (("runs", "show", "going", "--json"), ldlm_home),
            "text": (("runs", "show", "going"), ldlm_home),
            "table": (("runs", "list"), ldlm_home),
        }
    )
    assert all(r.returncode == 0 for r in res.values()), {k: r.stderr for k, r in res.items()}
    (row,) = [r for r in json.loads(res["list"].stdout) if r["name"] == "going"]
    assert row["state"] == "live" and row["eta"] == expected
    assert json.loads(res["show"].stdout)["eta"] == expected
    assert f"ETA {expected}" in res["text"].stdout
    assert "ETA" in res["table"].stdout.splitlines()[0]
    (line,) = [x for x in res["table"].stdout.splitlines() if x.startswith("going")]
    assert f" {expected} " in line


def test_an_ended_run_has_no_eta(trained: Path, ldlm_home: Path) -> None:
    events = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    end = next(i for i, e in enumerate(events) if e["event"] == "step" and e["step"] == KEEP)
    cut = events[: end + 1]  # the run as it was at step KEEP, still training
    stopped = [*cut, {"event": "status", "step": KEEP, "time": 0.0, "state": "stopped"}]
    assert _app_eta(cut) != "-"
    assert _app_eta(stopped) == "-"
    eta = Eta()
    for e in stopped:
        eta.add(e)
    assert eta.seconds is None and eta.text == "-"
    shutil.copytree(trained, ldlm_home / "runs" / "done")
    res = run_many(
        {
            "list": (("runs", "list", "--json"), ldlm_home),
            "show": (("runs", "show", "done", "--json"), ldlm_home),
            "text": (("runs", "show", "done"), ldlm_home),
        }
    )
    (row,) = json.loads(res["list"].stdout)
    assert row["state"] == "finished" and row["eta"] == ""
    assert json.loads(res["show"].stdout)["eta"] == ""
    assert "ETA" not in res["text"].stdout


def test_eta_follows_the_recent_pace_and_a_resume() -> None:
    eta = Eta(window=3)
    for step, elapsed in ((10, 100.0), (20, 110.0), (30, 120.0), (40, 130.0)):
        eta.add_step(step, elapsed, 100)
    assert eta.seconds == pytest.approx(60.0)  # 1 s a step lately, not 130/40
    eta.add_step(35, 131.0, 100)  # resumed from an earlier checkpoint: the window restarts
    assert eta.seconds == pytest.approx(131.0 / 35 * 65)
    assert [format_eta(s) for s in (5, 65, 3725, None)] == ["5s", "1m05s", "1h02m", "-"]


def test_cli_progress_line_shows_val_once_evaluated() -> None:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    display = RichDisplay(console)
    try:
        step = dict(event="step", step=5, time=0.0, loss=3.0, lr=1e-3, tokens_per_s=1e3)
        step.update(epoch=0.1, elapsed_s=5.0, total_steps=10)
        display(event_from_dict(step))
        assert "val –" in display.progress.stats.plain
        display(
            event_from_dict(
                {
                    "event": "eval",
                    "step": 5,
                    "time": 0.0,
                    "val_loss": 2.0,
                    "val_bits_per_token": 2.9,
                    "val_bits_per_char": 2.9,
                    "exact": False,
                }
            )
        )
        assert "val –" not in display.progress.stats.plain
        assert "val ≤ 2.90 b/c" in display.progress.stats.plain
    finally:
        display.close()
