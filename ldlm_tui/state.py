"""What the app remembers between launches: the theme and the Train form's last values.

One small JSON file in the platform's user state folder (``$LDLM_STATE_DIR`` overrides it, so
tests and scripts can keep their own). It is a convenience, never a requirement: a missing,
unreadable or damaged file (a FIFO, a device, a huge or deeply nested file) reads as empty,
and a failed write is ignored. Writes are atomic (a temporary file renamed over the old one),
so a crash never leaves half a file behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STATE_FILE = "tui-state.json"
MAX_BYTES = 64 * 1024  # the file holds a theme name and a dozen short strings


def state_path() -> Path:
    """``$LDLM_STATE_DIR/tui-state.json``, else the platform's user state folder for ldlm."""
    d = os.environ.get("LDLM_STATE_DIR")
    if d:
        try:
            return Path(d).expanduser() / STATE_FILE
        except RuntimeError:  # ~nouser
            return Path(d) / STATE_FILE
    import platformdirs

    return Path(platformdirs.user_state_dir("ldlm")) / STATE_FILE


def load_state() -> dict[str, Any]:
    """The remembered state, or ``{}`` when there is none or it cannot be trusted."""
    from ldlm_engine.fileio import read_json_bounded

    try:  # the engine's reader: a FIFO never blocks the app's start, /dev/zero is refused
        data = read_json_bounded(state_path().resolve(), MAX_BYTES)  # a dotfile link is fine
    except (OSError, ValueError, RuntimeError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(data.get("theme"), str):
        out["theme"] = data["theme"][:100]
    form = data.get("form")
    if isinstance(form, dict):
        out["form"] = {
            str(k)[:40]: v[:500] for k, v in list(form.items())[:40] if isinstance(v, str)
        }
    return out


def save_state(state: dict[str, Any]) -> bool:
    """Write ``state`` atomically; False (and nothing changed) when it cannot be written."""
    from ldlm_engine.fileio import atomic_write_json

    try:
        atomic_write_json(state_path(), state)
    except (OSError, TypeError, ValueError):
        return False
    return True


def update_state(**changes: Any) -> bool:
    """Merge ``changes`` into the remembered state and write it back."""
    state = load_state()
    state.update(changes)
    return save_state(state)


__all__ = ["load_state", "save_state", "state_path", "update_state"]
