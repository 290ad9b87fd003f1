"""Self-speculative decoding (``sample.sampler = "speculative"``): the diffusion head drafts,
the ar head of the same network accepts or corrects, so the text follows the ar head."""

from __future__ import annotations

import pytest
import torch
from conftest import run_ldlm
from engine_helpers import TEXT, tiny_config
from test_adaptation import ar_of, model_and_data, shifted

from ldlm_engine import SampleConfig, Trainer, build_tokenizer, generate
from ldlm_engine.config import ProcessConfig
from ldlm_engine.errors import ConfigError
from ldlm_engine.processes import make_process
from ldlm_engine.sampling import Transcript
from ldlm_engine.speculative import accept


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("char", TEXT)


@pytest.fixture(scope="module")
def trained():
    """A tiny shifted block-8 model trained on the test text (a few seconds): its drafts are
    good enough to be kept, as a real model's are."""
    cfg = tiny_config("block", max_steps=150, lr=1e-2, eval_every=150)
    cfg.process.block_size, cfg.process.block_shift, cfg.process.ar_loss = 8, True, 1.0
    cfg.validate()
    events: list = []
    tr = Trainer(cfg, sinks=[events.append], text=TEXT)
    assert tr.run() == "finished"
    return tr, events


def tokens(model, proc, tok, cfg, prompt=""):
    t = Transcript()
    frames = list(generate(model, proc, tok, cfg, prompt))
    for f in frames:
        t.apply(f)
    return t.tokens, frames


def test_accepted_tokens_follow_the_target_distribution():
    """The first committed id is distributed as p[0] whatever q is, including ids q never
    drafts (the residual must supply them); 20,000 draws against a chi-square bound."""
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.5, 0.2, 0.2, 0.1, 0.0], [0.1, 0.1, 0.1, 0.1, 0.6]], dtype=torch.float64)
    q = torch.tensor([[0.1, 0.6, 0.0, 0.1, 0.2]], dtype=torch.float64)
    n = 20_000
    counts = torch.zeros(5)
    kept_total = 0
    for _ in range(n):
        d = torch.multinomial(q, 1, generator=gen).squeeze(1)
        out, kept = accept(p, q, d, gen)
        assert len(out) == kept + 1
        counts[out[0]] += 1
        kept_total += kept
    expected = p[0].float() * n
    assert counts[4] == 0  # p gives it nothing: never committed, though q drafts it
    support = expected > 0
    chi2 = float(((counts[support] - expected[support]) ** 2 / expected[support]).sum())
    assert chi2 < 25.0  # 3 degrees of freedom: p < 1e-4 if the rule were right
    # Acceptance rate is sum(min(p, q)) = 0.1 + 0.2 + 0 + 0.1 + 0 = 0.4.
    assert abs(kept_total / n - 0.4) < 0.02


@pytest.mark.parametrize("prompt", ["", "the cat ", TEXT[:45]])
def test_greedy_speculative_decoding_is_greedy_ar_decoding(tok, prompt):
    """At temperature 0 every draft the ar head disagrees with is replaced by its argmax: the
    text is the same weights' greedy ar text, token for token, past the window too."""
    model, _ = model_and_data(tok, seq=32)
    proc = shifted(tok, 8)
    cfg = SampleConfig(sampler="speculative", length=70, temperature=0.0, seed=1)
    spec, frames = tokens(model, proc, tok, cfg, prompt)
    ar, ar_proc = ar_of(model, tok)
    ref, _ = tokens(ar, ar_proc, tok, SampleConfig(length=70, temperature=0.0), prompt)
    assert spec == ref
    last = frames[-1]
    assert last.done and last.nfe == last.step


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_trained_model_keeps_drafts(trained, temperature):
    """Greedy, the trained model's text is its ar head's; at any temperature a call commits
    more than one token on average once the drafts are worth keeping (this model: ~1.3)."""
    tr, _ = trained
    cfg = SampleConfig(sampler="speculative", length=96, temperature=temperature, seed=3)
    spec, frames = tokens(tr.model, tr.process, tr.tokenizer, cfg, "the ")
    assert frames[-1].done and frames[-1].nfe < 0.9 * 96
    if temperature == 0:
        ar, ar_proc = ar_of(tr.model, tr.tokenizer)
        ref, _ = tokens(ar, ar_proc, tr.tokenizer, SampleConfig(length=96, temperature=0), "the ")
        assert spec == ref


