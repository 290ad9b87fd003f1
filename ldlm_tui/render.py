"""One renderer for generated text, shared by ``ldlm generate --animate`` and the app.

A generation is drawn from the whole sequence so far (``tokens``, ``masked``, ``confidence``,
``fixed``, one entry per position) plus what the latest model call did (``changed``, absolute
positions) and how far the sampler has planned to write (``end``). Still-masked positions show
as :data:`MASK_GLYPH` (one per token); tokens this call revealed or changed are highlighted
(reverse + bold); every generated token is coloured by the model's confidence in it (red →
yellow → green); fixed context (prompt, infill context) is dimmed. Control characters are
drawn as Unicode control pictures, a revealed newline as ``↵`` before the break, and word
tokens get spaces between them. Token text is appended as plain text: generated text is never
parsed as markup. Only Rich is imported, so the CLI and the Textual app draw the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.style import Style
from rich.text import Text

MASK_GLYPH = "░"
"""Placeholder for a position that is still masked (one glyph per token)."""

NEWLINE_MARK = "↵"
"""Shown (highlighted) before a line break that this frame revealed, so it stays visible."""

MAX_MASK_TAIL = 256
"""At most this many placeholders are drawn for the masked positions at the end of the text;
the rest is summarised as "⋯ N more to generate" (a 4,000-token request must not fill the
screen with placeholders before its first block)."""

# Word tokens are shown space-separated, except around this punctuation (a light version of
# the word tokenizer's own detokenizer: the view must not reflow as tokens get revealed).
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}%")
_NO_SPACE_AFTER = frozenset("([{")

_N_COLOURS = 21
# Control characters a model might emit would move the terminal's cursor: draw them as the
# Unicode "control pictures" instead (tab and newline keep their meaning).
_CONTROL = {c: 0x2400 + c for c in range(32) if c not in (9, 10)}
_CONTROL[127] = 0x2421


def confidence_rgb(c: float) -> tuple[int, int, int]:
    """Red (0) → yellow (0.5) → green (1), softened so it reads on dark and light themes."""
    c = 0.0 if c != c else min(1.0, max(0.0, float(c)))
    red, yellow, green = (220, 60, 60), (220, 190, 50), (70, 190, 80)
    a, b, t = (red, yellow, c * 2) if c < 0.5 else (yellow, green, c * 2 - 1)
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


CONF_STYLES = [Style(color=_rgb(confidence_rgb(i / (_N_COLOURS - 1)))) for i in range(_N_COLOURS)]
HIGHLIGHT_STYLES = [s + Style(bold=True, reverse=True) for s in CONF_STYLES]
FIXED_STYLE = Style(dim=True)
MASK_STYLE = Style(color="rgb(110,110,110)")
MASK_HIGHLIGHT_STYLE = MASK_STYLE + Style(bold=True, reverse=True)
NOTE_STYLE = Style(dim=True, italic=True)


def _bucket(c: float) -> int:
    if c != c:  # NaN
        return 0
    return min(_N_COLOURS - 1, max(0, round(c * (_N_COLOURS - 1))))


class TokenTexts:
    """Display strings of a tokenizer's tokens, sanitised once and cached per id."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.words = getattr(tokenizer, "kind", "") == "word"
        self._cache: dict[int, str] = {}

    def __call__(self, id: int) -> str:
        s = self._cache.get(id)
        if s is None:
            try:
                s = str(self.tokenizer.token_text(id))
            except Exception:  # a broken vocabulary entry must not break the view
                s = "\ufffd"
            s = s.translate(_CONTROL)
            self._cache[id] = s
        return s


