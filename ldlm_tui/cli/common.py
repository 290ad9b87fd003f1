"""What every ``ldlm`` subcommand shares: the Typer apps, choice enums, output helpers.

The command groups live beside this module (train, generate/eval, runs, data); they only parse
flags and print: every rule they apply comes from an engine use case (``ldlm_engine.plans``,
``ldlm_engine.session``).
"""

from __future__ import annotations

import enum
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import typer

from ldlm_engine import config


def _epilog(text: str) -> str:
    """Keep example blocks (indented paragraphs) as written: click rewraps other text."""
    paras = text.strip("\n").split("\n\n")
    return "\n\n".join(
        "\b\n" + p if any(line.startswith("  ") for line in p.splitlines()) else p for p in paras
    )


EXAMPLES_ROOT = """\
Examples:

  ldlm                                          open the TUI
  ldlm train --data my.txt --preset tiny        train in this terminal
  ldlm train --data my.txt --preset small --detach   train in the background
  ldlm watch my-run                             attach the TUI to a run
  ldlm generate my-run --prompt "ROMEO:"        sample text
  ldlm eval my-run --json                       held-out bits per character
  ldlm runs list                                all runs, live ones included
"""

app = typer.Typer(
    name="ldlm",
    help="Train, watch and sample small diffusion language models from the terminal.",
    epilog=_epilog(EXAMPLES_ROOT),
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=False,
)
runs_app = typer.Typer(
    help="List, inspect, stop and delete training runs.",
    epilog=_epilog(
        "Examples:\n\n  ldlm runs list\n  ldlm runs show my-run --json\n"
        "  ldlm runs stop my-run\n  ldlm runs rm old-run --yes\n"
    ),
    rich_markup_mode=None,
    no_args_is_help=True,
)
data_app = typer.Typer(
    help="Look at corpora before training on them.",
    epilog=_epilog("Examples:\n\n  ldlm data inspect my.txt\n  ldlm data inspect builtin --json\n"),
    rich_markup_mode=None,
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")
app.add_typer(data_app, name="data")


# --------------------------------------------------------------------------- choices


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A Typer choice type from the engine's own list, so a new process or sampler appears
    here without a second list to keep in step (ldlm_engine.config imports no torch)."""
    return enum.Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Process = _choices("Process", config.PROCESSES)
TokenizerKind = _choices("TokenizerKind", config.TOKENIZERS)
Precision = _choices("Precision", config.PRECISIONS)
Device = _choices("Device", config.DEVICES)
Sampler = _choices("Sampler", ("auto", *config.SAMPLERS))


# Typer may vendor its own click: take the exception classes from what typer exports.
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

PRESET_NAMES = ("default", "tiny", "seed", "small", "base")  # checked by the engine
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


# --------------------------------------------------------------------------- helpers


def _engine():
    """The engine (and torch), imported on first use so --help and the TUI start fast."""
    import ldlm_engine

    return ldlm_engine


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _one_line(msg: str) -> str:
    """One printable line: lines joined, control characters shown (see ``visible``)."""
    from ldlm_engine.safe_text import visible

    return visible(" ".join(part.strip() for part in str(msg).splitlines() if part.strip()))


# What json.dumps(ensure_ascii=False) leaves raw but a terminal may obey (C1 controls, bidi
# overrides) or stdout cannot encode (an undecodable file name): written as \u escapes.
_JSON_UNSAFE = re.compile(
    r"[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _dump_json(obj: Any) -> None:
    text = json.dumps(obj, ensure_ascii=False, default=str)
    _out(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def _run_ref(rd: Any) -> str:
    """How to name a run on the command line: its name if that resolves to it, else its path."""
    E = _engine()
    try:
        if (E.ldlm_home() / "runs" / rd.name).resolve() == Path(rd.path).resolve():
            return rd.name
    except OSError:
        pass
    return str(rd.path)


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _val_str(bpc: float | None, exact: bool) -> str:
    if bpc is None or not isinstance(bpc, (int, float)) or not math.isfinite(bpc):
        return "–"
    return f"{'=' if exact else '≤'} {bpc:.2f}"


def _ago(ts: float | None) -> str:
    if not ts:
        return "?"
    d = max(0.0, time.time() - ts)
    if d < 60:
        return f"{d:.0f}s ago"
    if d < 3600:
        return f"{d / 60:.0f}m ago"
    if d < 86400:
        return f"{d / 3600:.0f}h ago"
    return time.strftime("%Y-%m-%d", time.localtime(ts))