def test_evaluations_report_the_ar_heads_exact_nll(trained):
    """The ar head's figure is the same weights' exact ar NLL on the evaluation windows."""
    from ldlm_engine.evaluation import estimate_nll

    tr, events = trained
    ev = [e for e in events if e.event == "eval"][-1]
    assert ev.ar_head_bits_per_char is not None and not ev.exact
    assert ev.ar_head_bits_per_char < ev.val_bits_per_char  # a bound above, exact below
    ar, ar_proc = ar_of(tr.model, tr.tokenizer)
    ref = estimate_nll(ar, ar_proc, tr.eval_set, chars_per_token=tr.chars_per_token)
    assert ref.exact and ref.ar_head_bits_per_char is None
    assert abs(ref.bits_per_char - ev.ar_head_bits_per_char) < 1e-4


@pytest.mark.parametrize("prompt", ["", "the dog sat ", TEXT[:45]])
@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_cached_speculative_decoding_matches_recomputing(tok, prompt, top_p):
    model, _ = model_and_data(tok, seq=32)
    proc = shifted(tok, 4)
    out = []
    for cache in (True, False):
        cfg = SampleConfig(
            sampler="speculative", length=75, temperature=1.0, top_p=top_p, seed=5, cache=cache
        )
        out.append(tokens(model, proc, tok, cfg, prompt)[0])
    assert out[0] == out[1]
    assert proc.mask_id not in out[0]


def test_frames_commit_left_to_right_and_cover_their_block(tok):
    model, _ = model_and_data(tok, seq=32)
    proc = shifted(tok, 8)
    cfg = SampleConfig(sampler="speculative", length=40, temperature=1.0, seed=2)
    _, frames = tokens(model, proc, tok, cfg, "the ")
    written = 4
    for f in frames[1:]:
        assert f.changed == list(range(written, written + len(f.changed)))
        assert f.offset <= written <= f.offset + len(f.tokens)
        written += len(f.changed)
        assert f.masked == [i >= written for i in range(f.offset, f.offset + len(f.tokens))]
    assert written == 44 and frames[-1].done


def test_a_template_is_infilled_and_a_plain_block_model_is_refused(tok):
    model, _ = model_and_data(tok, seq=32)
    proc = shifted(tok, 8, full_blocks=0.1)
    cfg = SampleConfig(sampler="speculative", temperature=1.0, seed=0)
    out, frames = tokens(model, proc, tok, cfg, "the [MASK*6] sat")
    assert proc.mask_id not in out
    # the ar head's order: one gap token a call, left to right, over the whole window
    gap = list(range(len(tok.encode("the ")), len(tok.encode("the ")) + 6))
    assert [f.changed for f in frames[1:]] == [[i] for i in gap]
    plain = make_process(ProcessConfig(kind="block", block_size=8), tok)
    with pytest.raises(ConfigError, match="token shift"):
        list(generate(model, plain, tok, cfg, "the "))


def test_config_and_cli_refuse_it_without_the_shift(home, corpus_file, tmp_path):
    conf = tmp_path / "plain.toml"
    conf.write_text(
        '[process]\nblock_shift = false\nar_loss = 0.0\n[sample]\nsampler = "speculative"\n'
    )
    r = run_ldlm("train", "--data", corpus_file, "--preset", "tiny", "--config", conf, home=home)
    assert r.returncode == 2
    assert "speculative" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
