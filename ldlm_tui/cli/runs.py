"""``ldlm runs list|show|stop|rm``."""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from ldlm_engine import config as config_module
from ldlm_engine.safe_text import visible

from ..progress import format_bound, format_duration, make_console, one_line, use_rich
from .common import (
    _ago,
    _dump_json,
    _engine,
    _epilog,
    _err,
    _one_line,
    _out,
    _run_ref,
    _shell_quote,
    _UsageError,
    _val_str,
    runs_app,
)

# --------------------------------------------------------------------------- runs


def _eta(info: Any) -> str:
    """The engine's ETA of a live run ("" for any other: an ended run has none)."""
    if info.state != "live":
        return ""
    from ldlm_engine.eta import run_eta

    return _eta_text(run_eta(_engine().RunDir(info.path), info.state))


def _eta_text(eta: Any) -> str:
    return eta.text if eta.seconds is not None else ""


def _run_row(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "path": str(info.path),
        "state": info.state,
        "step": info.step,
        "best_val_bits_per_char": info.best_val_bits_per_char,
        "preset": info.preset,
        "process": info.process,
        "created": info.created,
        "updated": info.last_update,
        "reason": info.reason,
        "eta": _eta(info),
    }


@runs_app.command(
    "list", epilog=_epilog("Examples:\n\n  ldlm runs list\n  ldlm runs list --json\n")
)
def runs_list(json_out: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """All runs, newest first: state (live, finished, stopped, failed, dead), step, best val."""
    E = _engine()
    infos = E.list_runs()
    if json_out:
        _dump_json([_run_row(i) for i in infos])
        return
    if not infos:
        _out(f"no runs under {E.ldlm_home() / 'runs'}; start one with `ldlm train`")
        return
    header = ("NAME", "STATE", "STEP", "ETA", "BEST VAL b/c", "PRESET", "PROCESS", "UPDATED")
    rows = [  # every string from a run folder with its control characters shown
        (
            visible(i.name),
            visible(i.state),
            f"{i.step:,}",
            _eta(i),
            _val_str(i.best_val_bits_per_char, i.process == "ar"),
            visible(i.preset),
            visible(i.process),
            _ago(i.last_update),
        )
        for i in infos
    ]
    if use_rich():
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, header_style="bold", pad_edge=False)
        for h in header:
            right = h in ("STEP", "ETA", "BEST VAL b/c")
            table.add_column(h, justify="right" if right else "left")
        colours = {
            "live": "green",
            "failed": "red",
            "dead": "red",
            "damaged": "red",
            "stopped": "yellow",
        }
        for r in rows:
            table.add_row(*(Text(c) for c in r), style=colours.get(r[1], ""))  # no markup
        make_console().print(table)
        _print_damage(infos)
        return
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    for r in (header, *rows):
        _out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    _print_damage(infos)


def _print_damage(infos: list[Any]) -> None:
    """Why each damaged run is damaged, under the table (the table stays one line a run)."""
    for i in infos:
        if i.state == "damaged" and i.reason:
            _out(f"  {visible(i.name)}: {visible(i.reason)}")


