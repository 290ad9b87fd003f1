"""Text from a run folder made safe to print: control characters shown, never obeyed.

A run folder's name, its status message, a preset name in its config.json, a foreign file
name in an error: all are bytes someone else chose. Printed raw, an ESC starts an escape
sequence (an OSC can retitle the terminal, write the clipboard or forge a hyperlink), a CR
overwrites the line, a bidi override reorders it, and an undecodable name (a lone surrogate
from ``os.listdir``) makes ``print`` raise. :func:`visible` is the one place both front ends
(the CLI and the app) pass such text through. Imports nothing heavy.
"""

from __future__ import annotations

import unicodedata

# Bidi controls reorder what follows them (the "Trojan Source" characters); zero-width and
# other format characters (category Cf) hide text. Shown like control characters.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(c: str) -> str:
    n = ord(c)
    if 0xDC80 <= n <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): show the byte
        return f"\\x{n - 0xDC00:02x}"
    if n <= 0xFF:
        return f"\\x{n:02x}"
    return f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


def _hidden(c: str) -> bool:
    cat = unicodedata.category(c)
    return cat in ("Cc", "Cf", "Cs", "Zl", "Zp") or c in _BIDI


def visible(text: object) -> str:
    """``text`` as one printable line: every control, format or undecodable character is
    written as a Python-style escape (ESC is ``\\x1b``, a newline ``\\x0a``); the rest,
    non-ASCII letters included, is unchanged. A backslash stays one backslash, so a name
    that already looks escaped reads the same; this is for eyes, not for parsing back."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # the common case: nothing to do (isprintable is False for all above)
        return s
    return "".join(_shown(c) if _hidden(c) else c for c in s)


__all__ = ["visible"]
