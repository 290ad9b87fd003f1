"""Prompts are kept as typed: unknown words and characters survive, and are reported once."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from engine_helpers import TEXT, tiny_config

import ldlm_engine
from ldlm_engine import (
    ConfigError,
    SampleConfig,
    build_tokenizer,
    describe_unknown,
    final_frame,
    parse_template,
    render_text,
    sample_text,
    unknown_pieces,
)
from ldlm_engine.model import DiffusionTransformer
from ldlm_engine.processes import make_process


def model_for(kind: str, process: str = "mask"):
    """A tiny untrained model over TEXT's vocabulary (prompt handling needs no training)."""
    torch.manual_seed(0)
    tok = build_tokenizer(kind, TEXT, vocab_size=300)
    cfg = tiny_config(process)
    cfg.model.vocab_size = tok.vocab_size
    model = DiffusionTransformer(cfg.model, causal=process == "ar")
    return model, make_process(cfg.process, tok), tok


@pytest.mark.parametrize("process", ["mask", "uniform", "ar"])
def test_unknown_words_come_back_verbatim_at_the_start(process):
    model, proc, tok = model_for("word", process)
    prompt = "ROMEO: the  cat, Zorblax"  # ROMEO, ':', ',' and Zorblax are not in TEXT
    assert tok.encode("ROMEO")[0] == tok.unk_id
    sc = SampleConfig(length=6, steps=5, temperature=1.0)
    text = sample_text(model, proc, tok, sc, prompt)
    assert text.startswith(prompt)
    assert len(text) > len(prompt)
    assert unknown_pieces(tok, prompt) == ["ROMEO:", ",", "Zorblax"]


def test_unknown_characters_come_back_verbatim_for_a_char_model():
    model, proc, tok = model_for("char")
    prompt = "Zürich — the cat Zür"  # TEXT has no 'Z', 'ü', 'r' or '—'
    text = sample_text(model, proc, tok, SampleConfig(length=5, temperature=0.0), prompt)
    assert text.startswith(prompt) and len(text) == len(prompt) + 5
    assert unknown_pieces(tok, prompt) == ["Zür", "—"]  # runs merged, each once, in order


def test_infill_keeps_every_fixed_piece_and_the_model_sees_unk():
    model, proc, tok = model_for("word")
    template = "ROMEO: the [MASK*3] sat on  the [MASK] mat. Fin."
    t = parse_template(tok, template, length=0)
    ids, fixed = t  # still unpacks like the old (ids, fixed) tuple
    assert ids[0] == tok.unk_id and sum(not f for f in fixed) == 4
    assert t.unknown == ("ROMEO:", "Fin")
    frame = final_frame(model, proc, tok, SampleConfig(temperature=0.0), template)
    text = t.render(tok, frame.tokens)
    assert text.startswith("ROMEO: the ") and text.endswith(" mat. Fin.")
    assert " sat on  the " in text  # the user's own spacing, untouched
    assert text == render_text(tok, template, frame.tokens)


def test_word_render_spaces_generated_words_like_decode():
    tok = build_tokenizer("word", TEXT)
    prompt = "the cat"
    tokens = tok.encode(prompt) + tok.encode("sat on the mat.")
    assert render_text(tok, prompt, tokens) == tok.decode(tokens) == "the cat sat on the mat."
    assert render_text(tok, "the cat ", tokens) == "the cat sat on the mat."
    assert render_text(tok, "(", tok.encode("( the cat")) == "(the cat"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_lossless_tokenizers_render_exactly_the_decoded_sequence(kind):
    tok = build_tokenizer(kind, TEXT, vocab_size=300)
    prompt = "the sun is"
    tokens = tok.encode(prompt) + tok.encode(" up and blue.")
    assert render_text(tok, prompt, tokens) == tok.decode(tokens) == "the sun is up and blue."


def test_bpe_sees_every_character():
    tok = build_tokenizer("bpe", TEXT, vocab_size=300)
    assert unknown_pieces(tok, "ROMEO: Zürich 日本 🙂") == []


def test_describe_unknown_is_one_line_and_bounded():
    assert describe_unknown([]) is None
    line = describe_unknown([f"w{i}" for i in range(25)])
    assert "\n" not in line and "'w9'" in line and "'w10'" not in line and "15 more" in line


@pytest.mark.parametrize(
    "template",
    [
        "a [MASK*99999999999999999999] b",
        "[MASK*65537]",
        "[MASK*" + "9" * 5000 + "]",
        "[MASK*40000] and [MASK*40000]",
        "[MASK*0]",
    ],
)
def test_absurd_infill_markers_are_one_line_errors(template):
    tok = build_tokenizer("char", TEXT)
    with pytest.raises(ConfigError) as e:
        parse_template(tok, template, length=0)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_the_largest_marker_is_accepted():
    tok = build_tokenizer("char", TEXT)
    ids, fixed = parse_template(tok, "x[MASK*65536]", length=0)
    assert len(ids) == 65537 and fixed[0] and not any(fixed[1:])


def test_names_stay_importable_and_prompts_is_torch_free():
    from ldlm_engine.sampling import MASK_MARKER
    from ldlm_engine.sampling import parse_template as from_sampling

    assert from_sampling is parse_template is ldlm_engine.parse_template
    assert MASK_MARKER is ldlm_engine.MASK_MARKER
    code = "import sys, ldlm_engine.prompts; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
