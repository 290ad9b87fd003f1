"""The denoising view: one sampler :class:`~ldlm_engine.Frame` drawn as styled text.

Still-masked positions show as a placeholder glyph (one per token), the tokens this model call
revealed or changed are highlighted (reverse + bold), every generated token is coloured by the
model's confidence in it (red → yellow → green) and fixed context (prompt, infill context) is
dimmed. The text is built as one :class:`rich.text.Text` per frame by appending each token's
``tokenizer.token_text(id)`` with a style: generated text is never parsed as markup.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

MASK_GLYPH = "░"
"""Placeholder for a position that is still masked (one glyph per token)."""

NEWLINE_MARK = "↵"
"""Shown (highlighted) before a line break that this frame revealed, so it stays visible."""

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


def _bucket(c: float) -> int:
    if c != c:  # NaN
        return 0
    return min(_N_COLOURS - 1, max(0, round(c * (_N_COLOURS - 1))))


class _TokenTexts:
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


def render_frame(frame: Any, tokenizer: Any, *, _texts: _TokenTexts | None = None) -> Text:
    """One frame as a styled :class:`Text` (consecutive same-style tokens share one span)."""
    texts = _texts if _texts is not None else _TokenTexts(tokenizer)
    out = Text(overflow="fold", no_wrap=False, end="")
    changed = set(frame.changed)
    masked, fixed, conf = frame.masked, frame.fixed, frame.confidence
    n_conf = len(conf)
    run: list[str] = []
    run_style: Style | None = None
    glue = True  # word tokens: no space at the start of the text or of a line
    for i, tok in enumerate(frame.tokens):
        is_masked = masked[i] if i < len(masked) else False
        if is_masked:
            piece = MASK_GLYPH
            style = MASK_HIGHLIGHT_STYLE if i in changed else MASK_STYLE
        else:
            piece = texts(tok)
            if i < len(fixed) and fixed[i]:
                style = FIXED_STYLE
            else:
                k = _bucket(conf[i]) if i < n_conf else 0
                if i in changed:
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
    return out


def frame_status(
    frame: Any,
    *,
    tokens_per_s: float | None = None,
    position: int | None = None,
    total: int | None = None,
) -> str:
    """The one-line summary under the text: step, NFE, tokens/s, frame index, done."""
    parts = [f"step {frame.step}", f"NFE {frame.nfe}"]
    if tokens_per_s is not None and tokens_per_s == tokens_per_s:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    n_masked = sum(1 for m in frame.masked if m)
    if n_masked:
        parts.append(f"{n_masked} masked")
    if position is not None and total:
        parts.append(f"frame {position + 1}/{total}")
    parts.append("done" if frame.done else "…")
    return " · ".join(parts)


class DenoiseView(VerticalScroll, inherit_bindings=False):
    """Shows one frame of a generation; scrolls vertically when the text is long.

    ``show(frame)`` redraws (one :class:`Text` per call). ``plain`` is the text shown
    (``""`` before the first frame) and ``status`` the status line (also the border subtitle).
    Left/right/home/end are deliberately not bound here so a parent can use them to step
    through frames.
    """

    DEFAULT_CSS = """
    DenoiseView {
        height: 1fr;
        border: round $primary 40%;
        border-title-color: $text-muted;
        border-subtitle-color: $text;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    DenoiseView:focus {
        border: round $primary;
    }
    DenoiseView > #denoise-body {
        width: 1fr;
        height: auto;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "scroll_up", "Scroll Up", show=False),
        Binding("down", "scroll_down", "Scroll Down", show=False),
        Binding("pageup", "page_up", "Page Up", show=False),
        Binding("pagedown", "page_down", "Page Down", show=False),
    ]

    EMPTY_HINT = "Nothing generated yet: type a prompt and press Enter."

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._texts: _TokenTexts | None = None
        self.tokenizer = tokenizer
        self.frame: Any = None
        self._text = Text("")
        self._body: Text = Text(self.EMPTY_HINT, style="dim")
        self._status = ""
        self.border_title = "denoising"

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        if self._texts is None or self._texts.tokenizer is not tokenizer:
            self._texts = _TokenTexts(tokenizer) if tokenizer is not None else None

    def compose(self):
        yield Static(self._body, id="denoise-body")

    @property
    def text(self) -> Text:
        """The rendered text of the current frame."""
        return self._text

    @property
    def plain(self) -> str:
        """The current frame's text without styles (placeholders included)."""
        return self._text.plain

    @property
    def status(self) -> str:
        return self._status

    def show(
        self,
        frame: Any,
        tokenizer: Any = None,
        *,
        tokens_per_s: float | None = None,
        position: int | None = None,
        total: int | None = None,
    ) -> None:
        """Draw ``frame`` (None clears the view)."""
        if tokenizer is not None:
            self.tokenizer = tokenizer
        self.frame = frame
        if frame is None or self._texts is None:
            self._text = Text("")
            self._status = ""
            body = Text(self.EMPTY_HINT, style="dim")
        else:
            self._text = render_frame(frame, self._tokenizer, _texts=self._texts)
            self._status = frame_status(
                frame, tokens_per_s=tokens_per_s, position=position, total=total
            )
            body = self._text
        self._body = body
        self.border_subtitle = Text(self._status) if self._status else None
        if self.is_mounted:
            self.query_one("#denoise-body", Static).update(body)

    def set_note(self, note: str) -> None:
        """Replace the status line with a short note (e.g. "loading run…")."""
        self._status = note
        self.border_subtitle = Text(note) if note else None
