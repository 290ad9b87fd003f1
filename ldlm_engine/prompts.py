"""Prompts and infill templates: what the user typed, what the model sees, the text shown.

A prompt is a run of pieces. Fixed pieces are the user's text: kept verbatim for the output
and encoded for the model, where anything the vocabulary lacks becomes ``<unk>`` and is
reported once (a word model asked for "ROMEO:" that has never seen "ROMEO" must say so, not
answer ":"). Generated pieces are the ``[MASK]``/``[MASK*N]`` markers, or ``length`` tokens
after a plain prompt. The final text puts the fixed pieces back as typed and decodes only
what the model wrote. Torch-free, so front ends can parse and report before loading a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import MAX_SEQ_LEN
from .errors import ConfigError

if TYPE_CHECKING:
    from .tokenizers import Tokenizer

MASK_MARKER = re.compile(r"\[MASK(?:\*(\d+))?\]")
"""Infill marker in a prompt: ``[MASK]`` is one token to generate, ``[MASK*12]`` twelve."""

MAX_GENERATED = MAX_SEQ_LEN
"""Most positions a prompt may ask for in all: no model of ldlm has more."""

_MAX_SHOWN = 10  # unknown pieces named in a warning before "and N more"


@dataclass(frozen=True)
class PromptPiece:
    """``text`` as typed ("" for a generated run) and the ids the model gets for it."""

    text: str
    ids: tuple[int, ...]
    fixed: bool


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed prompt: its pieces in order, and the text the model could not see.

    ``unknown`` lists, once each and in order, the stretches of fixed text that the
    vocabulary lacks (encoded as ``<unk>``). Unpacks as ``ids, fixed`` like the tuple that
    ``parse_template`` used to return.
    """

    pieces: tuple[PromptPiece, ...]
    unknown: tuple[str, ...]

    @property
    def ids(self) -> list[int]:
        return [i for p in self.pieces for i in p.ids]

    @property
    def fixed(self) -> list[bool]:
        return [p.fixed for p in self.pieces for _ in p.ids]

    def __iter__(self) -> Iterator[list]:
        return iter((self.ids, self.fixed))

    def render(self, tokenizer: Tokenizer, tokens: Sequence[int]) -> str:
        """The whole text: fixed pieces verbatim, generated ones decoded from ``tokens``.

        ``tokens`` is the full sequence (a sampler's last frame); tokens past the template,
        as after a plain prompt parsed with ``length=0``, are a generated tail.
        """
        tokens = list(tokens)
        texts: list[str] = []
        pos = 0
        for piece in self.pieces:
            n = len(piece.ids)
            texts.append(piece.text if piece.fixed else tokenizer.decode(tokens[pos : pos + n]))
            pos += n
        if pos < len(tokens):
            texts.append(tokenizer.decode(tokens[pos:]))
        out = ""
        for text in texts:
            if text:
                out += tokenizer.separator(out, text) + text
        return out


def _unknown_stretches(tokenizer: Tokenizer, text: str) -> tuple[list[int], list[str]]:
    """Ids of ``text`` and the stretches encoded as ``<unk>`` (adjacent ones merged)."""
    ids, spans = tokenizer.encode_with_spans(text)
    unknown: list[str] = []
    last_end = -1
    for i, (start, end) in zip(ids.tolist(), spans.tolist(), strict=True):
        if i != tokenizer.unk_id:
            continue
        if start == last_end and unknown:
            unknown[-1] += text[start:end]
        else:
            unknown.append(text[start:end])
        last_end = end
    return ids.tolist(), unknown


def _marker_count(m: re.Match[str]) -> int:
    digits = m.group(1)
    if digits is None:
        return 1
    if len(digits) > len(str(MAX_GENERATED)) or int(digits) > MAX_GENERATED:
        shown = m.group(0) if len(m.group(0)) <= 24 else m.group(0)[:20] + "…]"
        raise ConfigError(f"{shown}: an infill marker may ask for at most {MAX_GENERATED:,} tokens")
    n = int(digits)
    if n < 1:
        raise ConfigError("an infill marker must ask for at least one token: [MASK*N], N>=1")
    return n


