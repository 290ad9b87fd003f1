"""The engine's use cases for front ends: planning a run, planning a resume, generating.

These are what the CLI and the app both call, so the rules tested here are the only copy.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from engine_helpers import TEXT

from ldlm_engine import (
    ConfigError,
    GenerationSession,
    LdlmError,
    RunChoices,
    RunError,
    layered_config,
    plan_resume,
    plan_run,
)

TINY = {
    "data": {"tokenizer": "char"},
    "model": {"seq_len": 32, "d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64},
    "train": {
        "batch_size": 4,
        "max_steps": 6,
        "eval_every": 0,
        "sample_every": 0,
        "checkpoint_every": 3,
        "log_every": 1,
    },
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDLM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _choices(**kw) -> RunChoices:
    settings = {k: dict(v) for k, v in TINY.items()}
    settings["data"]["source"] = "corpus.txt"
    return RunChoices(preset="tiny", settings=settings, **kw)


def test_layering_relative_corpus_and_nothing_created_on_error(home: Path) -> None:
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("[train]\nlr = 0.0042\nseed = 7\n")
    (home / "exp.toml").write_text("[train]\nseed = 9\n")
    assert layered_config("tiny").train.lr == 0.0042  # what a form starts from
    plan = plan_run(_choices(config_file=home / "exp.toml"))
    cfg = plan.config
    assert cfg.train.lr == 0.0042  # user config.toml < --config file < explicit choices
    assert cfg.train.seed == 9
    assert cfg.train.max_steps == 6 and cfg.train.epochs is None
    assert cfg.data.source == str((home / "corpus.txt").resolve())  # absolute
    assert not (home / "home").exists()  # planning writes nothing
    rd = plan.create()
    on_disk = json.loads(rd.config_path.read_text())
    assert on_disk["data"]["source"] == cfg.data.source

    cases = {
        "no such corpus": {"data": {"source": "missing.txt"}},
        "too short": {"data": {"source": "short.txt"}},
        "bad number": {"train": {"lr": -1.0}},
    }
    (home / "short.txt").write_text("tiny text\n")
    for what, override in cases.items():
        ch = _choices(name=what.replace(" ", "-"))
        for section, values in override.items():
            ch.settings[section].update(values)
        with pytest.raises(LdlmError):
            plan_run(ch)
        assert not (home / "home" / "runs" / what.replace(" ", "-")).exists(), what


def test_flag_names_speak_the_front_ends_language(home: Path) -> None:
    ch = _choices(flag_names={"train.lr": "--lr"})
    ch.settings["train"]["lr"] = float("nan")
    with pytest.raises(ConfigError, match="--lr"):
        plan_run(ch)


def test_explicit_budget_replaces_the_presets_other_budget(home: Path) -> None:
    ch = RunChoices(preset="seed", settings={"train": {"max_steps": 5}})
    from ldlm_engine.plans import build_run_config

    cfg = build_run_config(ch)
    assert cfg.train.max_steps == 5 and cfg.train.epochs is None
    assert cfg.train.warmup_steps <= 1  # a short run still finishes its warm-up
    cfg = build_run_config(RunChoices(preset="tiny", settings={"train": {"epochs": 2}}))
    assert cfg.train.epochs == 2 and cfg.train.max_steps is None


def test_resume_plan_refuses_then_extends(home: Path) -> None:
    plan = plan_run(_choices(name="r"))
    rd = plan.create()
    assert plan.trainer(rd, handle_signals=False).run() == "finished"
    with pytest.raises(ConfigError, match="already"):
        plan_resume("r")
    more = plan_resume("r", max_steps=9)
    assert more.resume and more.step == 6 and more.changed
    more.record_settings()
    assert json.loads(rd.config_path.read_text())["train"]["max_steps"] == 9
    assert more.trainer(handle_signals=False).run() == "finished"
    with pytest.raises(RunError):
        plan_resume("nosuch")


def test_generation_session_caches_and_reports(home: Path) -> None:
    plan = plan_run(_choices(name="g"))
    rd = plan.create()
    plan.trainer(rd, handle_signals=False).run()
    session = GenerationSession(device="cpu")
    loaded = session.load("g")
    assert session.load("g") is loaded  # same checkpoint: no reload
    cfg = session.settings(loaded, length=12, temperature=0.0, seed=3)
    frames = list(session.stream(loaded, cfg, "the "))
    assert [f.frame.nfe for f in frames] == list(range(len(frames)))
    assert all(b.elapsed_s >= a.elapsed_s for a, b in itertools.pairwise(frames))
    res = session.result(loaded, cfg, "the ", frames[-1])
    assert res.text.startswith("the ") and res.generated_tokens == 12
    assert res.nfe == frames[-1].frame.nfe and res.tokens_per_call == 12 / res.nfe
    again = session.run(loaded, cfg, "the ")
    assert again.text == res.text  # same seed, same text
    with pytest.raises(ConfigError):
        session.settings(loaded, temperature=-1.0)
    with pytest.raises(RunError):
        session.load("nosuch")
