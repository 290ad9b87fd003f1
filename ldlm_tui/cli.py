"""The ``ldlm`` command line (DESIGN §5).

``ldlm`` alone opens the TUI; the subcommands are headless and scriptable: ``train``,
``generate``, ``eval``, ``watch``, ``runs list|show|stop|rm`` and ``data inspect``.

Exit status: 0 on success; 2 on bad input with one ``ldlm: error: ...`` line on stderr (any
:class:`ldlm_engine.LdlmError`, and usage errors); 1 when training fails (e.g. a non-finite
loss); 130 after a clean save on Ctrl+C (SIGINT), 143 on SIGTERM, 129 on SIGHUP.

Startup stays fast: torch and the engine are imported inside the commands that need them, and
Textual only when the TUI opens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from .progress import format_bound, format_duration, make_console, one_line, use_rich


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


class Process(str, enum.Enum):
    mask = "mask"
    uniform = "uniform"
    ar = "ar"


class TokenizerKind(str, enum.Enum):
    char = "char"
    word = "word"
    bpe = "bpe"


class Precision(str, enum.Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Sampler(str, enum.Enum):
    auto = "auto"
    low_confidence = "low_confidence"
    random = "random"
    threshold = "threshold"
    uniform = "uniform"
    ar = "ar"


# Typer may vendor its own click: take the exception classes from what typer exports.
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

PRESET_NAMES = ("default", "tiny", "seed", "small", "base")  # checked by the engine
NATURAL_SAMPLER = {"mask": "low_confidence", "uniform": "uniform", "ar": "ar"}
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
    return " ".join(part.strip() for part in str(msg).splitlines() if part.strip())


def _dump_json(obj: Any) -> None:
    _out(json.dumps(obj, ensure_ascii=False, default=str))


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


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _atomic_write_json(path: Path, obj: Any) -> None:
    from ldlm_engine.fileio import atomic_write_json

    try:
        atomic_write_json(path, obj)
    except OSError as e:
        from ldlm_engine import RunError

        raise RunError(f"cannot write {path}: {e.strerror or e}") from None


def _user_config_path() -> Path:
    """``$LDLM_CONFIG_DIR/config.toml``, else platformdirs' user config dir for ldlm."""
    d = os.environ.get("LDLM_CONFIG_DIR")
    if d:
        return Path(d).expanduser() / "config.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir("ldlm")) / "config.toml"


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


# --------------------------------------------------------------------------- train

