"""Figures you can trust: the standard error, bits per character, and the seed preset.

Every figure is checked against an independent computation on tiny real models: the
reported standard error against the spread of the estimate over noise seeds, bits/char
against the characters of the evaluated text counted here by hand.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
from conftest import make_corpus_text, run_ldlm
from engine_helpers import TEXT, tiny_config

from ldlm_engine import (
    RunDir,
    SampleConfig,
    Trainer,
    adapt_process,
    build_tokenizer,
    evaluate_run,
    final_frame,
    get_preset,
    load_run,
)
from ldlm_engine.config import PROCESSES
from ldlm_engine.data import count_chars
from ldlm_engine.evaluation import estimate_nll
from ldlm_engine.presets import PRESETS
from ldlm_engine.tokenizers import WordTokenizer

SEEDS = 32
ALPHA = 1e-3  # two-sided: a correct standard error fails this test once in a thousand


def chi2_ratio_bounds(dof: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Central 1 - alpha interval of chi2(dof) / dof (Wilson-Hilferty, ~1% accurate here)."""
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2)
    c = 2 / (9 * dof)
    return (1 - c - z * math.sqrt(c)) ** 3, (1 - c + z * math.sqrt(c)) ** 3


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def prose() -> str:
    return make_corpus_text(24_000)


def trained(process: str, text: str, steps: int):
    cfg = tiny_config(process, max_steps=steps)
    cfg.train.lr = 1e-2
    tr = Trainer(cfg, text=text, handle_signals=False)
    assert tr.run() == "finished"
    return tr


# --------------------------------------------------------------------------- standard error


@pytest.mark.parametrize("process", ["mask", "uniform"])
def test_standard_error_matches_the_spread_over_noise_seeds(process, prose):
    """Over 32 noise seeds (fixed windows), the estimates' variance / the reported SE² is
    chi2(31)/31 when the SE is right; the old SE (√D too small) is far outside."""
    tr = trained(process, prose, 40 if process == "mask" else 60)
    seq_len = tr.cfg.model.seq_len
    windows = tr.splits.val[: 16 * seq_len].long().view(16, seq_len)
    lo, hi = chi2_ratio_bounds(SEEDS - 1)
    for draws in (8, 1):
        ests = [
            estimate_nll(tr.model, tr.process, windows, samples=draws, seed=s) for s in range(SEEDS)
        ]
        spread = statistics.variance([e.nats_per_token for e in ests])
        se2 = statistics.fmean([e.stderr_nats_per_token**2 for e in ests])
        assert all(e.draws == draws and e.windows == 16 for e in ests)
        if draws == 1:  # window and noise cannot be told apart: an upper bound
            assert spread / se2 < hi
            continue
        assert lo < spread / se2 < hi, (spread, se2)
        assert not spread / (se2 / draws) < hi  # the old formula fails this test


def test_ar_has_no_noise_to_report(prose):
    tr = trained("ar", prose, 10)
    est = tr.evaluate()
    assert est.exact and est.stderr_nats_per_token == 0 and est.draws == 1


# --------------------------------------------------------------------------- bits per char


def token_ends(text: str) -> list[int]:
    """End offset of every word token, found by hand in the text (not via the engine)."""
    ends, pos = [], 0
    for tok in WordTokenizer.split(text):
        pos = text.index(tok, pos) + len(tok)
        ends.append(pos)
    return ends


def word_text() -> str:
    """Plain prose to train on, then a tail with long rare words (unknown to a min_count=2
    vocabulary) and wide indentation: its chars/token is far from the corpus average."""
    tail = (
        "    the   extraordinarily   circumlocutory   deliberations   of   the cat\n"
        "        notwithstanding   incomprehensibilities,   the dog sat   on the mat.\n"
    )
    return TEXT * 2 + tail * 12