def parse_template(tokenizer: Tokenizer, prompt: str, length: int) -> PromptTemplate:
    """Pieces of a prompt or infill template, with the ids the model gets for each.

    Without markers the prompt is a fixed prefix followed by ``length`` generated positions;
    with ``[MASK]``/``[MASK*N]`` markers exactly the marked positions are generated.
    """
    pieces: list[PromptPiece] = []
    unknown: dict[str, None] = {}  # ordered, each once
    generated = 0

    def fixed_piece(text: str) -> None:
        if text:
            ids, unk = _unknown_stretches(tokenizer, text)
            pieces.append(PromptPiece(text, tuple(ids), True))
            unknown.update(dict.fromkeys(unk))

    def generated_piece(n: int) -> None:
        nonlocal generated
        generated += n
        if generated > MAX_GENERATED:
            raise ConfigError(f"the prompt asks for more than {MAX_GENERATED:,} tokens")
        pieces.append(PromptPiece("", (tokenizer.mask_id,) * n, False))

    pos = 0
    has_marker = False
    for m in MASK_MARKER.finditer(prompt):
        has_marker = True
        fixed_piece(prompt[pos : m.start()])
        generated_piece(_marker_count(m))
        pos = m.end()
    fixed_piece(prompt[pos:])
    if not has_marker and length > 0:
        generated_piece(length)
    return PromptTemplate(tuple(pieces), tuple(unknown))


def render_text(tokenizer: Tokenizer, prompt: str, tokens: Sequence[int]) -> str:
    """The text of a finished generation for ``prompt``: the user's text kept verbatim.

    ``tokens`` is the whole sequence (``Frame.tokens`` of the last frame), prompt included.
    """
    return parse_template(tokenizer, prompt, 0).render(tokenizer, tokens)


def typed_texts(tokenizer: Tokenizer, prompt: str) -> dict[int, str]:
    """Position -> the text as typed, for each prompt token the vocabulary cannot show.

    A word the model does not know reaches it as ``<unk>``, but the user typed a word: front
    ends draw these strings at those positions (positions count from the start of the whole
    sequence, as in a sampler's frames), so a prompt always reads as typed while it is being
    continued, as the finished text (:func:`render_text`) does.
    """
    out: dict[int, str] = {}
    pos = 0
    for piece in parse_template(tokenizer, prompt, 0).pieces:
        if piece.fixed:
            ids, spans = tokenizer.encode_with_spans(piece.text)
            for j, (i, (start, end)) in enumerate(zip(ids.tolist(), spans.tolist(), strict=True)):
                if i == tokenizer.unk_id:
                    out[pos + j] = piece.text[start:end]
        pos += len(piece.ids)
    return out


def unknown_pieces(tokenizer: Tokenizer, prompt: str) -> list[str]:
    """The stretches of ``prompt`` the model cannot see (they reach it as ``<unk>``)."""
    return list(parse_template(tokenizer, prompt, 0).unknown)


def describe_unknown(pieces: Sequence[str]) -> str | None:
    """One line for stderr or the app naming what the model could not see; None if nothing."""
    if not pieces:
        return None
    shown = ", ".join(repr(p) for p in pieces[:_MAX_SHOWN])
    more = f" and {len(pieces) - _MAX_SHOWN} more" if len(pieces) > _MAX_SHOWN else ""
    return f"not in the model's vocabulary: {shown}{more} (kept in the text; the model sees <unk>)"


def repeated_token(tokens: Sequence[int], fixed: Sequence[bool]) -> tuple[int, float] | None:
    """``(token, share)`` when the generated part collapsed into one repeated token.

    A greedy or under-trained model often writes one token over and over (``ROMEO:`` and 48
    spaces); the pane then says so instead of leaving the user to think the model is broken.
    Collapsed = at least 8 generated tokens and one token makes up 60% of them, or a final run
    of one token covers at least half of them.
    """
    gen = [t for t, f in zip(tokens, fixed, strict=False) if not f]
    if len(gen) < 8:
        return None
    counts: dict[int, int] = {}
    for t in gen:
        counts[t] = counts.get(t, 0) + 1
    top, count = max(counts.items(), key=lambda kv: kv[1])
    if count / len(gen) >= 0.6:
        return top, count / len(gen)
    run = 1
    while run < len(gen) and gen[-run - 1] == gen[-1]:
        run += 1
    if run * 2 >= len(gen):
        return gen[-1], run / len(gen)
    return None
