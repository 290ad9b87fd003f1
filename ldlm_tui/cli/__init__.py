"""The ``ldlm`` command line (the contract is in README.md, "Using it").

``ldlm`` alone opens the TUI; the subcommands are headless and scriptable: ``train``,
``generate``, ``eval``, ``watch``, ``runs list|show|stop|rm`` and ``data inspect``.

Exit status: 0 on success; 2 on bad input with one ``ldlm: error: ...`` line on stderr (any
:class:`ldlm_engine.LdlmError`, and usage errors); 1 when training fails (e.g. a non-finite
loss); 130 after a clean save on Ctrl+C (SIGINT), 143 on SIGTERM, 129 on SIGHUP.

Startup stays fast: torch and the engine are imported inside the commands that need them, and
Textual only when the TUI opens.
"""

from __future__ import annotations

import sys

import typer

from .common import (
    _ClickException,
    _engine,
    _epilog,
    _err,
    _one_line,
    _out,
    _UsageError,
    app,
)

# --------------------------------------------------------------------------- root


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("ldlm")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            v = "unknown"
        _out(f"ldlm {v}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        help="Print the version and exit.",
        callback=_version_callback,
        is_eager=True,
    ),
) -> None:
    """Train, watch and sample small diffusion language models from the terminal.

    Without a command, opens the TUI (pick a corpus and preset, train, watch the loss and the
    samples, generate). Every command has --help with examples. Runs live under $LDLM_HOME
    (default: the platform's user data folder); RUN is a run name or a run directory path.
    """
    if ctx.invoked_subcommand is None:
        from ldlm_tui.app import run_app

        run_app()


@app.command(
    epilog=_epilog("Examples:\n\n  ldlm watch my-run\n  ldlm watch ./runs/experiment-3\n"),
)
def watch(run: str = typer.Argument(..., help="Run name or run directory.")) -> None:
    """Open the TUI attached to an existing (possibly live) run."""
    rd = _engine().resolve_run(run)
    from ldlm_tui.app import run_app

    run_app(watch=str(rd.path))


from . import data, generate, runs, train  # noqa: E402, F401  (registers the commands)

# --------------------------------------------------------------------------- entry point


def _is_ldlm_error(e: BaseException) -> bool:
    errors = sys.modules.get("ldlm_engine.errors")
    return errors is not None and isinstance(e, errors.LdlmError)


def main(argv: list[str] | None = None) -> None:
    """The ``ldlm`` console script: one error line and exit 2 for user errors, never a traceback."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (``main`` without ``sys.exit``)."""
    try:
        rv = app(args=argv, prog_name="ldlm", standalone_mode=False)
    except _UsageError as e:
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            _err(ctx.get_help())  # `ldlm runs` alone: show what it can do
            return 2
        msg = _one_line(e.format_message()).replace("Value error, ", "")  # type: ignore[attr-defined]
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _err(f"ldlm: error: {msg}{hint}")
        return 2
    except typer.Abort:
        _err("ldlm: aborted")
        return 1
    except _ClickException as e:
        _err(f"ldlm: error: {_one_line(e.format_message())}")  # type: ignore[attr-defined]
        return int(getattr(e, "exit_code", 1))
    except KeyboardInterrupt:
        _err("ldlm: interrupted")
        return 130
    except Exception as e:
        if _is_ldlm_error(e):
            _err(f"ldlm: error: {_one_line(str(e)) or type(e).__name__}")
            return 2
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    main()
