"""Tokenizers: exact round-trips, fixed special ids, safe JSON persistence, chunked encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldlm_engine.errors import CheckpointError, ConfigError
from ldlm_engine.tokenizers import (
    SPECIAL_TOKENS,
    BPETokenizer,
    CharTokenizer,
    WordTokenizer,
    build_tokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)

UNICODE_TEXT = (
    "  Leading spaces, trailing spaces  \n"
    "\n\tTabs\tand newlines\n"
    "café naïve Ünïcödé — ‘quotes’ «guillemets» 日本語のテキスト\n"
    "emoji 🙂👍🏽 family 👨‍👩‍👧 and combining e\u0301 a\u0308 o\u0302\n"
    "CRLF normalised\nend without newline"
)
ENGLISH = "Hello, world! It's 3 o'clock.\nNew line here."


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    tok = build_tokenizer("bpe", UNICODE_TEXT * 3 + ENGLISH, vocab_size=300)
    assert isinstance(tok, BPETokenizer)
    return tok


def test_specials_fixed_for_every_kind(bpe):
    toks = [build_tokenizer("char", ENGLISH), build_tokenizer("word", ENGLISH), bpe]
    for tok in toks:
        assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 1, 2, 3, 4)
        for i, s in enumerate(SPECIAL_TOKENS):
            assert tok.token_text(i) == s
        shown = tok.decode([tok.mask_id, tok.bos_id], skip_special=False)
        assert shown.replace(" ", "") == "<mask><start>"
        assert tok.decode([tok.mask_id, tok.bos_id, tok.pad_id]) == ""
        # A literal "<mask>" in text is text, never the mask token.
        assert tok.mask_id not in tok.encode("a <mask> b")
        assert tok.vocab_size > 5


def test_char_round_trip_unicode():
    tok = build_tokenizer("char", UNICODE_TEXT)
    assert isinstance(tok, CharTokenizer)
    ids = tok.encode(UNICODE_TEXT)
    assert len(ids) == len(UNICODE_TEXT)
    assert tok.decode(ids) == UNICODE_TEXT
    assert tok.unk_id not in ids
    assert "".join(tok.token_text(i) for i in ids) == UNICODE_TEXT


def test_char_unseen_is_unk():
    tok = build_tokenizer("char", "abc")
    assert tok.encode("abz") == [tok.encode("a")[0], tok.encode("b")[0], tok.unk_id]
    assert tok.decode(tok.encode("abz")) == "ab"
    assert list(tok.encode_array("abz🙂")) == tok.encode("abz🙂")


def test_bpe_round_trip_exact(bpe):
    for text in [UNICODE_TEXT, ENGLISH, "   ", "\n\n\n", " x", "unseen words ∮ ☃ 𝄞 \x00"]:
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
    assert 261 <= bpe.vocab_size <= 300


def test_bpe_token_text_concatenates_to_text(bpe):
    ids = bpe.encode(ENGLISH)
    assert "".join(bpe.token_text(i) for i in ids) == ENGLISH
    assert len(ids) < len(ENGLISH)  # merges actually happened


def test_word_round_trip_english():
    tok = build_tokenizer("word", ENGLISH)
    assert isinstance(tok, WordTokenizer)
    assert tok.decode(tok.encode(ENGLISH)) == ENGLISH
    assert "It's" in tok.stoi and "o'clock" in tok.stoi and "\n" in tok.stoi


def test_word_splitting_and_spacing():
    text = 'He said "hi there" (quietly), 3.14 times; well-known!\nDon\'t stop.'
    tok = WordTokenizer().build_vocab([text])
    assert WordTokenizer.split("Don't stop, 3.14!") == ["Don't", "stop", ",", "3.14", "!"]
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("unheard-of zebra") == [tok.unk_id, tok.unk_id]


def test_word_min_count_and_case():
    tok = WordTokenizer().build_vocab("The the the cat", min_count=2)
    assert "the" in tok.stoi and "The" not in tok.stoi and "cat" not in tok.stoi


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_save_load_round_trip(tmp_path, kind):
    tok = build_tokenizer(kind, UNICODE_TEXT + ENGLISH, vocab_size=280)
    path = tmp_path / "tok.json"
    tok.save(path)
    assert not [p for p in tmp_path.iterdir() if p.name != "tok.json"]  # no temp files left
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["kind"] == kind and data["format_version"] == 1
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok)
    assert loaded.vocab_size == tok.vocab_size
    sample = UNICODE_TEXT + " never seen ✓"
    assert loaded.encode(sample) == tok.encode(sample)
    assert tokenizer_from_dict(tok.to_dict()).encode(ENGLISH) == tok.encode(ENGLISH)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json at all",
        b"\x80\x81\x82 binary",
        b'{"kind": "char", "format_version": 1, "chars": ["a", "b"',  # truncated
        b"[1, 2, 3]",
        b'{"kind": "char", "format_version": 99, "chars": ["a"]}',
        b'{"kind": "pickle", "format_version": 1}',
        b'{"kind": "char", "format_version": 1, "chars": ["ab"]}',
        b'{"kind": "char", "format_version": 1, "chars": ["a", "a"]}',
        b'{"kind": "word", "format_version": 1, "vocab": ["x", "<mask>"]}',
        b'{"kind": "word", "format_version": 1, "vocab": [1, 2]}',
        b'{"kind": "bpe", "format_version": 1, "hf_json": "{\\"broken\\": 1}"}',
        b'{"kind": "bpe", "format_version": 1, "hf_json": 5}',
    ],
)
def test_load_garbage_raises_checkpoint_error(tmp_path, content):
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_tokenizer(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg


def test_load_truncated_real_file_and_missing(tmp_path, bpe):
    path = tmp_path / "tok.json"
    bpe.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_tokenizer(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")


def test_bpe_tampered_specials_rejected(bpe):
    d = bpe.to_dict()
    hf = json.loads(d["hf_json"])
    vocab = hf["model"]["vocab"]
    vocab["<mask>"], vocab["!"] = vocab["!"], vocab["<mask>"]
    d["hf_json"] = json.dumps(hf)
    with pytest.raises(CheckpointError, match="<mask>"):
        tokenizer_from_dict(d)


def test_unknown_kind():
    with pytest.raises(ConfigError):
        build_tokenizer("sentencepiece", "abc")


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_encode_array_equals_encode_across_chunks(monkeypatch, kind):
    import ldlm_engine.tokenizers as tk

    # Whitespace runs make naive cuts change BPE's pre-tokenization; the cuts must avoid that.
    line = "The quick brown fox,   jumping — over 12.5 dogs!\n\n    indented  \n  line 🙂  \n"
    text = line * 40 + "end"
    tok = build_tokenizer(kind, text, vocab_size=300)
    monkeypatch.setattr(tk, "_CHUNK_CHARS", 37)  # force many chunk boundaries
    monkeypatch.setattr(tk._chunks, "__defaults__", (37,))
    arr = tok.encode_array(text)
    assert arr.dtype == np.uint16 and arr.ndim == 1
    assert arr.tolist() == tok.encode(text)
    assert tok.encode_array("").shape == (0,)


def test_large_vocab_uses_int32():
    tok = CharTokenizer(chr(0x4E00 + i) for i in range(70_000))
    assert tok.vocab_size > 65536
    text = chr(0x4E00) + chr(0x4E00 + 69_999) + "a"
    arr = tok.encode_array(text)
    assert arr.dtype == np.int32
    assert arr.tolist() == tok.encode(text) == [5, 70_004, tok.unk_id]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=200))
def test_property_char_and_bpe_round_trip(text):
    char = build_tokenizer("char", text)
    assert char.decode(char.encode(text)) == text
    assert char.encode_array(text).tolist() == char.encode(text)
    bpe = build_tokenizer("bpe", text, vocab_size=280)
    ids = bpe.encode(text)
    assert bpe.mask_id not in ids
    assert bpe.decode(ids) == text