TRAIN_EPILOG = """\
Examples:

  ldlm train --data my.txt --preset tiny
  ldlm train --data shakespeare --preset small --process mask --detach
  ldlm train --preset tiny --max-steps 200 --name quick
  ldlm train --config exp.toml --lr 3e-4          (flags override the file)
  ldlm train --resume quick --max-steps 600       (continue a run, extend it)
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
    epochs: int | None = typer.Option(None, "--epochs", help="Passes over the training text."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Sequences per step."),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per sequence."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate."),
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
        "it (and --device or the cadences may change).",
    ),
    detach: bool = typer.Option(
        False, "--detach", help="Train in the background; survives closing the terminal."
    ),
    config: Path | None = typer.Option(
        None, "--config", metavar="FILE", help="TOML settings file (see below)."
    ),
) -> None:
    """Train a model (in this terminal, or in the background with --detach)."""
    if name is not None and run_dir is not None:
        raise _UsageError("--name and --run-dir cannot be used together; pick one")
    flags = locals()
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
        )
        return
    E = _engine()
    cfg = _build_config(
        E,
        preset=preset,
        config_file=config,
        process=process.value if process else None,
        epochs=epochs,
        max_steps=max_steps,
        flags={
            "data": {"source": data, "tokenizer": tokenizer.value if tokenizer else None},
            "model": {"seq_len": seq_len},
            "train": {
                "epochs": epochs,
                "max_steps": max_steps,
                "batch_size": batch_size,
                "lr": lr,
                "precision": precision.value if precision else None,
                "device": device.value if device else None,
                "seed": seed,
                "eval_every": eval_every,
                "sample_every": sample_every,
                "checkpoint_every": checkpoint_every,
            },
        },
    )
    E.resolve_device(cfg.train.device)
    if detach and _world_size() > 1:
        raise _UsageError("--detach cannot be used under torchrun")
    corpus = E.load_corpus(cfg.data.source)
    if _rank() != 0:
        # DDP worker: rank 0 owns the run directory and the display.
        E.Trainer(cfg, text=corpus.text).run()
        return
    named = {n for n, _ in E.list_corpora()}
    if cfg.data.source not in named:
        # An absolute path, so resuming from another folder still finds the text.
        cfg.data.source = str(Path(cfg.data.source).expanduser().resolve())
    if detach:
        # The child must not fail where we could have said so here: check the text is usable.
        E.prepare_data(cfg, text=corpus.text)
    rd = E.RunDir.create(cfg.to_dict(), name=name, run_dir=run_dir)
    if detach:
        _detach(rd, resumed=False)
        return
    _train_foreground(E, cfg, rd, resume=False, text=corpus.text, fresh=True)


def _build_config(
    E: Any,
    *,
    preset: str | None,
    config_file: Path | None,
    process: str | None,
    epochs: int | None,
    max_steps: int | None,
    flags: dict[str, dict[str, Any]],
) -> Any:
    """preset < user config < --config file < flags, validated (ConfigError otherwise)."""
    layers: list[tuple[Path, dict[str, Any]]] = []
    user = _user_config_path()
    if user.is_file():
        layers.append((user, E.load_config_file(user)))
    if config_file is not None:
        layers.append((config_file, E.load_config_file(config_file)))
    name = preset
    if name is None:
        for path, layer in reversed(layers):
            if "preset" in layer:
                name = layer["preset"]
                if not isinstance(name, str):
                    raise E.ConfigError(f"{path}: preset must be a string")
                break
    cfg = E.get_preset(name or "default")
    base_kind = cfg.process.kind
    for path, layer in layers:
        body = {k: v for k, v in layer.items() if k != "preset"}
        try:
            E.apply_overrides(cfg, body)
        except E.ConfigError as e:
            raise E.ConfigError(f"{path}: {e}") from None
        train_layer = body.get("train") if isinstance(body.get("train"), dict) else {}
        if "epochs" in train_layer and "max_steps" not in train_layer:
            cfg.train.max_steps = None
    cfg.preset = name or "default"
    if process is not None:
        E.adapt_process(cfg, process)
    elif cfg.process.kind != base_kind:
        E.adapt_process(cfg, cfg.process.kind)
    overrides = {
        section: {k: v for k, v in values.items() if v is not None}
        for section, values in flags.items()
    }
    E.apply_overrides(cfg, {k: v for k, v in overrides.items() if v})
    if epochs is not None and max_steps is None:
        cfg.train.max_steps = None
    try:
        cfg.validate()
    except E.ConfigError as e:
        # Name the flag the user typed rather than the setting it maps to.
        msg = str(e)
        for section, values in overrides.items():
            for key in values:
                msg = msg.replace(f"{section}.{key}", "--" + key.replace("_", "-"))
        msg = msg.replace("--source", "--data")
        raise E.ConfigError(msg) from None
    return cfg


def _train_resume(
    spec: str,
    *,
    epochs: int | None,
    max_steps: int | None,
    device: str | None,
    cadences: dict[str, int | None],
    detach: bool,
) -> None:
    E = _engine()
    rd = E.resolve_run(spec)
    ref = _run_ref(rd)
    if _rank() != 0:
        # DDP worker: read the settings rank 0 uses; it alone writes the run directory.
        cfg = E.RunConfig.from_dict(rd.read_config())
        cfg.train.max_steps = max_steps if max_steps is not None else cfg.train.max_steps
        if epochs is not None:
            cfg.train.epochs = epochs
            cfg.train.max_steps = max_steps
        resumable = rd.latest_checkpoint_step() is not None
        E.Trainer(cfg, run_dir=rd, resume=resumable).run()
        return
    if detach and _world_size() > 1:
        raise _UsageError("--detach cannot be used under torchrun")
    if rd.is_locked():
        pid = rd.read_status().get("pid", "?")
        raise E.RunError(
            f"run {rd.name} is being trained right now (pid {pid}); "
            f"stop it first with `ldlm runs stop {ref}`"
        )
    cfg = E.RunConfig.from_dict(rd.read_config())
    before = cfg.to_dict()
    if max_steps is not None:
        cfg.train.max_steps = max_steps
    if epochs is not None:
        cfg.train.epochs = epochs
        if max_steps is None:
            cfg.train.max_steps = None
    if device is not None:
        cfg.train.device = device
    for key, value in cadences.items():
        if value is not None:
            setattr(cfg.train, key, value)
    cfg.validate()
    E.resolve_device(cfg.train.device)
    step = rd.latest_checkpoint_step() or 0
    t = cfg.train
    if step and t.max_steps is not None and step >= t.max_steps:
        raise E.ConfigError(
            f"run {rd.name} is already at step {step} (max_steps {t.max_steps}); "
            f"pass --max-steps N with N > {step} to train further"
        )
    status = rd.read_status().get("state")
    if status == "finished" and max_steps is None and epochs is None:
        raise E.ConfigError(
            f"run {rd.name} already finished at step {step}; pass --max-steps N or --epochs N "
            "to train further"
        )
    corpus = E.load_corpus(cfg.data.source)
    fresh = not rd.path_of("tokenizer.json").exists() and rd.latest_checkpoint_step() is None
    changed = cfg.to_dict() != before
    if detach:
        if changed:  # the child reads its settings from config.json
            _atomic_write_json(rd.config_path, cfg.to_dict())
        _detach(rd, resumed=not fresh)
        return

    def record_settings() -> None:
        # Once the checkpoint has loaded (compatible), config.json records the extension.
        if changed:
            _atomic_write_json(rd.config_path, cfg.to_dict())

    _train_foreground(
        E, cfg, rd, resume=not fresh, text=corpus.text, fresh=False, on_start=record_settings
    )


def _detach(rd: Any, *, resumed: bool) -> None:
    from .launch import spawn_training

    pid = spawn_training(rd.path)
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
    resume: bool,
    text: str,
    fresh: bool,
    on_start: Any = None,
) -> None:
    from .progress import make_training_display

    ref = _run_ref(rd)
    step = rd.latest_checkpoint_step() if resume else None
    head = f"resuming {rd.name} from step {step}" if step else f"training {rd.name}"
    _out(f"{head}  ({rd.path})")
    _out(
        f"  {cfg.preset} preset · {cfg.process.kind} process · {cfg.data.tokenizer} tokenizer · "
        f"seq_len {cfg.model.seq_len} · batch {cfg.train.batch_size} · {_plan_text(cfg)} · "
        f"device {cfg.train.device}"
    )
    display = make_training_display()
    sinks = [display]
    if on_start is not None:
        started = []

        def first_status(event: Any) -> None:
            if not started and getattr(event, "event", "") == "status":
                started.append(True)
                on_start()

        sinks.insert(0, first_status)
    trainer = E.Trainer(cfg, run_dir=rd, sinks=sinks, resume=resume, text=text)
    try:
        state = trainer.run()
    except E.LdlmError:
        display.close()
        if fresh and trainer.state == "created" and trainer.step == 0:
            _remove_new_run(rd)
        raise
    finally:
        display.close()
    exact = cfg.process.kind == "ar"
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


_CREATED_FILES = ("config.json", "summary.json", "status.json", "metrics.jsonl", "lock")


def _remove_new_run(rd: Any) -> None:
    """Undo RunDir.create when training could not even start (bad data): no empty run left.

    Only what ldlm wrote is removed, and the folder only if that leaves it empty (a --run-dir
    that held other files keeps them).
    """
    for fname in (*_CREATED_FILES, "tokenizer.json"):
        with contextlib.suppress(OSError):
            rd.path_of(fname).unlink()
    with contextlib.suppress(OSError):
        rd.checkpoints_dir.rmdir()
    with contextlib.suppress(OSError):
        rd.path.rmdir()


# --------------------------------------------------------------------------- generate

GENERATE_EPILOG = """\
Examples:

  ldlm generate my-run --prompt "ROMEO:" --length 128
  ldlm generate my-run --prompt "The [MASK*12] sat on the mat."     (infill)
  ldlm generate my-run --sampler threshold --threshold 0.8 --json
  ldlm generate my-run --num 3 --seed 7 --json