@runs_app.command(
    "show", epilog=_epilog("Examples:\n\n  ldlm runs show my-run\n  ldlm runs show my-run --json\n")
)
def runs_show(
    run: str = typer.Argument(..., help="Run name or run directory."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """A run's settings, status, latest metrics and checkpoints."""
    E = _engine()
    rd = E.resolve_run(run)
    config = rd.read_config()
    status = rd.read_status()
    summary = rd.read_summary()
    state = rd.liveness()
    last: dict[str, dict[str, Any]] = {}
    for e in rd.read_metrics():
        last[str(e.get("event"))] = e
    ckpts = rd.checkpoint_steps()
    from ldlm_engine.eta import run_eta

    eta = _eta_text(run_eta(rd, state))
    if json_out:
        _dump_json(
            {
                "name": rd.name,
                "path": str(rd.path),
                "state": state,
                "status": status,
                "summary": summary,
                "config": config,
                "last_step": last.get("step"),
                "last_eval": last.get("eval"),
                "last_sample": last.get("sample"),
                "checkpoints": ckpts,
                "last_checkpoint": rd.latest_checkpoint_step(),
                "eta": eta,
            }
        )
        return

    def say(line: str) -> None:  # config, status and names come from the run folder
        _out(visible(line))

    m, p, d, t = (config.get(k) or {} for k in ("model", "process", "data", "train"))
    say(f"run        {rd.name}  ({rd.path})")
    line = f"state      {state} · step {status.get('step', summary.get('step', 0)):,}"
    if state == "live":
        line += f" · pid {status.get('pid', '?')} on {status.get('host', '?')}"
    if eta:
        line += f" · ETA {eta}"
    say(line)
    if status.get("message"):
        say(f"status     {status.get('state')}: {_one_line(status['message'])}")
    plan = " or ".join(
        x
        for x in (
            f"{t.get('max_steps'):,} steps" if t.get("max_steps") else "",
            f"{t.get('epochs')} epochs" if t.get("epochs") else "",
        )
        if x
    )
    say(
        f"config     preset {config.get('preset', '?')} · process {p.get('kind', '?')} · "
        f"tokenizer {d.get('tokenizer', '?')} · vocab {m.get('vocab_size', '?')}"
    )
    say(
        f"model      d_model {m.get('d_model')} · {m.get('n_layers')} layers · "
        f"{m.get('n_heads')} heads · seq_len {m.get('seq_len')}"
    )
    say(
        f"train      batch {t.get('batch_size')} · lr {t.get('lr')} · {plan} · "
        f"{t.get('precision')} · device {t.get('device')}"
    )
    say(f"data       {d.get('source')}")
    step_event = last.get("step") or {}
    try:
        phase = config_module.describe_phase(
            config, int(step_event.get("step") or 0), int(step_event.get("total_steps") or 0)
        )
    except (TypeError, ValueError, OverflowError):  # a damaged step line: no phase to show
        phase = ""
    if phase:
        say(f"phase      {phase}")
    if "step" in last:
        e = last["step"]
        say(
            f"last step  {e.get('step')} · loss {e.get('loss', float('nan')):.3f} · "
            f"{e.get('tokens_per_s', 0):,.0f} tok/s · elapsed "
            f"{format_duration(e.get('elapsed_s'))}"
        )
    exact = config_module.exact_bound(str(p.get("kind")), p.get("block_size") or 0)
    if "eval" in last:
        e = last["eval"]
        bound = format_bound(
            e.get("val_bits_per_char", float("nan")),
            e.get("stderr_bits_per_char", 0.0),
            bool(e.get("exact", exact)),
        )
        best = _val_str(summary.get("best_val_bits_per_char"), exact)
        say(f"last eval  step {e.get('step')} · {bound} · best {best}")
    if "sample" in last:
        e = last["sample"]
        say(f"sample     step {e.get('step')} · {one_line(str(e.get('text', '')))}")
    if ckpts:
        say("checkpoints " + ", ".join(str(s) for s in ckpts))
    else:
        say("checkpoints none yet")


@runs_app.command(
    "stop",
    epilog=_epilog("Examples:\n\n  ldlm runs stop my-run\n  ldlm runs stop my-run --no-wait\n"),
)
def runs_stop(
    run: str = typer.Argument(..., help="Run name or run directory."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until it has stopped."),
    timeout: float = typer.Option(
        60.0, "--timeout", help="Seconds to wait before giving up (SIGTERM after a third)."
    ),
) -> None:
    """Ask a live run to checkpoint and stop (through its run directory; SIGTERM fallback).

    SIGTERM goes only to a process proven to be the run's trainer (it holds the run's lock
    and has the start time recorded in status.json); never to a pid status.json merely names.
    """
    E = _engine()
    rd = E.resolve_run(run)
    name = visible(rd.name)
    state = rd.liveness()
    if state != "live":
        raise E.RunError(f"run {name} is not running (state: {state})")
    rd.request("stop")
    pid, why, reachable = E.find_trainer(rd)
    if not reachable:
        raise E.RunError(
            f"wrote a stop request for run {name}, but could not find its trainer ({why}); "
            "no process was signalled"
        )
    if pid is None:
        _out(f"asked {name} to stop (its trainer is not verified: {why}; it will not be signalled)")
    else:
        _out(f"asked {name} to stop (trainer pid {pid})")
    if not wait:
        return
    start = time.monotonic()
    signalled = pid is None  # only a verified trainer is ever signalled
    while rd.liveness() == "live":
        waited = time.monotonic() - start
        if waited > timeout:
            _err(f"ldlm: error: run {name} did not stop within {timeout:.0f}s")
            raise typer.Exit(1)
        if not signalled and waited > timeout / 3:
            signalled = True
            sent = E.signal_trainer(rd)
            if sent is not None:
                _out(f"no answer yet; sent SIGTERM to pid {sent}")
        time.sleep(0.2)
    st = rd.read_status()
    _out(
        f"stopped {name} at step {st.get('step', '?')} ({visible(st.get('state', '?'))}); "
        f"resume with `ldlm train --resume {visible(_shell_quote(_run_ref(rd)))}`"
    )


@runs_app.command(
    "rm", epilog=_epilog("Examples:\n\n  ldlm runs rm old-run\n  ldlm runs rm old-run --yes\n")
)
def runs_rm(
    run: str = typer.Argument(..., help="Run name or run directory."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(
        False, "--force", help="Delete even if its heartbeat looks fresh (never a locked run)."
    ),
) -> None:
    """Delete a run directory (refuses a live run)."""
    E = _engine()
    rd = E.resolve_run(run)
    if rd.is_locked():
        ref = _shell_quote(_run_ref(rd))
        raise E.RunError(f"run {rd.name} is live; stop it first with `ldlm runs stop {ref}`")
    if not yes:
        if not sys.stdin.isatty():
            raise _UsageError(f"refusing to delete run {rd.name} without --yes")
        if not typer.confirm(f"Delete run {visible(rd.name)} ({visible(rd.path)})?", default=False):
            _out("nothing deleted")
            raise typer.Exit(1)
    path = E.delete_run(rd.path, force=force)
    _out(f"deleted {visible(rd.name)} ({visible(path)})")