def test_word_run_bits_per_char_divides_by_the_evaluated_texts_own_characters(tmp_path):
    text = word_text()
    corpus = tmp_path / "words.txt"
    corpus.write_text(text, encoding="utf-8")
    cfg = tiny_config("mask", max_steps=8)
    cfg.data.tokenizer, cfg.data.word_min_count, cfg.data.source = "word", 2, str(corpus)
    cfg.train.eval_tokens = 3 * cfg.model.seq_len  # a part of the split, not all of it
    rd = RunDir.create(cfg.to_dict(), name="words")
    events = []
    tr = Trainer(cfg, run_dir=rd, sinks=[events.append], handle_signals=False)
    assert tr.run() == "finished"

    ends = token_ends(text)
    n_train, n_eval = tr.splits.train.numel(), tr.eval_set.numel()
    assert n_eval < tr.splits.val.numel()
    chars = ends[n_train + n_eval - 1] - ends[n_train - 1]
    expected_cpt = chars / n_eval
    old_cpt = tr.splits.val_chars / tr.splits.val_tokens  # the corpus's share
    assert abs(old_cpt / expected_cpt - 1) > 0.05  # the text makes the old figure wrong

    ev = [e for e in events if e.event == "eval"][-1]
    assert ev.val_bits_per_char == pytest.approx(ev.val_bits_per_token / expected_cpt, 1e-12)

    loaded = load_run("words", device="cpu")
    own = evaluate_run(loaded, max_tokens=n_eval)
    assert own.chars == chars and own.chars_per_token == pytest.approx(expected_cpt, 1e-12)
    assert own.bits_per_char == pytest.approx(own.bits_per_token / expected_cpt, 1e-12)

    # --data FILE: the first windows of another text, from its start.
    other = tmp_path / "other.txt"
    other_text = "  " + word_text()[::-1].replace("\n", " \n")  # new words: many <unk>
    other.write_text(other_text, encoding="utf-8")
    est = evaluate_run(loaded, data=str(other), max_tokens=2 * cfg.model.seq_len)
    n = est.tokens
    assert n == 2 * cfg.model.seq_len
    assert est.chars == token_ends(other_text)[n - 1]
    d = est.to_dict()
    assert d["chars_per_token"] == pytest.approx(est.chars / n)
    assert d["val_bits_per_char"] == pytest.approx(d["val_bits_per_token"] / d["chars_per_token"])
    for key in ("stderr_bits_per_char", "stderr_bits_per_token", "windows", "draws", "tokens"):
        assert key in d
    assert d["windows"] == 2 and d["draws"] >= 4 and d["stderr_bits_per_char"] > 0


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_count_chars_of_lossless_tokenizers_is_the_decoded_length(kind):
    text = make_corpus_text(6_000)
    tok = build_tokenizer(kind, text, vocab_size=400)
    ids = torch.from_numpy(tok.encode_array(text).astype("int64"))
    total = ids.numel()
    for start, count in ((0, 100), (total // 2, 300), (total - 257, 257)):
        span = ids[start : start + count]
        assert count_chars(tok, text, start, span, total) == len(tok.decode(span.tolist()))


def test_count_chars_of_word_tokens_matches_the_text_counted_by_hand():
    text = "  " + make_corpus_text(8_000).replace(" ", "   ", 200)  # wide gaps, rare words
    tok = build_tokenizer("word", text[:4_000])  # the rest is full of <unk>
    ids = torch.from_numpy(tok.encode_array(text).astype("int64"))
    ends, total = token_ends(text), ids.numel()
    assert (ids == tok.unk_id).sum() > 50
    for start, count in ((0, 64), (1, 500), (total // 3, 700), (total - 300, 300)):
        expected = ends[start + count - 1] - (ends[start - 1] if start else 0)
        assert count_chars(tok, text, start, ids[start : start + count], total) == expected


def test_count_chars_refuses_tokens_that_are_not_the_texts():
    text = TEXT
    tok = build_tokenizer("word", text)
    ids = torch.tensor(tok.encode(text))
    wrong = ids[100:200].flip(0)
    with pytest.raises(Exception, match="does not encode"):
        count_chars(tok, text, 100, wrong, ids.numel())


# --------------------------------------------------------------------------- the seed preset


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("process", PROCESSES)
def test_every_preset_and_process_gets_a_consistent_time_embedding(preset, process):
    cfg = adapt_process(get_preset(preset), process).validate()
    assert cfg.model.time_embedding == (process == "uniform")


@pytest.mark.parametrize("process", ["mask", "uniform", "ar"])
def test_seed_preset_trains_evaluates_and_samples_with_every_process(process):
    cfg = adapt_process(get_preset("seed"), process)
    cfg.train.max_steps = 2  # the seed's 100 epochs, cut short
    cfg.train.eval_tokens = 2 * cfg.model.seq_len
    tr = Trainer(cfg, text=TEXT, handle_signals=False)
    assert tr.run() == "finished"
    est = tr.evaluate()
    assert math.isfinite(est.bits_per_char) and est.exact == (process == "ar")
    sc = SampleConfig(length=6, steps=20 if process == "uniform" else 0, temperature=1.0)
    frame = final_frame(tr.model, tr.process, tr.tokenizer, sc, "the cat", device="cpu")
    assert frame.nfe >= 1 and not any(frame.masked)


def test_seed_preset_is_the_seeds_sampler_and_noise_draws():
    cfg = get_preset("seed")
    assert cfg.sample.steps == cfg.process.timesteps == 1000  # every reverse step, T -> 0
    assert not cfg.process.antithetic  # t independent per sequence, as the seed draws it
    assert cfg.model.time_embedding and cfg.process.kind == "uniform"


def test_cli_trains_the_seed_preset_with_ar_and_reports_its_figures(tmp_path):
    corpus = tmp_path / "seed.txt"
    corpus.write_text(TEXT * 3, encoding="utf-8")
    home = tmp_path / "cli-home"
    res = run_ldlm(
        "train", "--preset", "seed", "--process", "ar", "--max-steps", "2", "--data", corpus,
        "--name", "seed-ar", home=home,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    assert "Traceback" not in res.stderr
    res = run_ldlm("eval", "seed-ar", "--json", "--max-tokens", "256", home=home)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["exact"] and d["draws"] == 1 and d["stderr_bits_per_char"] == 0
    assert d["windows"] == 2 and d["tokens"] == 256
    assert d["val_bits_per_char"] == pytest.approx(d["val_bits_per_token"] / d["chars_per_token"])