Infilling: in the prompt, [MASK] marks one token to generate and [MASK*N] marks N; the rest
is kept as context and --length is ignored. Without markers the prompt is a prefix and
--length tokens follow it. --json prints one object {"text", "nfe", "tokens_per_s",
"sampler", "steps", "run", "step", ...}; with --num N > 1, {"samples": [...]} with seeds
seed..seed+N-1. --animate (default on a terminal) shows the denoising: masked positions as
·, each step's new tokens highlighted, colour = confidence (red low, green high).
"""


@app.command(epilog=_epilog(GENERATE_EPILOG))
def generate(
    run: str = typer.Argument(..., help="Run name or run directory."),
    prompt: str = typer.Option("", "--prompt", help="Prefix, or an infill template."),
    length: int | None = typer.Option(None, "--length", help="Tokens to generate."),
    steps: int | None = typer.Option(
        None, "--steps", help="Model calls (0 = one per token; uniform: 100)."
    ),
    sampler: Sampler | None = typer.Option(None, "--sampler", help="Sampler (auto = natural)."),
    temperature: float | None = typer.Option(None, "--temperature", help="0 = greedy (default)."),
    block_length: int | None = typer.Option(
        None, "--block-length", help="Semi-autoregressive blocks (0 = one block)."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Confidence for the threshold sampler."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    num: int = typer.Option(1, "--num", help="Number of samples."),
    animate: bool | None = typer.Option(
        None, "--animate/--no-animate", help="Show the denoising live [default: on a terminal]."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to run the model."),
) -> None:
    """Generate text from a trained run (its latest checkpoint)."""
    E = _engine()
    if num < 1:
        raise E.ConfigError("--num must be at least 1")
    loaded = E.load_run(run, device=device.value)
    cfg = loaded.config.copy()
    overrides = {
        "length": length,
        "steps": steps,
        "sampler": sampler.value if sampler else None,
        "temperature": temperature,
        "block_length": block_length,
        "threshold": threshold,
        "seed": seed,
    }
    E.apply_overrides(cfg, {"sample": {k: v for k, v in overrides.items() if v is not None}})
    cfg.validate()
    sc = cfg.sample
    if animate is None:
        animate = use_rich() and not json_out
    results = []
    for i in range(num):
        sci = dataclasses.replace(sc, seed=sc.seed + i)
        if animate and num > 1:
            _out(f"── sample {i + 1}/{num} (seed {sci.seed}) ──")
        res = _generate_one(E, loaded, sci, prompt, animate=animate)
        results.append(res)
        if json_out:
            continue
        if not animate:
            if num > 1:
                _out(f"── sample {i + 1}/{num} (seed {sci.seed}) ──")
            _out(res["text"])
        else:
            _err(
                f"nfe {res['nfe']} · {res['tokens_per_s']:,.0f} tok/s · {res['sampler']} · "
                f"{loaded.run.name} step {loaded.step}"
            )
    if json_out:
        _dump_json(results[0] if num == 1 else {"samples": results})


def _generate_one(E: Any, loaded: Any, sc: Any, prompt: str, *, animate: bool) -> dict:
    frames = E.generate(
        loaded.model,
        loaded.process,
        loaded.tokenizer,
        sc,
        prompt,
        device=loaded.device,
        max_len=loaded.config.model.seq_len,
    )
    compute = 0.0
    last = None
    live = None
    if animate:
        from rich.live import Live

        from .progress import render_frame

        live = Live(console=make_console(), refresh_per_second=30, auto_refresh=False)
        live.start()
    try:
        while True:
            t0 = time.perf_counter()
            frame = next(frames, None)
            dt = time.perf_counter() - t0
            compute += dt
            if frame is None:
                break
            last = frame
            if live is not None:
                live.update(render_frame(frame, loaded.tokenizer), refresh=True)
                time.sleep(max(0.0, 0.03 - dt))  # about 30 frames/s, so the eye can follow
    finally:
        if live is not None:
            live.stop()
    assert last is not None
    generated = sum(1 for f in last.fixed if not f)
    return {
        "text": loaded.tokenizer.decode(last.tokens),
        "nfe": last.nfe,
        "tokens_per_s": generated / compute if compute > 0 else 0.0,
        "sampler": sc.sampler if sc.sampler != "auto" else NATURAL_SAMPLER[loaded.process.kind],
        "steps": last.step,
        "generated_tokens": generated,
        "total_tokens": len(last.tokens),
        "seed": sc.seed,
        "temperature": sc.temperature,
        "prompt": prompt,
        "run": loaded.run.name,
        "step": loaded.step,
    }


# --------------------------------------------------------------------------- eval

EVAL_EPILOG = """\
Examples:

  ldlm eval my-run
  ldlm eval my-run --json
  ldlm eval my-run --data other.txt --samples 16

