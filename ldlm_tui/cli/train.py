"""``ldlm train``: plan a run or a resume with the engine, then train here or detached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ldlm_engine.safe_text import visible

from .common import (
    SIGNAL_EXIT,
    Device,
    Precision,
    Process,
    TokenizerKind,
    _engine,
    _epilog,
    _err,
    _one_line,
    _out,
    _run_ref,
    _shell_quote,
    _UsageError,
    _val_str,
    app,
)

# --------------------------------------------------------------------------- train

TRAIN_EPILOG = """\
Examples:

  ldlm train --data my.txt --preset tiny
  ldlm train --data shakespeare --preset small --process mask --detach
  ldlm train --preset tiny --max-steps 200 --name quick
  ldlm train --config exp.toml --lr 3e-4          (flags override the file)
  ldlm train --resume quick --max-steps 600       (continue a run, extend it)
  ldlm train --preset default --process ar --name base
  ldlm train --preset default --init-from base    (adapt the ar run to block diffusion)
  torchrun --nproc_per_node 2 $(which ldlm) train --preset small   (DDP)

Settings are layered: preset < user config (~/.config/ldlm/config.toml, or
$LDLM_CONFIG_DIR/config.toml) < --config FILE < flags. A config file is TOML with the
sections [model] [process] [data] [train] [sample] and an optional preset = "NAME".
--epochs alone trains exactly that many epochs (the preset's step limit is dropped).

Ctrl+C stops after saving a checkpoint (exit 130); `ldlm runs stop RUN` does the same from
another terminal. Presets: default, tiny, seed, small, base.
"""

# Flags that would change what a resumed run is: refused with --resume.
_RESUME_FORBIDDEN = (
    ("data", "--data"),
    ("preset", "--preset"),
    ("process", "--process"),
    ("tokenizer", "--tokenizer"),
    ("batch_size", "--batch-size"),
    ("seq_len", "--seq-len"),
    ("lr", "--lr"),
    ("precision", "--precision"),
    ("seed", "--seed"),
    ("name", "--name"),
    ("run_dir", "--run-dir"),
    ("config", "--config"),
    ("init_from", "--init-from"),
    ("ema", "--ema"),
)


@app.command(epilog=_epilog(TRAIN_EPILOG))
def train(
    data: str | None = typer.Option(
        None,
        "--data",
        metavar="PATH|NAME",
        help="Text file, folder of .txt files, 'builtin' (default) or a named corpus "
        "('shakespeare', downloaded once).",
    ),
    preset: str | None = typer.Option(
        None, "--preset", metavar="NAME", help="default, tiny, seed, small or base."
    ),
    process: Process | None = typer.Option(None, "--process", help="Noise process."),
    tokenizer: TokenizerKind | None = typer.Option(None, "--tokenizer", help="Tokenizer."),
    max_corpus_mb: int | None = typer.Option(
        None,
        "--max-corpus-mb",
        metavar="MIB",
        help="Refuse a corpus larger than this, from its size, before reading it "
        "(default 1024; 1..1000000).",
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Passes over the training text."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per step."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per sequence."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
    ema: float | None = typer.Option(
        None,
        "--ema",
        metavar="DECAY",
        help="Evaluate, sample and save for generation an average of the weights with this "
        "decay (0 <= DECAY < 1, e.g. 0.999; default 0 = off); training continues on the raw "
        "weights.",
    ),
    precision: Precision | None = typer.Option(
        None,
        "--precision",
        help="Compute precision (auto: bf16 where the hardware runs it fast, else fp32).",
    ),
    device: Device | None = typer.Option(None, "--device", help="Where to train."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    eval_every: int | None = typer.Option(
        None, "--eval-every", metavar="N", help="Held-out bound every N steps (0 = never)."
    ),
    sample_every: int | None = typer.Option(
        None, "--sample-every", metavar="N", help="Print a sample every N steps (0 = never)."
    ),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", metavar="N", help="Checkpoint every N steps."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Run name under $LDLM_HOME/runs (default: preset-process-time)."
    ),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", metavar="DIR", help="Put the run in DIR instead (not with --name)."
    ),
    resume: str | None = typer.Option(
        None,
        "--resume",
        metavar="RUN",
        help="Continue RUN in place with its own settings; --max-steps/--epochs may extend "
        "it (and --device, --max-corpus-mb or the cadences may change).",
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Train in the background; survives closing the terminal."
    ),
    config: Path | None = typer.Option(
        None, "--config", metavar="FILE", help="TOML settings file (see below)."
    ),
    init_from: str | None = typer.Option(
        None,
        "--init-from",
        metavar="RUN",
        help="Start from RUN's newest weights (its shape and tokenizer): an ar run adapts "
        "to block diffusion in a fraction of the time training from scratch takes.",
    ),
) -> None:
    """Train a model (in this terminal, or in the background with --detach)."""
    if name is not None and run_dir is not None:
        raise _UsageError("--name and --run-dir cannot be used together; pick one")
    flags = locals()
    E = _engine()
    if detach and E.ddp_world_size() > 1:
        raise _UsageError("--detach cannot be used under torchrun")
    if resume is not None:
        given = [flag for key, flag in _RESUME_FORBIDDEN if flags[key] is not None]
        if given:
            raise _UsageError(
                f"{', '.join(given)} cannot be used with --resume: a resumed run keeps its own "
                "settings (only --max-steps/--epochs may extend it)"
            )
        _train_resume(
            resume,
            epochs=epochs,
            max_steps=max_steps,
            device=device.value if device else None,
            cadences={
                "eval_every": eval_every,
                "sample_every": sample_every,
                "checkpoint_every": checkpoint_every,
            },
            detach=detach,
            max_corpus_mb=max_corpus_mb,
        )
        return
    choices = E.RunChoices(
        preset=preset,
        config_file=config,
        process=process.value if process else None,
        settings={
            "data": {
                "source": data,
                "tokenizer": tokenizer.value if tokenizer else None,
                "max_corpus_mb": max_corpus_mb,
            },
            "model": {"seq_len": seq_len},
            "train": {
                "epochs": epochs,
                "max_steps": max_steps,
                "batch_size": batch_size,
                "lr": lr,
                "ema": ema,
                "precision": precision.value if precision else None,
                "device": device.value if device else None,
                "seed": seed,
                "eval_every": eval_every,
                "sample_every": sample_every,
                "checkpoint_every": checkpoint_every,
                "init_from": init_from,
            },
        },
        name=name,
        run_dir=run_dir,
        flag_names=FLAG_NAMES,
    )
    plan = E.plan_run(choices)
    if not plan.writes_run_dir:  # DDP worker: rank 0 owns the run directory and the display
        plan.trainer(None).run()
        return
    rd = plan.create()
    if detach:
        _detach(rd, resumed=False)
        return
    _train_foreground(E, plan.config, rd, trainer=plan.trainer(rd, sinks=[]), fresh=True)


# How the engine's settings are named on this command line, for its error messages.
FLAG_NAMES = {
    **{
        f"train.{k}": "--" + k.replace("_", "-")
        for k in (
            "epochs",
            "max_steps",
            "batch_size",
            "lr",
            "ema",
            "precision",
            "device",
            "seed",
            "eval_every",
            "sample_every",
            "checkpoint_every",
        )
    },
    "model.seq_len": "--seq-len",
    "data.source": "--data",
    "data.tokenizer": "--tokenizer",
    "train.init_from": "--init-from",
    "data.max_corpus_mb": "--max-corpus-mb",
}


def _train_resume(
    spec: str,
    *,
    epochs: int | None,
    max_steps: int | None,
    device: str | None,
    cadences: dict[str, int | None],
    detach: bool,
    max_corpus_mb: int | None = None,
) -> None:
    E = _engine()
    plan = E.plan_resume(
        spec,
        max_steps=max_steps,
        epochs=epochs,
        device=device,
        cadences=cadences,
        max_corpus_mb=max_corpus_mb,
    )
    if not plan.writes_run_dir:  # DDP worker: the same settings; rank 0 writes the run
        plan.trainer().run()
        return
    if detach:  # the child reads its settings from config.json, once train.log opens
        extra = [] if max_steps is None else ["--max-steps", str(max_steps)]
        extra += [] if epochs is None else ["--epochs", str(epochs)]
        _detach(plan.run, resumed=plan.resume, before_start=plan.record_settings, extra=extra)
        return
    trainer = plan.trainer(sinks=[])
    _train_foreground(
        E, plan.config, plan.run, trainer=trainer, fresh=False, on_start=plan.record_settings
    )


def _detach(rd: Any, *, resumed: bool, before_start: Any = None, extra: Any = None) -> None:
    from ..launch import spawn_training

    pid = spawn_training(rd.path, before_start, extra)
    ref = _run_ref(rd)
    what = "resumed" if resumed else "started"
    _out(f"{what} {rd.name} in the background (pid {pid})")
    _out(f"  run dir:  {rd.path}")
    _out(f"  watch:    ldlm watch {_shell_quote(ref)}")
    _out(f"  follow:   tail -f {_shell_quote(str(rd.log_path))}")
    _out(f"  stop:     ldlm runs stop {_shell_quote(ref)}")


def _plan_text(cfg: Any) -> str:
    t = cfg.train
    parts = []
    if t.max_steps is not None:
        parts.append(f"{t.max_steps:,} steps")
    if t.epochs is not None:
        parts.append(f"{t.epochs} epochs")
    return " or ".join(parts)


def _train_foreground(
    E: Any,
    cfg: Any,
    rd: Any,
    *,
    trainer: Any,
    fresh: bool,
    on_start: Any = None,
) -> None:
    from ..progress import make_training_display

    step = rd.latest_checkpoint_step() if trainer.resume else None
    head = f"resuming {rd.name} from step {step}" if step else f"training {rd.name}"
    _out(visible(f"{head}  ({rd.path})"))
    settings = (  # a resumed run's settings come from its folder: shown, never obeyed
        f"  {cfg.preset} preset · {cfg.process.kind} process · {cfg.data.tokenizer} tokenizer · "
        f"seq_len {cfg.model.seq_len} · batch {cfg.train.batch_size} · {_plan_text(cfg)} · "
        f"device {cfg.train.device}"
    )
    _out(visible(settings))
    display = make_training_display()
    trainer.sinks.append(display)
    if on_start is not None:
        started = []

        def first_status(event: Any) -> None:
            if not started and getattr(event, "event", "") == "status":
                started.append(True)
                on_start()

        trainer.sinks.insert(0, first_status)
    ref = _run_ref(rd)
    try:
        state = trainer.run()
    except E.LdlmError:
        display.close()
        if fresh and trainer.state == "created" and trainer.step == 0:
            E.discard_unstarted_run(rd)
        raise
    finally:
        display.close()
    exact = E.exact_bound(cfg.process.kind, cfg.process.block_size)
    best = trainer.best_val_bpc
    quoted = _shell_quote(ref)
    if state == "finished":
        _out(
            f"finished {rd.name} at step {trainer.step} · best val {_val_str(best, exact)} "
            "bits/char"
        )
        _out(f"  generate: ldlm generate {quoted} --prompt 'The '")
        _out(f"  evaluate: ldlm eval {quoted}")
        _out(f"  continue: ldlm train --resume {quoted} --max-steps {trainer.step * 2}")
        return
    if state == "stopped":
        _out(f"stopped {rd.name} at step {trainer.step} ({trainer.stop_reason}); checkpoint saved")
        _out(f"  resume:   ldlm train --resume {quoted}")
        reason = trainer.stop_reason or ""
        code = next((c for sig, c in SIGNAL_EXIT.items() if reason.endswith(sig)), 0)
        raise typer.Exit(code)
    msg = getattr(display, "last_status", {}).get("message") or state
    _err(f"ldlm: training failed: {_one_line(msg)}")
    raise typer.Exit(1)