def render_sequence(
    tokens: Sequence[int],
    masked: Sequence[bool],
    confidence: Sequence[float],
    fixed: Sequence[bool],
    changed: Sequence[int],
    texts: TokenTexts,
    *,
    end: int | None = None,
    start: int = 0,
    base: int = 0,
    max_mask_tail: int = MAX_MASK_TAIL,
    note: bool = True,
    typed: Mapping[int, str] | None = None,
) -> Text:
    """The sequence as one styled :class:`Text` (same-style neighbours share a span).

    The lists hold positions ``base``, ``base + 1``, ... (``changed`` and ``start``/``end``
    are absolute); positions ``start`` .. ``end`` are drawn. From ``end`` on, positions are
    counted in a "⋯ N more to generate" note (a left-to-right sampler's not-yet-started
    part); masked positions at the end of the drawn part beyond ``max_mask_tail`` are
    summarised the same way. A text drawn in pieces (``start`` at a line start) is drawn
    exactly as the whole; ``note=False`` leaves the note out (a piece in the middle).
    ``typed`` (absolute position -> text, from the engine's ``TimedFrame.typed``) draws
    prompt words the vocabulary lacks as typed instead of ``<unk>``.
    """
    n = base + len(tokens)
    stop = n if end is None else max(start, min(end, n))
    tail = stop
    while tail > start and tail - 1 - base < len(masked) and masked[tail - 1 - base]:
        tail -= 1
    stop = min(stop, tail + max_mask_tail)
    out = Text(overflow="fold", no_wrap=False, end="")
    changed_set = set(changed)
    n_masked, n_fixed, n_conf = len(masked), len(fixed), len(confidence)
    run: list[str] = []
    run_style: Style | None = None
    glue = True  # word tokens: no space at the start of the text or of a line
    for a in range(start, stop):
        i = a - base
        if i < n_masked and masked[i]:
            piece = MASK_GLYPH
            style = MASK_HIGHLIGHT_STYLE if a in changed_set else MASK_STYLE
        else:
            shown = typed.get(a) if typed else None
            piece = texts(tokens[i]) if shown is None else shown.translate(_CONTROL)
            if i < n_fixed and fixed[i]:
                style = FIXED_STYLE
            else:
                k = _bucket(confidence[i]) if i < n_conf else 0
                if a in changed_set:
                    style = HIGHLIGHT_STYLES[k]
                    if "\n" in piece:
                        piece = piece.replace("\n", NEWLINE_MARK + "\n")
                    elif piece == "" or piece.isspace():
                        # A revealed space would be an invisible highlight: mark it.
                        piece = piece or " "
                else:
                    style = CONF_STYLES[k]
        if texts.words:
            starts_line = piece.startswith("\n") or piece.startswith(NEWLINE_MARK)
            if not glue and not starts_line and piece not in _NO_SPACE_BEFORE:
                if style is run_style:
                    run.append(" ")
                else:
                    if run:
                        out.append("".join(run), run_style)
                    run, run_style = [" "], None
            glue = piece.endswith("\n") or piece in _NO_SPACE_AFTER
        if style is not run_style:
            if run:
                out.append("".join(run), run_style)
            run, run_style = [], style
        run.append(piece)
    if run:
        out.append("".join(run), run_style)
    if note and stop < n:
        out.append(f" ⋯ {n - stop:,} more to generate", NOTE_STYLE)
    return out


def render_frame(frame: Any, tokenizer: Any, *, texts: TokenTexts | None = None) -> Text:
    """A full-sequence frame (offset 0, e.g. ``Transcript.frame()``) as styled text."""
    texts = texts if texts is not None else TokenTexts(tokenizer)
    return render_sequence(
        frame.tokens, frame.masked, frame.confidence, frame.fixed, frame.changed, texts
    )


def render_transcript(
    transcript: Any,
    tokenizer: Any,
    *,
    texts: TokenTexts | None = None,
    typed: Mapping[int, str] | None = None,
) -> Text:
    """The whole text so far of a :class:`ldlm_engine.sampling.Transcript` fed every frame.

    Drawn up to the end of the latest frame's window: what a left-to-right sampler has not
    reached yet is a one-line note, not a screen of placeholders.
    """
    texts = texts if texts is not None else TokenTexts(tokenizer)
    last = transcript.last
    end = None
    changed: Sequence[int] = ()
    if last is not None:
        changed = last.changed
        if last.step > 0:
            end = getattr(last, "offset", 0) + len(last.tokens)
    return render_sequence(
        transcript.tokens,
        transcript.masked,
        transcript.confidence,
        transcript.fixed,
        changed,
        texts,
        end=end,
        typed=typed,
    )


def legend() -> Text:
    """One line explaining the colours: masked, new this call, confidence, context."""
    out = Text(end="")
    out.append(MASK_GLYPH, MASK_STYLE)
    out.append(" masked · ", NOTE_STYLE)
    out.append("new", HIGHLIGHT_STYLES[-1])
    out.append(" · confidence ", NOTE_STYLE)
    for label, c in (("low", 0.0), ("mid", 0.5), ("high", 1.0)):
        out.append(label, CONF_STYLES[_bucket(c)])
        out.append(" ")
    out.append("· ", NOTE_STYLE)
    out.append("prompt", FIXED_STYLE)
    return out


class Tail:
    """A renderable showing only the last lines of another that fit the terminal.

    ``ldlm generate --animate`` draws a growing text in a Rich ``Live``, which cannot redraw
    anything taller than the screen; the end of the text is what is being written.
    """

    def __init__(self, renderable: Any, height: int | None = None) -> None:
        self.renderable = renderable
        self.height = height

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.segment import Segment

        lines = console.render_lines(self.renderable, options, pad=False)
        keep = max(1, (self.height or console.size.height) - 1)
        for line in lines[-keep:]:
            yield from line
            yield Segment.line()
