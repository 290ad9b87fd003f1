"""Terminal faults (headless) and numerical faults.

Terminal: on a real pseudo-terminal with ``NO_COLOR=1`` and ``TERM=dumb``, `ldlm train`,
`ldlm generate --no-animate` and `ldlm runs list` work and print no escape sequence at all.
(Resizing the TUI and SIGHUP are covered by tests/test_tui_app.py.)

Numerics: a NaN or infinite loss is detected, reported as a ``status: failed`` event, the run
stops at its last good checkpoint, and `ldlm train` exits 1 with one line.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ldlm_env
from engine_helpers import TEXT
from reliability_helpers import ANSI, REPO, cli, one_torch_thread  # noqa: F401

from ldlm_engine import RunDir
from ldlm_engine.checkpoint import load_checkpoint
from ldlm_engine.processes import MaskedProcess

_THREE_COMMANDS = textwrap.dedent(
    """
    import sys
    from ldlm_tui.cli import run
    corpus = sys.argv[1]
    for argv in (
        ["train", "--data", corpus, "--preset", "tiny", "--max-steps", "5", "--seq-len", "32",
         "--batch-size", "4", "--eval-every", "5", "--sample-every", "5", "--name", "term"],
        ["generate", "term", "--no-animate", "--length", "16", "--prompt", "the "],
        ["runs", "list"],
    ):
        code = run(argv)
        print(f"EXIT {argv[0]} {code}", flush=True)
    """
)


def _run_on_pty(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; returns (status, output)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=REPO
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError as e:  # EIO: the child closed the terminal
                if e.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_no_color_dumb_terminal_prints_no_escapes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    env = {**ldlm_env(tmp_path / "home"), "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "80"}
    code, output = _run_on_pty(
        [sys.executable, "-c", _THREE_COMMANDS, str(corpus)], env, timeout=180
    )
    assert code == 0, output
    for cmd in ("train", "generate", "runs"):
        assert f"EXIT {cmd} 0" in output, output
    assert not ANSI.search(output), repr(output[:2000])
    assert "finished term at step 5" in output
    assert "term" in output.split("EXIT generate 0")[1]  # listed by `runs list`


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_through_the_cli(ldlm_home: Path, monkeypatch, capsys, bad) -> None:
    """The 7th step's loss is non-finite: exit 1, one line, nothing saved after step 4."""
    calls = {"n": 0}
    loss = MaskedProcess.loss

    def poisoned(self, model, x0, generator=None):
        calls["n"] += 1
        value = loss(self, model, x0, generator)
        return value * bad if calls["n"] >= 7 else value

    monkeypatch.setattr(MaskedProcess, "loss", poisoned)
    corpus = ldlm_home / "c.txt"
    corpus.write_text(TEXT)
    code, _, err = cli(
        capsys, "train", "--data", corpus, "--preset", "tiny", "--process", "mask",
        "--max-steps", "20", "--checkpoint-every", "4", "--eval-every", "0", "--sample-every", "0",
        "--seq-len", "32", "--batch-size", "4", "--name", "nan",
    )  # fmt: skip
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("ldlm: training failed: non-finite loss"), lines[0]
    # Losses are read back at log and checkpoint steps (no per-step device sync), so the
    # failure is caught at the first of those at or after step 7: the step-8 checkpoint.
    assert "by step 8" in lines[0] and "last good checkpoint is step 4" in lines[0]
    rd = RunDir.open("nan")
    events = rd.read_metrics()
    last = events[-1]
    assert last["event"] == "status" and last["state"] == "failed"
    assert "non-finite" in last["message"] and last["step"] == 8
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [4]
    assert rd.liveness() == "failed"
    ck = load_checkpoint(rd.checkpoints_dir)
    assert ck.step == 4
    import torch

    assert all(torch.isfinite(v).all() for v in ck.model_state.values())
