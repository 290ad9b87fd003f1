"""top-p (nucleus) and top-k: one filter (``sampling.top_filter``) that every sampler applies
where logits become a choice, the CLI's --top-p/--top-k and the run's sample defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_many
from engine_helpers import TEXT, tiny_config

from ldlm_engine import ConfigError, RunConfig, SampleConfig, Trainer, generate
from ldlm_engine.sampling import gumbel_argmax, top_filter


@pytest.fixture(scope="module")
def trained():
    """(model, process, tokenizer) per process after 30 real training steps."""
    out = {}
    for kind in ("mask", "ar", "uniform"):
        tr = Trainer(tiny_config(kind), text=TEXT, handle_signals=False)
        assert tr.run() == "finished"
        out[kind] = (tr.model, tr.process, tr.tokenizer)
    return out


def _final(model, proc, tok, prompt="the ", **kw) -> list[int]:
    frames = list(generate(model, proc, tok, SampleConfig(**kw), prompt, max_len=32))
    return frames[-1].tokens


@pytest.mark.parametrize("kind", ["mask", "ar", "uniform"])
def test_top_k_1_and_a_tiny_top_p_are_greedy(trained, kind) -> None:
    model, proc, tok = trained[kind]
    steps = {"uniform": 20}.get(kind, 0)
    greedy = _final(model, proc, tok, length=16, temperature=0.0, steps=steps)
    hot = {
        tuple(_final(model, proc, tok, length=16, temperature=1.0, seed=s, steps=steps))
        for s in range(3)
    }
    for seed in (1, 2):
        k1 = _final(model, proc, tok, length=16, temperature=1.0, top_k=1, seed=seed, steps=steps)
        p0 = _final(
            model, proc, tok, length=16, temperature=1.0, top_p=1e-9, seed=seed, steps=steps
        )
        if kind == "uniform":  # ancestral steps still sample the noise; the last one is greedy
            assert k1 == p0
        else:
            assert k1 == greedy and p0 == greedy
    assert len(hot) > 1  # without the filter the same settings do sample


def test_the_filter_never_picks_outside_the_nucleus(trained) -> None:
    model, proc, tok = trained["mask"]
    x = torch.tensor([tok.encode("the cat sat on the ") + [proc.mask_id] * 12])
    logits = proc.sampling_logits(model, x, None)[0].double()  # [T, V] from the trained model
    gen = torch.Generator().manual_seed(0)
    for top_p in (0.3, 0.6, 0.9):
        probs = torch.softmax(logits, dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True)
        # the nucleus: the likeliest ids until their mass reaches top_p (at least one)
        size = ((ordered.cumsum(-1) - ordered) < top_p).sum(-1)
        for _ in range(50):
            pick = gumbel_argmax(logits, 1.0, gen, top_p=top_p)
            for t in range(logits.shape[0]):
                assert pick[t] in order[t, : size[t]].tolist()
        kept = torch.isfinite(top_filter(logits, top_p=top_p)).sum(-1)
        assert torch.equal(kept, size)
        assert size.min() >= 1 and size.max() < logits.shape[-1]  # a real, partial nucleus
    for top_k in (1, 3, 7):
        top = logits.topk(top_k, dim=-1).indices
        for _ in range(20):
            pick = gumbel_argmax(logits, 1.0, gen, top_k=top_k)
            assert all(pick[t] in top[t].tolist() for t in range(logits.shape[0]))
    assert torch.equal(top_filter(logits), logits)  # both off: untouched


def test_sample_config_validates_and_old_configs_load() -> None:
    old = RunConfig().to_dict()
    del old["sample"]["top_p"], old["sample"]["top_k"]  # a config.json from before the knobs
    cfg = RunConfig.from_dict(old)
    assert (cfg.sample.top_p, cfg.sample.top_k) == (1.0, 0)
    for bad in ({"top_p": 0.0}, {"top_p": 1.5}, {"top_p": float("nan")}, {"top_k": -1}):
        d = RunConfig().to_dict()
        d["sample"].update(bad)
        with pytest.raises(ConfigError, match="top_"):
            RunConfig.from_dict(d)


def test_cli_top_p_and_top_k(ldlm_home: Path, session_home: Path, demo_run) -> None:
    demo = str(session_home / "runs" / "demo")
    args = ("generate", demo, "--prompt", "the ", "--length", "24", "--json")
    res = run_many(
        {
            "greedy": ((*args, "--temperature", "0"), ldlm_home),
            "k1": ((*args, "--temperature", "1", "--top-k", "1", "--seed", "3"), ldlm_home),
            "p": ((*args, "--temperature", "1", "--top-p", "0.000001"), ldlm_home),
            "bad_p": ((*args, "--top-p", "0"), ldlm_home),
            "bad_k": ((*args, "--top-k", "-2"), ldlm_home),
        }
    )
    out = {k: json.loads(r.stdout) for k, r in res.items() if r.returncode == 0}
    assert set(out) == {"greedy", "k1", "p"}, {k: r.stderr for k, r in res.items()}
    assert out["k1"]["text"] == out["greedy"]["text"] == out["p"]["text"]
    assert (out["k1"]["top_k"], out["p"]["top_p"]) == (1, 0.000001)
    for bad in ("bad_p", "bad_k"):
        assert res[bad].returncode == 2
        assert len(res[bad].stderr.strip().splitlines()) == 1, res[bad].stderr
