"""A unique prefix of a run name resolves git-style, in every command (it lives in the engine).

Real run folders (copies of the session's trained demo run) and the real `ldlm` executable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_many

from ldlm_engine import RunError, resolve_run


@pytest.fixture
def runs(ldlm_home: Path, session_home: Path, demo_run) -> Path:
    root = ldlm_home / "runs"
    demo = session_home / "runs" / "demo"
    for name in ("tiny-block-20261202-163416", "amb-1", "amb-2", "ex", "ex-2"):
        shutil.copytree(demo, root / name)
    return root


def test_prefix_resolves_in_the_engine(runs: Path, ldlm_home: Path) -> None:
    assert resolve_run("tiny-bl", home=ldlm_home).name == "tiny-block-20261202-163416"
    assert resolve_run("ex", home=ldlm_home).name == "ex"  # an exact name always wins
    with pytest.raises(RunError, match=r"ambiguous.*amb-1, amb-2"):
        resolve_run("amb", home=ldlm_home)
    with pytest.raises(RunError, match="no run named zzz"):
        resolve_run("zzz", home=ldlm_home)
    shutil.rmtree(runs / "tiny-block-20261202-163416" / "checkpoints")
    (runs / "tiny-block-20261202-163416" / "config.json").unlink()
    with pytest.raises(RunError, match="no run named tiny-bl"):  # not a run any more
        resolve_run("tiny-bl", home=ldlm_home)


def test_prefix_resolves_in_every_command(runs: Path, ldlm_home: Path) -> None:
    res = run_many(
        {
            "show": (("runs", "show", "tiny-block", "--json"), ldlm_home),
            "generate": (("generate", "tiny-block", "--length", "8", "--json"), ldlm_home),
            "exact": (("runs", "show", "ex", "--json"), ldlm_home),
            "ambiguous": (("generate", "amb", "--length", "8"), ldlm_home),
        }
    )
    assert res["show"].returncode == 0, res["show"].stderr
    assert json.loads(res["show"].stdout)["name"] == "tiny-block-20261202-163416"
    assert res["generate"].returncode == 0, res["generate"].stderr
    assert json.loads(res["generate"].stdout)["run"] == "tiny-block-20261202-163416"
    assert json.loads(res["exact"].stdout)["name"] == "ex"
    amb = res["ambiguous"]
    assert amb.returncode == 2
    lines = amb.stderr.strip().splitlines()
    assert len(lines) == 1 and "ambiguous" in lines[0] and "amb-1, amb-2" in lines[0], amb.stderr
