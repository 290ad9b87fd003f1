"""The denoising view: the text of a generation as it is being written, drawn by
:mod:`ldlm_tui.render` (the same renderer as ``ldlm generate --animate``).

The view scrolls, and follows the end of the text while it grows unless the user scrolls up;
scrolling back to the bottom follows again. A long generation is drawn in chunks: text that a
windowed sampler has finished (before ``Frame.offset``) is frozen into a ``Static`` of its own
once it ends in a line break, so each redraw renders and wraps only the part still changing,
not the 10,000 tokens above it. Its border carries a colour
legend (title) and the status line (subtitle: step, NFE, tokens/s, tokens per call, frame).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..render import MASK_GLYPH, NEWLINE_MARK, TokenTexts, legend, render_frame, render_sequence

CHUNK_MIN = 512
"""Final text is frozen into a chunk of its own once this many tokens end in a line break."""
CHUNK_MAX = 2048
"""...or at this many tokens without one (the chunk then ends mid-line)."""

__all__ = ["MASK_GLYPH", "NEWLINE_MARK", "DenoiseView", "frame_status", "render_frame"]


def frame_status(
    frame: Any,
    *,
    tokens_per_s: float | None = None,
    tokens_per_call: float | None = None,
    position: int | None = None,
    total: int | None = None,
    length: int | None = None,
) -> str:
    """The one-line summary under the text: step, NFE, tokens/s, tokens/call, frame, done."""
    parts = [f"step {frame.step}", f"NFE {frame.nfe}"]
    if tokens_per_s is not None and tokens_per_s == tokens_per_s:
        parts.append(f"{tokens_per_s:,.0f} tok/s")
    if tokens_per_call is not None and tokens_per_call == tokens_per_call:
        parts.append(f"{tokens_per_call:.2f} tok/call")
    n_masked = sum(1 for m in frame.masked if m)
    if n_masked:
        parts.append(f"{n_masked:,} masked")
    if length is not None and length > 0:
        parts.append(f"{length:,} tok")
    if position is not None and total:
        parts.append(f"frame {position + 1}/{total}")
    parts.append("done" if frame.done else "…")
    return " · ".join(parts)


class DenoiseView(VerticalScroll, inherit_bindings=False):
    """Shows one frame of a generation; scrolls vertically, following the end of the text.

    ``show(frame, end=...)`` redraws (one :class:`Text` per call) from a full-sequence frame
    (offset 0); ``end`` is where the sampler's current window ends (later positions are
    summarised). ``plain`` is the text shown (``""`` before the first frame) and ``status``
    the status line (also the border subtitle). Left/right/home/end are deliberately not
    bound here so a parent can use them to step through frames.
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
    DenoiseView > #denoise-body, DenoiseView > .denoise-chunk {
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
        self._texts: TokenTexts | None = None
        self.tokenizer = tokenizer
        self.frame: Any = None
        self._text = Text("")
        self._body: Text = Text(self.EMPTY_HINT, style="dim")
        self._status = ""
        self._follow = True
        self._chunks: list[tuple[int, int, Text, bool, Static]] = []  # start, end, text, cut
        self._chunk_key: object = None
        self.typed: dict[int, str] = {}  # prompt words drawn as typed (TimedFrame.typed)
        self.border_title = legend()

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        if self._texts is None or self._texts.tokenizer is not tokenizer:
            self._texts = TokenTexts(tokenizer) if tokenizer is not None else None

    def compose(self):
        yield Static(self._body, id="denoise-body")

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value >= self.max_scroll_y:  # at the bottom (or clamped to it): follow
            self._follow = True
        elif new_value < old_value:  # the user scrolled up: stay where they are
            self._follow = False

    @property
    def following(self) -> bool:
        """Whether the view keeps the end of the text in sight as it grows."""
        return self._follow

    def follow(self) -> None:
        """Jump to the end of the text and keep following it."""
        self._follow = True
        self.scroll_end(animate=False)

    @property
    def text(self) -> Text:
        """The rendered text of the current frame (frozen chunks included)."""
        if not self._chunks:
            return self._text
        out = Text(end="")
        for _, _, text, cut, _ in self._chunks:
            out.append_text(text)
            if cut:
                out.append("\n")
        out.append_text(self._text)
        return out

    @property
    def plain(self) -> str:
        """The current frame's text without styles (placeholders included)."""
        return self.text.plain

    @property
    def status(self) -> str:
        return self._status

    def _clear_chunks(self) -> None:
        for *_, widget in self._chunks:
            widget.remove()
        self._chunks = []

    def show_history(
        self,
        history: Any,
        index: int,
        tokenizer: Any = None,
        *,
        end: int | None = None,
        tokens_per_s: float | None = None,
        tokens_per_call: float | None = None,
    ) -> None:
        """Draw frame ``index`` of a :class:`FrameHistory`, reusing the frozen chunks of it.

        Chunks stay valid for any frame whose final part covers them (stepping back drops
        the ones it does not); a new history starts over.
        """
        if tokenizer is not None:
            self.tokenizer = tokenizer
        if self._texts is None:
            self.show(None)
            return
        if self._chunk_key is not history:
            self._clear_chunks()
            self._chunk_key = history
        final = history.final(index)
        while self._chunks and self._chunks[-1][1] > final:
            self._chunks.pop()[-1].remove()
        sealed = self._chunks[-1][1] if self._chunks else 0
        part = history.slice(index, sealed)
        texts = self._texts
        body = self.query_one("#denoise-body", Static) if self.is_mounted else None
        while body is not None and final - sealed >= CHUNK_MIN:
            cut = None
            hi = min(final, sealed + CHUNK_MAX)
            for a in range(sealed + CHUNK_MIN - 1, hi):  # the first line break past the minimum
                if texts(part.tokens[a - part.offset]).endswith("\n"):
                    cut = a + 1
                    break
            if cut is None:
                if final - sealed < CHUNK_MAX:
                    break
                cut = hi
            args = (part.tokens, part.masked, part.confidence, part.fixed, ())
            text = render_sequence(
                *args, texts, start=sealed, end=cut, base=part.offset, note=False, typed=self.typed
            )
            newline = text.plain.endswith("\n")
            if newline:
                text.right_crop(1)  # the next chunk starts on a line of its own anyway
            widget = Static(text, classes="denoise-chunk")
            self.mount(widget, before=body)
            self._chunks.append((sealed, cut, text, newline, widget))
            sealed = cut
        self._draw_frame(
            part,
            start=sealed,
            end=end,
            tokens_per_s=tokens_per_s,
            tokens_per_call=tokens_per_call,
            position=index,
            total=len(history),
            length=history.length(index),
        )

    def show(
        self,
        frame: Any,
        tokenizer: Any = None,
        *,
        end: int | None = None,
        tokens_per_s: float | None = None,
        tokens_per_call: float | None = None,
        position: int | None = None,
        total: int | None = None,
    ) -> None:
        """Draw ``frame`` (a full-sequence frame; None clears the view)."""
        if tokenizer is not None:
            self.tokenizer = tokenizer
        self._clear_chunks()
        self._chunk_key = None
        self._draw_frame(
            frame,
            end=end,
            tokens_per_s=tokens_per_s,
            tokens_per_call=tokens_per_call,
            position=position,
            total=total,
            length=len(frame.tokens) if frame is not None else None,
        )

    def _draw_frame(self, frame: Any, *, start: int = 0, length: int | None = None, **kw) -> None:
        end = kw.pop("end", None)
        self.frame = frame
        if frame is None or self._texts is None:
            self._text = Text("")
            self._status = ""
            body = Text(self.EMPTY_HINT, style="dim")
        else:
            self._text = render_sequence(
                frame.tokens,
                frame.masked,
                frame.confidence,
                frame.fixed,
                frame.changed,
                self._texts,
                end=end,
                start=start,
                base=getattr(frame, "offset", 0),
                typed=self.typed,
            )
            shown = length if length is not None and length > 256 else None
            self._status = frame_status(frame, length=shown, **kw)
            body = self._text
        self._body = body
        self.border_subtitle = Text(self._status) if self._status else None
        if self.is_mounted:
            self.query_one("#denoise-body", Static).update(body)
            if self._follow:
                self.scroll_end(animate=False)  # after the refresh that lays out the new text

    def set_note(self, note: str) -> None:
        """Replace the status line with a short note (e.g. "loading run…")."""
        self._status = note
        self.border_subtitle = Text(note) if note else None
