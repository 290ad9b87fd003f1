"""Property tests: tokenizers on arbitrary Unicode, beyond tests/test_tokenizers.py.

That file already checks char and BPE ``decode(encode(t)) == t`` on arbitrary text. Here:
text full of the *literal* special strings (``<mask>``, ``[MASK]``, ``<pad>``, NUL ...) is
only text, exactly; a saved-and-reloaded tokenizer encodes arbitrary text identically; chunked
``encode_array`` equals ``encode`` for BPE across forced chunk boundaries; the word tokenizer
round-trips single-spaced words of any script and never crashes on anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ldlm_engine.tokenizers as tk
from ldlm_engine.tokenizers import SPECIAL_TOKENS, WordTokenizer, build_tokenizer, load_tokenizer

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

LITERALS = [*SPECIAL_TOKENS, "[MASK]", "[MASK*3]", "[mask]", "\x00", "\ufeff", "\u200d", "\r\n"]
tricky_text = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(LITERALS)), min_size=1, max_size=12
).map("".join)
SPECIAL_IDS = set(range(len(SPECIAL_TOKENS)))


@SETTINGS
@given(tricky_text)
def test_literal_special_strings_are_just_text(text: str) -> None:
    for kind in ("char", "bpe"):
        tok = build_tokenizer(kind, text, vocab_size=270)
        ids = tok.encode(text)
        assert not SPECIAL_IDS & set(ids), (kind, text)
        assert tok.decode(ids) == text
        assert tok.decode(ids, skip_special=False) == text


@SETTINGS
@given(train=st.text(min_size=1, max_size=80), other=tricky_text)
def test_saved_tokenizer_encodes_identically(tmp_path_factory, train: str, other: str) -> None:
    path: Path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    for kind in ("char", "word", "bpe"):
        tok = build_tokenizer(kind, train, vocab_size=270)
        tok.save(path)
        again = load_tokenizer(path)
        assert again.vocab_size == tok.vocab_size
        for text in (train, other):
            assert again.encode(text) == tok.encode(text), (kind, text)
            assert again.decode(tok.encode(text)) == tok.decode(tok.encode(text))


@SETTINGS
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=8))
def test_bpe_chunked_encoding_equals_whole_encoding(pieces: list[str]) -> None:
    text = " ".join(pieces) + " end"
    tok = build_tokenizer("bpe", text, vocab_size=280)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tk, "_CHUNK_CHARS", 16)  # force many chunk boundaries
        mp.setattr(tk._chunks, "__defaults__", (16,))
        assert tok.encode_array(text).tolist() == tok.encode(text)


# Words of any script: letters and digits (\w), possibly with combining marks.
word = st.text(
    alphabet=st.characters(categories=["Lu", "Ll", "Lo", "Nd"]), min_size=1, max_size=8
).flatmap(lambda w: st.sampled_from([w, w + "\u0301"]))


@SETTINGS
@given(st.lists(word, min_size=1, max_size=20))
def test_word_round_trip_of_single_spaced_words(words: list[str]) -> None:
    text = " ".join(words)
    tok = WordTokenizer().build_vocab(text)
    ids = tok.encode(text)
    assert tok.unk_id not in ids and not SPECIAL_IDS & set(ids)
    assert tok.decode(ids) == text
    assert tok.encode(tok.decode(ids)) == ids


@SETTINGS
@given(train=tricky_text, text=st.text(max_size=200))
def test_word_tokenizer_never_crashes_and_stays_in_vocab(train: str, text: str) -> None:
    tok = build_tokenizer("word", train)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert not {tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id} & set(ids)  # unk at most
    assert tok.encode_array(text).tolist() == ids
    assert isinstance(tok.decode(ids), str)
