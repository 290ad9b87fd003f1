"""Tokenizers: characters, words, or byte-level BPE, all with the same five special tokens.

Every tokenizer reserves ``<pad> <unk> <start> <end> <mask>`` at ids 0..4 so that the model,
the noise processes and the samplers can rely on fixed ids whatever the vocabulary. Special
strings that occur *literally* in a corpus are ordinary text (``"<mask>"`` typed by a user is
characters, not the mask token): only code that asks for ``mask_id`` gets a mask.

Tokenizers are saved as plain JSON (never pickle) so that a run directory from an untrusted
source cannot execute code; anything malformed raises a one-line :class:`CheckpointError`.

``encode_array`` is the path for whole corpora: it encodes in chunks straight into a compact
numpy array (uint16 when the vocabulary allows) so a 100 MB corpus never becomes a Python list
of 100 million ints.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import MAX_VOCAB
from .errors import CheckpointError, ConfigError
from .fileio import atomic_write_bytes, read_bounded

FORMAT_VERSION = 1
TOKENIZER_FILE_LIMIT = 256 << 20  # far above a 1M-entry vocabulary; a refusal, not OOM
SPECIAL_TOKENS = ("<pad>", "<unk>", "<start>", "<end>", "<mask>")
N_SPECIAL = len(SPECIAL_TOKENS)
KINDS = ("char", "word", "bpe")

# Characters per chunk in encode_array / BPE training: big enough that per-chunk overhead
# vanishes, small enough that the temporary per-chunk Python objects stay a few MB.
_CHUNK_CHARS = 1 << 20

# A safe place to cut text for chunked encoding: a space or newline right after a character
# that is certainly not whitespace. Neither the word regex nor GPT-2's byte-level
# pre-tokenizer lets a token run from a non-space character into following whitespace, and
# neither looks behind, so encoding the pieces separately gives exactly the whole encoding.
_CUT = re.compile(r"(?<=[\w.,;:!?'\")\]}])[\n ]")


def _chunks(text: str, size: int = _CHUNK_CHARS) -> Iterator[str]:
    """Split ``text`` into pieces of roughly ``size`` chars at token-safe boundaries."""
    start, n = 0, len(text)
    while start < n:
        if n - start <= size:
            yield text[start:]
            return
        m = _CUT.search(text, start + size)
        end = m.start() if m else n
        yield text[start:end]
        start = end


def _id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.int32)


class Tokenizer:
    """Common interface; subclasses fill in the vocabulary-specific parts."""

    kind: str = ""
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    mask_id: int = 4

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def id_dtype(self) -> np.dtype:
        """The numpy dtype ``encode_array`` uses: 16-bit halves corpus memory vs int32."""
        return _id_dtype(self.vocab_size)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        raise NotImplementedError

    def token_text(self, id: int) -> str:
        """Display text of one token (what the UI shows while a position is denoised)."""
        raise NotImplementedError

    def encode_with_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``encode(text)`` as an int64 array, and each token's [start, end) in ``text``.

        Spans say which characters a token stands for: the text of an ``<unk>``, and the
        characters a per-character figure divides by (:func:`ldlm_engine.data.count_chars`).
        """
        raise NotImplementedError

    def separator(self, left: str, right: str) -> str:
        """What decoding puts between the texts ``left`` and ``right`` when joined.

        Nothing for tokenizers whose tokens carry their own spacing (char, bpe).
        """
        return ""

    def encode_array(self, text: str) -> np.ndarray:
        """Encode a (possibly huge) text chunk by chunk into a 1-D compact id array."""
        dtype = self.id_dtype
        parts = [np.asarray(self.encode(chunk), dtype=dtype) for chunk in _chunks(text)]
        if not parts:
            return np.zeros(0, dtype=dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`tokenizer_from_dict` rebuilds this."""
        return {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "specials": list(SPECIAL_TOKENS),
            **self._payload(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write JSON atomically so a crash never leaves a half-written tokenizer behind."""
        data = json.dumps(self.to_dict(), ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(Path(path), data)

    def _special_text(self, i: int) -> str | None:
        return SPECIAL_TOKENS[i] if 0 <= i < N_SPECIAL else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------- characters


class CharTokenizer(Tokenizer):
    """One token per Unicode code point seen in training; lossless on seen text."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars: list[str] = sorted(set(chars))
        self.itos: list[str] = [*SPECIAL_TOKENS, *self.chars]
        self.stoi: dict[str, int] = {c: i + N_SPECIAL for i, c in enumerate(self.chars)}
        self._table: np.ndarray | None = None

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        get, unk = self.stoi.get, self.unk_id
        return [get(c, unk) for c in text]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        out = []
        itos, n = self.itos, len(self.itos)
        for i in ids:
            i = int(i)
            if i < N_SPECIAL or i >= n:
                if not skip_special:
                    out.append(itos[i] if 0 <= i < n else SPECIAL_TOKENS[self.unk_id])
                continue
            out.append(itos[i])
        return "".join(out)

    def token_text(self, id: int) -> str:
        id = int(id)
        return self.itos[id] if 0 <= id < len(self.itos) else SPECIAL_TOKENS[self.unk_id]

    def encode_with_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        starts = np.arange(len(text), dtype=np.int64)
        return self.encode_array(text).astype(np.int64), np.stack([starts, starts + 1], 1)

    def encode_array(self, text: str) -> np.ndarray:
        """Vectorised: map UTF-32 code points through a lookup table, chunk by chunk."""
        dtype = self.id_dtype
        if self._table is None:
            cps = [ord(c) for c in self.chars]
            table = np.full((max(cps) + 1) if cps else 1, self.unk_id, dtype=dtype)
            for i, cp in enumerate(cps):
                table[cp] = i + N_SPECIAL
            self._table = table
        table = self._table
        top = len(table) - 1
        out = np.empty(len(text), dtype=dtype)
        for start in range(0, len(text), _CHUNK_CHARS):
            piece = text[start : start + _CHUNK_CHARS]
            cps = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype="<u4")
            ids = table[np.minimum(cps, top)]
            ids[cps > top] = self.unk_id
            out[start : start + len(piece)] = ids
        return out

    def _payload(self) -> dict[str, Any]:
        return {"chars": self.chars}


# --------------------------------------------------------------------------- words

# Words keep internal apostrophes/hyphens ("don't", "well-known") and combining marks;
# numbers keep their separators ("3.14", "10:30"); every other non-space character is a token
# of its own; "\n" is a token so verse keeps its line breaks. Other whitespace is dropped.
_W = r"[\w\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
_WORD_RE = re.compile(rf"\n|\d+(?:[.,:]\d+)+(?!\w)|{_W}+(?:['’\-]{_W}+)*|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(",.!?;:)]}%…-")
_NO_SPACE_AFTER = frozenset("([{$£€¿¡#@-")
_QUOTES = frozenset("\"'’`")


class WordTokenizer(Tokenizer):
    """Word-level vocabulary (the seed's SimpleTokenizer), case-preserving.

    Decoding re-inserts single spaces by English punctuation rules, so ``decode(encode(s))``
    reproduces normally spaced prose exactly; runs of spaces, tabs and indentation are lost.
    """

    kind = "word"

    def __init__(self, words: Iterable[str] = ()) -> None:
        self._set_words(list(words))

    def _set_words(self, words: list[str]) -> None:
        self.words = words
        self.itos: list[str] = [*SPECIAL_TOKENS, *words]
        self.stoi: dict[str, int] = {w: i + N_SPECIAL for i, w in enumerate(words)}

    @staticmethod
    def split(text: str) -> list[str]:
        """The word/punctuation/newline tokens of ``text``."""
        return _WORD_RE.findall(text)

    def build_vocab(self, texts: str | Iterable[str], min_count: int = 1) -> WordTokenizer:
        """Vocabulary = tokens seen at least ``min_count`` times, most frequent first."""
        if isinstance(texts, str):
            texts = [texts]
        counts: Counter[str] = Counter()
        for t in texts:
            for chunk in _chunks(t):
                counts.update(_WORD_RE.findall(chunk))
        words = [w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS]
        words.sort(key=lambda w: (-counts[w], w))
        self._set_words(words)
        return self

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        get, unk = self.stoi.get, self.unk_id
        return [get(w, unk) for w in _WORD_RE.findall(text)]

    def encode_array(self, text: str) -> np.ndarray:
        dtype = self.id_dtype
        get, unk = self.stoi.get, self.unk_id
        parts = []
        for chunk in _chunks(text):
            words = _WORD_RE.findall(chunk)
            parts.append(np.fromiter((get(w, unk) for w in words), dtype=dtype, count=len(words)))
        if not parts:
            return np.zeros(0, dtype=dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        toks = []
        n = len(self.itos)
        for i in ids:
            i = int(i)
            if N_SPECIAL <= i < n:
                toks.append(self.itos[i])
            elif not skip_special:
                toks.append(self.itos[i] if 0 <= i < n else SPECIAL_TOKENS[self.unk_id])
        return detokenize(toks)

    def token_text(self, id: int) -> str:
        id = int(id)
        return self.itos[id] if 0 <= id < len(self.itos) else SPECIAL_TOKENS[self.unk_id]

    def encode_with_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        get, unk = self.stoi.get, self.unk_id
        ids, spans = array("q"), array("q")  # 8 bytes an entry, not a Python int each
        for m in _WORD_RE.finditer(text):
            ids.append(get(m.group(), unk))
            spans.extend(m.span())
        return np.frombuffer(ids, np.int64), np.frombuffer(spans, np.int64).reshape(-1, 2)

    def separator(self, left: str, right: str) -> str:
        """A space where :func:`detokenize` would put one (quotes opened in ``left`` count)."""
        if not left or not right or left[-1].isspace() or right[0].isspace():
            return ""
        a, b = _WORD_RE.findall(left), _WORD_RE.findall(right)
        if not a or not b:
            return ""
        base = detokenize(a)
        return detokenize([*a, b[0]])[len(base) : -len(b[0])]

    def _payload(self) -> dict[str, Any]:
        return {"vocab": self.words}


def detokenize(toks: list[str]) -> str:
    """Join word tokens with the spacing a reader expects (no space before ',', etc.)."""
    out: list[str] = []
    prev: str | None = None  # None = start of text or of a line
    open_quotes: set[str] = set()
    glue_next = False  # previous token was an opening bracket/quote
    for tok in toks:
        if tok == "\n":
            out.append("\n")
            prev, glue_next = None, False
            continue
        space = prev is not None and not glue_next and prev not in _NO_SPACE_AFTER
        glue_next = False
        if tok in _NO_SPACE_BEFORE:
            space = False
        elif tok in _QUOTES:
            q = "'" if tok == "’" else tok
            if q in open_quotes:  # closing quote hugs the word before it
                open_quotes.discard(q)
                space = False
            else:  # opening quote hugs the word after it
                open_quotes.add(q)
                glue_next = True
        if space:
            out.append(" ")
        out.append(tok)
        prev = tok
    return "".join(out)


# --------------------------------------------------------------------------- byte-level BPE


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, as used by the byte-level pre-tokenizer."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


class BPETokenizer(Tokenizer):
    """Byte-level BPE via Hugging Face ``tokenizers``: any text round-trips exactly.

    Byte-level means every string is representable (no ``<unk>``), and with no normaliser and
    no prefix space, decoding returns the original bytes, spaces and newlines included.
    """

    kind = "bpe"

    def __init__(self, hf: Any) -> None:
        self._hf = hf
        self._texts: list[str] | None = None

    @classmethod
    def train(
        cls, texts: str | Iterable[str], vocab_size: int = 2048, min_count: int = 1
    ) -> BPETokenizer:
        """Train in memory; ``vocab_size`` is raised to 261 (5 specials + 256 bytes)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if isinstance(texts, str):
            texts = [texts]
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=max(int(vocab_size), N_SPECIAL + 256),
            min_frequency=max(int(min_count), 0),
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator((c for t in texts for c in _chunks(t)), trainer=trainer)
        # The trainer registers the specials as "added tokens", which makes HF match a literal
        # "<mask>" in input text; dropping them keeps the ids (they stay in the model vocab)
        # while text is always just text, as for the char and word tokenizers.
        d = json.loads(hf.to_str())
        d["added_tokens"] = []
        return cls(HFTokenizer.from_str(json.dumps(d)))

    @property
    def vocab_size(self) -> int:
        return int(self._hf.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        """Encode groups of chunks with ``encode_batch`` so the Rust side uses all cores."""
        dtype = self.id_dtype
        parts: list[np.ndarray] = []
        group: list[str] = []
        chunks = _chunks(text, max(1, _CHUNK_CHARS // 8))
        while True:
            chunk = next(chunks, None)
            if chunk is not None:
                group.append(chunk)
            if group and (chunk is None or len(group) == 8):
                for enc in self._hf.encode_batch(group, add_special_tokens=False):
                    parts.append(np.asarray(enc.ids, dtype=dtype))
                group = []
            if chunk is None:
                break
        if not parts:
            return np.zeros(0, dtype=dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        n = self.vocab_size
        ids = [int(i) for i in ids]
        if skip_special:
            ids = [i for i in ids if N_SPECIAL <= i < n]
        else:
            ids = [i if 0 <= i < n else self.unk_id for i in ids]
        return self._hf.decode(ids, skip_special_tokens=False)

    def token_text(self, id: int) -> str:
        """The token's bytes as text; a piece of a multi-byte character shows as U+FFFD."""
        if self._texts is None:
            texts = []
            for i in range(self.vocab_size):
                tok = self._hf.id_to_token(i) or ""
                if i < N_SPECIAL:
                    texts.append(tok)
                    continue
                raw = bytes(_BYTE_DECODER.get(c, 0x3F) for c in tok)
                texts.append(raw.decode("utf-8", errors="replace"))
            self._texts = texts
        id = int(id)
        return self._texts[id] if 0 <= id < len(self._texts) else SPECIAL_TOKENS[self.unk_id]

    def encode_with_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Byte-level tokens may split a character: its span is then shared (HF offsets).

        Chunk by chunk, so a long text never becomes one list of Python offset tuples.
        """
        ids, spans, base = [np.zeros(0, np.int64)], [np.zeros((0, 2), np.int64)], 0
        for chunk in _chunks(text, max(1, _CHUNK_CHARS // 8)):
            enc = self._hf.encode(chunk, add_special_tokens=False)
            ids.append(np.asarray(enc.ids, dtype=np.int64))
            spans.append(np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2) + base)
            base += len(chunk)
        return np.concatenate(ids), np.concatenate(spans)

    def _payload(self) -> dict[str, Any]:
        return {"hf_json": self._hf.to_str()}


# --------------------------------------------------------------------------- construction


def build_tokenizer(
    kind: str, text: str, *, vocab_size: int = 2048, min_count: int = 1
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``text``.

    ``vocab_size`` is the BPE target (char and word vocabularies are whatever the text has);
    ``min_count`` drops rarer words (word) or merges (bpe).
    """
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "word":
        return WordTokenizer().build_vocab(text, min_count=min_count)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size=vocab_size, min_count=min_count)
    raise ConfigError(f"unknown tokenizer {kind!r}; choose one of {', '.join(KINDS)}")


def _str_list(d: dict[str, Any], key: str, *, single_chars: bool = False) -> list[str]:
    items = d.get(key)
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise CheckpointError(f"tokenizer field {key!r} must be a list of non-empty strings")
    if single_chars and any(len(x) != 1 for x in items):
        raise CheckpointError(f"tokenizer field {key!r} must hold single characters")
    if len(set(items)) != len(items):
        raise CheckpointError(f"tokenizer field {key!r} has duplicate entries")
    if set(items) & set(SPECIAL_TOKENS):
        raise CheckpointError(f"tokenizer field {key!r} must not repeat the special tokens")
    if len(items) + N_SPECIAL > MAX_VOCAB:
        raise CheckpointError(f"tokenizer vocabulary is larger than {MAX_VOCAB}")
    return items


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_dict` output, validating everything."""
    if not isinstance(d, dict):
        raise CheckpointError("tokenizer data must be a JSON object")
    version = d.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"tokenizer format_version {version!r} is not supported (this ldlm reads "
            f"{FORMAT_VERSION})"
        )
    if d.get("specials", list(SPECIAL_TOKENS)) != list(SPECIAL_TOKENS):
        raise CheckpointError("tokenizer has unexpected special tokens")
    kind = d.get("kind")
    if kind == "char":
        return CharTokenizer(_str_list(d, "chars", single_chars=True))
    if kind == "word":
        return WordTokenizer(_str_list(d, "vocab"))
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        raw = d.get("hf_json")
        if not isinstance(raw, str):
            raise CheckpointError("tokenizer field 'hf_json' must be a string")
        try:
            hf = HFTokenizer.from_str(raw)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"damaged BPE tokenizer data: {msg}") from None
        if hf.get_vocab_size(with_added_tokens=True) > MAX_VOCAB:
            raise CheckpointError(f"tokenizer vocabulary is larger than {MAX_VOCAB}")
        for i, s in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(s) != i:
                raise CheckpointError(f"BPE tokenizer does not have {s} at id {i}")
        return BPETokenizer(hf)
    raise CheckpointError(f"unknown tokenizer kind {kind!r}")


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer JSON file written by :meth:`Tokenizer.save` (never unpickles)."""
    p = Path(path)
    try:  # bounded, no symlink, FIFO or device (a run's file may be hostile)
        raw = read_bounded(p, TOKENIZER_FILE_LIMIT)
    except FileNotFoundError:
        raise CheckpointError(f"tokenizer file not found: {p}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read tokenizer file {p}: {e.strerror}") from None
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = str(e).splitlines()[0]
        raise CheckpointError(f"tokenizer file {p} is not valid JSON: {msg}") from None
    try:
        return tokenizer_from_dict(d)
    except CheckpointError as e:
        raise CheckpointError(f"tokenizer file {p}: {e}") from None
