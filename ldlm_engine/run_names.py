"""Run names: what a name may be, and how a bare name that is not a run is resolved.

A unique prefix opens its run (git-style), an ambiguous one lists the candidates, and a
name that matches nothing suggests close ones. Candidates are only names ldlm could have
made, of real folders holding a ``config.json``, so every message prints as one plain line.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from . import layout as L
from .errors import RunError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # always fullmatch (no "$" + "\n")


def _run_names(root: Path, keep=lambda name: True) -> list[str]:
    """Plain names of the runs under ``root`` that ``keep`` accepts; [] when unreadable."""
    try:
        names = [n for n in os.listdir(root) if NAME_RE.fullmatch(n) and keep(n)]
    except (OSError, ValueError):
        return []
    return [n for n in names if L.is_real_dir(root / n) and L.lexists(root / n / L.CONFIG_FILE)]


def names_with_prefix(root: Path, prefix: str) -> list[str]:
    """Names of runs under ``root`` that start with ``prefix``, sorted."""
    return sorted(_run_names(root, lambda n: n.startswith(prefix)))


def close_names(root: Path, name: str) -> list[str]:
    """Names of runs under ``root`` that look like ``name`` (a typo), best first, at most 3."""
    names = _run_names(root)
    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


def by_prefix(root: Path, name: str) -> Path:
    """The run a bare ``name`` that is no run's whole name stands for: the only run whose
    name starts with it; else a one-line RunError listing the candidates or close names.

    An exact name never gets here (``RunDir.open`` tries it first), so ``tiny`` still opens
    the run ``tiny`` when ``tiny-2`` exists too.
    """
    matches = names_with_prefix(root, name)
    if len(matches) == 1:
        return root / matches[0]
    if matches:
        shown = ", ".join(matches[:8]) + (", …" if len(matches) > 8 else "")
        raise RunError(f"run name {name} is ambiguous: it starts {len(matches)} runs ({shown})")
    close = close_names(root, name)
    hint = f"did you mean {', '.join(close)}?" if close else "see `ldlm runs list`"
    raise RunError(f"no run named {name} ({hint})")
