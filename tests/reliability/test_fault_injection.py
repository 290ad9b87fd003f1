"""No lost work: SIGKILL a real training process at random moments, then verify and resume.

The CI-sized run of ``benchmarks/fault_injection.py`` (3 kills: one at a random moment, one
while a checkpoint is being written, one right at a metrics append); the full benchmark runs
20 or more (see docs/guarantees.md).
"""

from __future__ import annotations

from pathlib import Path

from reliability_helpers import load_benchmark, one_torch_thread  # noqa: F401


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    fi = load_benchmark("fault_injection")
    summary = fi.run_fault_injection(kills=3, seed=7, jobs=3, workdir=tmp_path)
    report = "\n".join(summary.lines())
    assert summary.corrupted == 0, report
    assert sorted(r.mode for r in summary.results) == ["checkpoint", "metrics", "random"]
    for r in summary.results:
        assert r.checkpoint_step is not None and r.checkpoint_step >= 1, report
        assert r.resumed, report


def test_summary_counts_and_exit_status(monkeypatch, capsys) -> None:
    """The script's verdict: a corrupted state is counted and turns into exit status 1."""
    fi = load_benchmark("fault_injection")
    good = fi.KillResult(0, "random", killed_at_step=5, checkpoint_step=5, resumed=True)
    bad = fi.KillResult(1, "checkpoint", problems=["latest checkpoint does not load: x"])
    summary = fi.Summary([good, bad], seed=0, seconds=1.0)
    assert summary.corrupted == 1
    text = "\n".join(summary.lines())
    assert "corrupted states: 1" in text and "does not load" in text

    monkeypatch.setattr(fi, "run_fault_injection", lambda *a, **k: summary)
    assert fi.main(["--kills", "2"]) == 1
    monkeypatch.setattr(fi, "run_fault_injection", lambda *a, **k: fi.Summary([good], 0, 1.0))
    assert fi.main(["--kills", "1"]) == 0
    assert "corrupted states: 0" in capsys.readouterr().out