Reports bits per character (comparable across tokenizers) and per token on the run's own
validation split, or on all of --data. For diffusion processes (mask, uniform) the figure is
a Monte Carlo estimate of an upper bound on the NLL (shown as ≤, with its standard error);
for ar it is exact (=).
"""


@app.command(name="eval", epilog=_epilog(EVAL_EPILOG))
def eval_cmd(
    run: str = typer.Argument(..., help="Run name or run directory."),
    data: str | None = typer.Option(
        None, "--data", metavar="PATH|NAME", help="Evaluate on this text instead."
    ),
    samples: int | None = typer.Option(
        None, "--samples", help="Noise draws per window (diffusion bounds)."
    ),
    max_tokens: int | None = typer.Option(
        None, "--max-tokens", help="Held-out tokens to use (default: up to 65,536)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    device: Device = typer.Option(Device.auto, "--device", help="Where to run the model."),
) -> None:
    """Held-out likelihood of a run: bits per character and per token."""
    E = _engine()
    if samples is not None and samples < 1:
        raise E.ConfigError("--samples must be at least 1")
    if max_tokens is not None and max_tokens < 1:
        raise E.ConfigError("--max-tokens must be at least 1")
    loaded = E.load_run(run, device=device.value)
    est = E.evaluate_run(loaded, data=data, samples=samples, max_tokens=max_tokens)
    d = est.to_dict()
    kind = loaded.config.process.kind
    d.update(
        {
            "run": loaded.run.name,
            "path": str(loaded.run.path),
            "step": loaded.step,
            "process": kind,
            "data": data if data is not None else "validation split",
        }
    )
    if json_out:
        _dump_json(d)
        return
    exact = bool(d["exact"])
    rel = "=" if exact else "≤"
    line = f"val {rel} {d['val_bits_per_char']:.2f} bits/char"
    if not exact:
        line += f" (± {d['stderr_bits_per_char']:.2f})"
    line += f", {d['val_bits_per_token']:.2f} bits/token — "
    line += f"exact ({kind} process)" if exact else f"upper bound ({kind} process)"
    _out(line)
    _out(f"  {loaded.run.name} at step {loaded.step} · {d['tokens']:,} tokens · {d['data']}")


# --------------------------------------------------------------------------- runs


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
    header = ("NAME", "STATE", "STEP", "BEST VAL b/c", "PRESET", "PROCESS", "UPDATED")
    rows = [
        (
            i.name,
            i.state,
            f"{i.step:,}",
            _val_str(i.best_val_bits_per_char, i.process == "ar"),
            i.preset,
            i.process,
            _ago(i.last_update),
        )
        for i in infos
    ]
    if use_rich():
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for h in header:
            table.add_column(h, justify="right" if h in ("STEP", "BEST VAL b/c") else "left")
        colours = {"live": "green", "failed": "red", "dead": "red", "stopped": "yellow"}
        for r in rows:
            table.add_row(*r, style=colours.get(r[1], ""))
        make_console().print(table)
        return
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    for r in (header, *rows):
        _out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _list_checkpoint_steps(rd: Any) -> list[int]:
    out = []
    try:
        for p in rd.checkpoints_dir.iterdir():
            if p.name.startswith("step-") and (p / "meta.json").is_file():
                with contextlib.suppress(ValueError):
                    out.append(int(p.name[5:]))
    except OSError:
        pass
    return sorted(out)


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
    ckpts = _list_checkpoint_steps(rd)
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
            }
        )
        return
    m, p, d, t = (config.get(k) or {} for k in ("model", "process", "data", "train"))
    _out(f"run        {rd.name}  ({rd.path})")
    line = f"state      {state} · step {status.get('step', summary.get('step', 0)):,}"
    if state == "live":
        line += f" · pid {status.get('pid', '?')} on {status.get('host', '?')}"
    _out(line)
    if status.get("message"):
        _out(f"status     {status.get('state')}: {_one_line(status['message'])}")
    plan = " or ".join(
        x
        for x in (
            f"{t.get('max_steps'):,} steps" if t.get("max_steps") else "",
            f"{t.get('epochs')} epochs" if t.get("epochs") else "",
        )
        if x
    )
    _out(
        f"config     preset {config.get('preset', '?')} · process {p.get('kind', '?')} · "
        f"tokenizer {d.get('tokenizer', '?')} · vocab {m.get('vocab_size', '?')}"
    )
    _out(
        f"model      d_model {m.get('d_model')} · {m.get('n_layers')} layers · "
        f"{m.get('n_heads')} heads · seq_len {m.get('seq_len')}"
    )
    _out(
        f"train      batch {t.get('batch_size')} · lr {t.get('lr')} · {plan} · "
        f"{t.get('precision')} · device {t.get('device')}"
    )
    _out(f"data       {d.get('source')}")
    if "step" in last:
        e = last["step"]
        _out(
            f"last step  {e.get('step')} · loss {e.get('loss', float('nan')):.3f} · "
            f"{e.get('tokens_per_s', 0):,.0f} tok/s · elapsed "
            f"{format_duration(e.get('elapsed_s'))}"
        )
    exact = p.get("kind") == "ar"
    if "eval" in last:
        e = last["eval"]
        bound = format_bound(
            e.get("val_bits_per_char", float("nan")),
            e.get("stderr_bits_per_char", 0.0),
            bool(e.get("exact", exact)),
        )
        best = _val_str(summary.get("best_val_bits_per_char"), exact)
        _out(f"last eval  step {e.get('step')} · {bound} · best {best}")
    if "sample" in last:
        e = last["sample"]
        _out(f"sample     step {e.get('step')} · {one_line(str(e.get('text', '')))}")
    if ckpts:
        _out("checkpoints " + ", ".join(str(s) for s in ckpts))
    else:
        _out("checkpoints none yet")


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
    """Ask a live run to checkpoint and stop (through its run directory; SIGTERM fallback)."""
    E = _engine()
    rd = E.resolve_run(run)
    state = rd.liveness()
    if state != "live":
        raise E.RunError(f"run {rd.name} is not running (state: {state})")
    rd.request("stop")
    _out(f"asked {rd.name} to stop")
    if not wait:
        return
    start = time.monotonic()
    signalled = False
    while rd.liveness() == "live":
        waited = time.monotonic() - start
        if waited > timeout:
            _err(f"ldlm: error: run {rd.name} did not stop within {timeout:.0f}s")
            raise typer.Exit(1)
        if not signalled and waited > timeout / 3:
            signalled = True
            if rd.signal_stop():
                _out(f"no answer yet; sent SIGTERM to pid {rd.read_status().get('pid')}")
        time.sleep(0.2)
    st = rd.read_status()
    _out(
        f"stopped {rd.name} at step {st.get('step', '?')} ({st.get('state', '?')}); "
        f"resume with `ldlm train --resume {_shell_quote(_run_ref(rd))}`"
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
        if not typer.confirm(f"Delete run {rd.name} ({rd.path})?", default=False):
            _out("nothing deleted")
            raise typer.Exit(1)
    path = E.delete_run(rd.path, force=force)
    _out(f"deleted {rd.name} ({path})")


# --------------------------------------------------------------------------- data


@data_app.command(
    "inspect",
    epilog=_epilog(
        "Examples:\n\n  ldlm data inspect my.txt\n  ldlm data inspect ./texts/ --json\n"
        "  ldlm data inspect builtin --seq-len 256\n"
    ),
)
def data_inspect(
    spec: str = typer.Argument(
        ..., metavar="PATH|NAME", help="File, folder of .txt files, 'builtin' or a named corpus."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    seq_len: int | None = typer.Option(
        None, "--seq-len", help="Sequence length for the split check (default: 128)."
    ),
    bpe_vocab_size: int | None = typer.Option(
        None, "--bpe-vocab-size", help="BPE vocabulary size (default: 2048)."
    ),
) -> None:
    """Size, characters, vocabulary and token counts per tokenizer, and split sizes."""
    E = _engine()
    cfg = E.RunConfig()
    if seq_len is not None:
        cfg.model.seq_len = seq_len
    if bpe_vocab_size is not None:
        cfg.data.bpe_vocab_size = bpe_vocab_size
    cfg.validate()
    corpus = E.load_corpus(spec)
    text = corpus.text
    nbytes = len(text.encode("utf-8"))
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    info: dict[str, Any] = {
        "name": corpus.name,
        "source": corpus.source,
        "bytes": nbytes,
        "chars": len(text),
        "lines": lines,
        "distinct_chars": len(set(text)),
        "seq_len": cfg.model.seq_len,
        "val_fraction": cfg.data.val_fraction,
        "tokenizers": {},
    }
    for kind in ("char", "word", "bpe"):
        cfg.data.tokenizer = kind
        tok = E.build_tokenizer(
            kind, text, vocab_size=cfg.data.bpe_vocab_size, min_count=cfg.data.word_min_count
        )
        row: dict[str, Any] = {"vocab_size": tok.vocab_size}
        try:
            _, splits = E.prepare_data(cfg, tok, text)
            n = int(splits.train.numel() + splits.val.numel())
            row.update(
                tokens=n,
                train_tokens=int(splits.train.numel()),
                val_tokens=int(splits.val.numel()),
                fits=True,
            )
        except E.DataError as e:
            n = int(tok.encode_array(text).size)
            row.update(tokens=n, train_tokens=None, val_tokens=None, fits=False, error=str(e))
        row["chars_per_token"] = len(text) / n if n else 0.0
        info["tokenizers"][kind] = row
    if json_out:
        _dump_json(info)
        return
    _out(f"{corpus.name}  ({corpus.source})")
    _out(
        f"  {nbytes:,} bytes · {len(text):,} chars · {lines:,} lines · "
        f"{info['distinct_chars']:,} distinct characters"
    )
    _out(f"  split for seq_len {cfg.model.seq_len}, {cfg.data.val_fraction:.0%} held out:")
    header = ("tokenizer", "vocab", "tokens", "chars/token", "train", "val")
    rows = []
    for kind, r in info["tokenizers"].items():
        rows.append(
            (
                kind,
                f"{r['vocab_size']:,}",
                f"{r['tokens']:,}",
                f"{r['chars_per_token']:.2f}",
                f"{r['train_tokens']:,}" if r["fits"] else "too short",
                f"{r['val_tokens']:,}" if r["fits"] else "-",
            )
        )
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
    for r in (header, *rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        _out("  " + "  ".join(cells))
    for kind, r in info["tokenizers"].items():
        if not r["fits"]:
            _out(f"  {kind}: {r['error']}")


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
