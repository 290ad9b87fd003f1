"""Shared helpers for the reliability tests: tiny real runs, in-process CLI calls, checks.

Named ``reliability_helpers`` (not ``conftest``/``helpers``) so it cannot shadow the module of
the same name one folder up.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from engine_helpers import TEXT, tiny_config

from ldlm_engine import RunConfig, RunDir, Trainer, ldlm_home

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
# CSI/OSC/other escape sequences: any ESC byte at all means the output is not plain.
ANSI = re.compile(r"\x1b")


def train_run(
    name: str,
    steps: int = 4,
    *,
    checkpoint_every: int = 2,
    text: str = TEXT,
    config: RunConfig | None = None,
    sinks=(),
    **train,
):
    """Train a tiny run in this process; returns (trainer, run dir, events, final state).

    The text is also written to ``$LDLM_HOME/<name>.txt`` and named as the run's data source,
    so ``ldlm train --resume`` finds the same text.
    """
    cfg = config or tiny_config("mask", max_steps=steps, checkpoint_every=checkpoint_every, **train)
    source = ldlm_home() / f"{name}.txt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text, encoding="utf-8")
    cfg.data.source = str(source)
    rd = RunDir.create(cfg.to_dict(), name=name)
    events: list = []
    tr = Trainer(cfg, run_dir=rd, sinks=[events.append, *sinks], text=text)
    try:
        state = tr.run()
    finally:
        rd.close()
    return tr, rd, events, state


def cli(capsys: pytest.CaptureFixture, *args) -> tuple[int, str, str]:
    """Run the real CLI entry point (``ldlm_tui.cli.run``) in this process."""
    from ldlm_tui.cli import run as cli_run

    capsys.readouterr()
    code = cli_run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *fragments: str) -> str:
    """stderr is exactly one ``ldlm: error: ...`` line (no traceback) holding ``fragments``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("ldlm: error: "), lines[0]
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the benchmarks folder is not a package)."""
    import importlib.util

    path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"ldlm_bench_{name}", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on shared cores train fastest on one thread (import this into a module)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny run (checkpoints at steps 2 and 4), to copy and then damage (import this
    and ``run`` into a module)."""
    home = tmp_path_factory.mktemp("trained-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("LDLM_HOME", str(home))
    try:
        _, rd, _, state = train_run("good", steps=4)
    finally:
        mp.undo()
    assert state == "finished"
    return rd.path


@pytest.fixture
def run(trained: Path, ldlm_home: Path) -> Path:
    """A fresh copy of the trained run as ``$LDLM_HOME/runs/victim`` (links copied as links)."""
    dst = ldlm_home / "runs" / "victim"
    shutil.copytree(trained, dst, symlinks=True)
    return dst
