"""Weight averaging (``train.ema``): the shadow's arithmetic, who uses it, how it is saved,
resumed, checked and inherited, and that it changes nothing when off."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import run_ldlm
from engine_helpers import TEXT, tiny_config
from safetensors.torch import load_file, save_file
from test_training import losses, train

from ldlm_engine import (
    PRESETS,
    CheckpointError,
    ConfigError,
    RunChoices,
    RunConfig,
    RunDir,
    Trainer,
    evaluate_run,
    get_preset,
    load_run,
    plan_run,
)
from ldlm_engine.checkpoint import load_checkpoint
from ldlm_engine.ema import ema_decay
from ldlm_engine.plans import build_run_config


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDLM_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "home"


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _load_by_hand(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(tensors[n])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- the arithmetic


def test_the_shadow_is_the_warmed_up_average_of_the_weights_after_each_step():
    decay, steps = 0.5, 12  # the warm-up rules steps 1..8, the decay itself from step 9 on
    cfg = tiny_config("mask", max_steps=steps, ema=decay, lr=1e-2)
    tr = Trainer(cfg, text=TEXT, handle_signals=False)
    tr.setup()
    initial = _params(tr.model)
    assert _same(tr.ema.tensors(), initial)  # it starts from the initial weights
    seen: list[tuple[dict, dict]] = []

    def record(event):
        if event.event == "step":
            shadow = {k: v.clone() for k, v in tr.ema.tensors().items()}
            seen.append((_params(tr.model), shadow))

    tr.sinks.append(record)
    assert tr.run() == "finished"
    assert len(seen) == steps
    expected = initial
    for step, (weights, shadow) in enumerate(seen):  # step: optimizer steps before this one
        d = min(decay, (1 + step) / (10 + step))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in weights}
        for k in weights:
            assert torch.allclose(shadow[k], expected[k], rtol=0, atol=1e-6), (step, k)
            assert shadow[k].dtype == torch.float32
    final_weights, final_shadow = seen[-1]
    assert not _same(final_weights, final_shadow)  # training went on with the raw weights
    assert ema_decay(0.999, 0) == 0.1 and ema_decay(0.999, 10**6) == 0.999


# --------------------------------------------------------------------------- who uses it


def test_evaluations_samples_snapshots_and_inference_use_the_average(home):
    cfg = tiny_config("mask", max_steps=20, ema=0.9, lr=1e-2, checkpoint_every=10)
    cfg.train.sample_every = 10
    tr, rd, events, state = train(cfg, name="avg")
    assert state == "finished"
    reported = [e for e in events if e.event == "eval"][-1].val_bits_per_char
    ck = load_checkpoint(rd.checkpoints_dir)
    assert ck.step == 20 and set(ck.ema_state) == set(_params(tr.model))
    raw = _params(tr.model)
    assert _same(raw, {k: ck.model_state[k] for k in raw})  # the raw weights are saved too
    assert not _same(raw, ck.ema_state)

    # The live snapshot (the app's Generate tab) and the periodic sample: the average.
    step, snapshot = tr.snapshot_weights()
    sampled = tr.sample().text
    tr.ema = None  # from here on the trainer evaluates whatever its model holds
    _load_by_hand(tr.model, ck.ema_state)
    averaged_state = {k: v.clone() for k, v in tr.model.state_dict().items()}
    assert step == 20 and _same(snapshot, averaged_state)
    assert tr.sample().text == sampled
    assert tr.evaluate().bits_per_char == reported  # the final evaluation: the average
    _load_by_hand(tr.model, raw)
    assert tr.evaluate().bits_per_char != reported

    # ldlm generate / eval and the app load the average from the checkpoint.
    loaded = load_run("avg", device="cpu")
    assert _same(loaded.model.state_dict(), averaged_state)
    data = home / "text.txt"
    data.write_text(TEXT)
    on_average = evaluate_run(loaded, data=str(data), max_tokens=256, samples=2)
    by_hand = load_run("avg", device="cpu")
    _load_by_hand(by_hand.model, ck.ema_state)
    assert evaluate_run(by_hand, data=str(data), max_tokens=256, samples=2) == on_average
    _load_by_hand(by_hand.model, raw)
    on_raw = evaluate_run(by_hand, data=str(data), max_tokens=256, samples=2)
    assert on_raw.bits_per_char != on_average.bits_per_char


def test_off_by_default_and_on_it_leaves_training_itself_unchanged():
    assert RunConfig().train.ema == 0.0
    assert all(get_preset(p).train.ema == 0.0 for p in PRESETS)
    common = {"max_steps": 12, "checkpoint_every": 6, "eval_every": 4, "lr": 1e-2}
    off = tiny_config("mask", **common)
    off.train.sample_every = 5
    on = RunConfig.from_dict({**off.to_dict(), "train": {**off.to_dict()["train"], "ema": 0.9}})
    tr_off, rd_off, ev_off, _ = train(off, name="off")
    _, rd_on, ev_on, _ = train(on, name="on")
    assert tr_off.ema is None
    ck = load_checkpoint(rd_off.checkpoints_dir)
    assert ck.ema_state == {} and ck.meta["ema_keys"] == []
    state = load_file(str(ck.path / "state.safetensors"))
    assert not any(k.startswith("ema.") for k in state)
    # Evaluating and sampling the average between steps leaves the raw weights as they were.
    assert losses(ev_on) == losses(ev_off)
    assert _same(load_checkpoint(rd_on.checkpoints_dir).model_state, ck.model_state)
    evals_on = [e.val_bits_per_char for e in ev_on if e.event == "eval"]
    evals_off = [e.val_bits_per_char for e in ev_off if e.event == "eval"]
    assert len(evals_on) == 3 and evals_on != evals_off  # but the figures are the average's


# --------------------------------------------------------------------------- settings


def test_ema_out_of_range_is_one_line_and_exit_2(home, tmp_path):
    for value in ("1.5", "-1", "1"):
        r = run_ldlm("train", "--ema", value, "--max-steps", "2", home=home)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == [
            f"ldlm: error: --ema must be in [0, 1) (0 = off); got {float(value)}"
        ]
    assert "--ema" in run_ldlm("train", "--help", home=home).stdout
    r = run_ldlm("train", "--resume", "x", "--ema", "0.9", home=home)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--ema" in r.stderr
    # From a settings file, like every other field.
    toml = tmp_path / "exp.toml"
    toml.write_text("[train]\nema = 0.999\n")
    assert build_run_config(RunChoices(preset="tiny", config_file=toml)).train.ema == 0.999
    toml.write_text("[train]\nema = 1.0\n")
    with pytest.raises(ConfigError, match=r"train.ema must be in \[0, 1\)"):
        build_run_config(RunChoices(preset="tiny", config_file=toml))


# --------------------------------------------------------------------------- resume


class _Crash(Exception):
    """Stands for a SIGKILL: the process ends between two steps without saving anything."""


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_resume_with_ema_reaches_the_uninterrupted_weights_and_average(how):
    cfg = tiny_config("mask", max_steps=16, checkpoint_every=8, ema=0.8, eval_every=3)
    cfg.model.dropout = 0.1  # the global RNG must be restored too
    cfg.train.sample_every = 5
    _, rd_a, ev_a, _ = train(cfg, name="straight")

    holder = {}

    def interrupt(event):
        if event.event == "step" and event.step == 11:
            if how == "crash":
                raise _Crash
            holder["trainer"].request_stop("test")

    rd_b = RunDir.create(cfg.to_dict(), name="interrupted")
    tr = Trainer(cfg, run_dir=rd_b, sinks=[interrupt], text=TEXT, handle_signals=False)
    holder["trainer"] = tr
    if how == "crash":
        with pytest.raises(_Crash):
            tr.run()
    else:
        assert tr.run() == "stopped"
    assert load_checkpoint(rd_b.checkpoints_dir).step == (8 if how == "crash" else 11)
    _, _, ev_b, state = train(cfg, name="interrupted", resume=True)
    assert state == "finished"
    assert losses(ev_b) == {k: v for k, v in losses(ev_a).items() if k in losses(ev_b)}
    a = load_checkpoint(rd_a.checkpoints_dir)
    b = load_checkpoint(rd_b.checkpoints_dir)
    assert a.step == b.step == 16
    assert _same(a.model_state, b.model_state)  # bit for bit
    assert a.ema_state and _same(a.ema_state, b.ema_state)


# --------------------------------------------------------------------------- damage


def _rewrite_state(ck: Path, change) -> None:
    """Alter state.safetensors and recompute meta.json's checksum, as an editor would."""
    f = ck / "state.safetensors"
    tensors = load_file(str(f))
    change(tensors)
    save_file(tensors, str(f))
    meta = json.loads((ck / "meta.json").read_text())
    data = f.read_bytes()
    meta["files"]["state.safetensors"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    (ck / "meta.json").write_text(json.dumps(meta))


def _nan(t):
    t["ema.tok_emb.weight"] = t["ema.tok_emb.weight"].clone()
    t["ema.tok_emb.weight"].view(-1)[0] = math.nan


DAMAGE = {
    "nan": _nan,
    "shape": lambda t: t.update({"ema.tok_emb.weight": torch.zeros(3)}),
    "dtype": lambda t: t.update({"ema.tok_emb.weight": t["ema.tok_emb.weight"].double()}),
    "missing": lambda t: t.pop("ema.tok_emb.weight"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_average_is_damage_with_the_usual_fallback(kind):
    cfg = tiny_config("mask", max_steps=8, checkpoint_every=4, ema=0.9)
    _, rd, _, _ = train(cfg, name="victim")
    newest = rd.checkpoints_dir / "step-00000008"
    _rewrite_state(newest, DAMAGE[kind])
    # The newest is named as damaged, with the intact one to fall back to: generate, eval,
    # the app (load_run) and a resume alike.
    with pytest.raises(CheckpointError) as info:
        load_run("victim", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and "step-00000008" in msg and "step-00000004" in msg
    resumed = Trainer(cfg, run_dir=RunDir.open("victim"), resume=True, text=TEXT)
    with pytest.raises(CheckpointError, match="step-00000004"):
        resumed.setup()
    # Without the pointer, the newest checkpoint that verifies is used, with a note.
    os.unlink(rd.checkpoints_dir / "last.json")
    loaded = load_run("victim", device="cpu")
    assert loaded.step == 4 and "step-00000008" in loaded.note
    resumed = Trainer(cfg, run_dir=RunDir.open("victim"), resume=True, text=TEXT)
    resumed.setup()
    assert resumed.step == 4
    assert _same(resumed.ema.tensors(), load_checkpoint(rd.checkpoints_dir, "4").ema_state)


# --------------------------------------------------------------------------- --init-from


def test_init_from_an_ema_run_starts_from_its_average(home):
    src = tiny_config("ar", max_steps=10, checkpoint_every=10, ema=0.5, lr=1e-2)
    train(src, name="src")
    ck = load_checkpoint(home / "runs" / "src" / "checkpoints")
    corpus = home.parent / "corpus.txt"
    corpus.write_text(TEXT)
    choices = RunChoices(
        preset="tiny",
        process="block",
        settings={"data": {"source": str(corpus)}, "train": {"init_from": "src", "ema": 0.9}},
    )
    tr = plan_run(choices).trainer(None, handle_signals=False)
    tr.setup()
    assert _same(_params(tr.model), ck.ema_state)
    assert not _same(_params(tr.model), {k: ck.model_state[k] for k in ck.ema_state})
    assert _same(tr.ema.tensors(), ck.ema_state)  # its own average starts there too
