"""Use cases that every front end shares: planning a new run and planning a resume.

The CLI (`ldlm train`) and the app (the Train pane, the Runs pane's resume) only gather the
user's choices and render what happens; every rule about turning choices into a run lives
here, once, so the two can never drift: how settings layer (declared in :data:`LAYERS`), what
an explicit budget replaces, that the corpus path is made absolute, that the corpus is read
and tokenized *before* any run directory exists, whether and how a run may resume, and which
DDP rank writes the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adaptation import inherit_shape, source_tokenizer
from .config import RunConfig, adapt_process, apply_overrides, fit_sampler, load_config_file
from .corpora import list_corpora, load_corpus
from .errors import ConfigError, RunError
from .fileio import atomic_write_json
from .layout import expand_user
from .presets import get_preset
from .runs import RunDir, discard_new_run, resolve_run

LAYERS = ("preset", "user config.toml", "--config file", "explicit choices")
"""How settings layer, lowest first: a later layer overrides an earlier one key by key."""


def user_config_path() -> Path:
    """``$LDLM_CONFIG_DIR/config.toml``, else platformdirs' user config folder for ldlm."""
    d = os.environ.get("LDLM_CONFIG_DIR")
    if d:
        return Path(d).expanduser() / "config.toml"
    import platformdirs

    return Path(platformdirs.user_config_dir("ldlm")) / "config.toml"


def ddp_rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 writes a run directory."""
    return int(os.environ.get("RANK", "0") or 0)


def ddp_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


@dataclass
class RunChoices:
    """What a user chose for a new run; ``None`` everywhere means "not chosen".

    ``settings`` maps a config section to explicit values (``{"train": {"lr": 3e-4}}``);
    ``flag_names`` maps ``section.key`` to how the front end names it ("--lr", "lr"), so a
    validation error speaks the user's language.
    """

    preset: str | None = None
    config_file: str | Path | None = None
    process: str | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str | None = None
    run_dir: str | Path | None = None
    flag_names: Mapping[str, str] = field(default_factory=dict)


def _read_layers(config_file: str | Path | None) -> list[tuple[Path, dict[str, Any]]]:
    layers: list[tuple[Path, dict[str, Any]]] = []
    user = user_config_path()
    if user.is_file():
        layers.append((user, load_config_file(user)))
    if config_file is not None:
        path = expand_user(str(config_file))
        layers.append((path, load_config_file(path)))
    return layers


def layered_config(preset: str | None = None, config_file: str | Path | None = None) -> RunConfig:
    """Preset < user config.toml < --config file, before any explicit choice.

    This is what a form shows as its starting values, so that submitting it unchanged gives
    the same run as the command line without flags.
    """
    return _layered(preset, config_file, process=None)


def _layered(preset: str | None, config_file: str | Path | None, process: str | None) -> RunConfig:
    layers = _read_layers(config_file)
    name = preset
    if name is None:
        for path, layer in reversed(layers):
            if "preset" in layer:
                if not isinstance(layer["preset"], str):
                    raise ConfigError(f"{path}: preset must be a string")
                name = layer["preset"]
                break
    cfg = get_preset(name or "default")
    base_kind = cfg.process.kind
    for path, layer in layers:
        body = {k: v for k, v in layer.items() if k != "preset"}
        try:
            apply_overrides(cfg, body)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        _explicit_budget(cfg, body.get("train"))
    cfg.preset = name or "default"
    if process is not None:
        adapt_process(cfg, process)
    elif cfg.process.kind != base_kind:
        adapt_process(cfg, cfg.process.kind)
    if not any("sampler" in (layer.get("sample") or {}) for _, layer in layers):
        fit_sampler(cfg)  # a layer may have turned off what the preset's sampler needs
    return cfg


def _explicit_budget(cfg: RunConfig, train: Any) -> None:
    """An explicit budget is *the* budget: epochs alone drop the preset's step limit, and a
    step count alone drops the preset's epoch count (the seed preset counts epochs)."""
    if not isinstance(train, dict):
        return
    if train.get("epochs") is not None and train.get("max_steps") is None:
        cfg.train.max_steps = None
    if train.get("max_steps") is not None and train.get("epochs") is None:
        cfg.train.epochs = None


def _short_run_warmup(cfg: RunConfig, train: dict[str, Any]) -> None:
    """A short explicit run still finishes its warm-up: at most a tenth of its steps."""
    steps = train.get("max_steps")
    if not isinstance(steps, int) or steps < 1:
        return  # validation names the bad value
    if train.get("warmup_steps") is None:
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, steps // 10)


def build_run_config(choices: RunChoices) -> RunConfig:
    """The validated RunConfig for a new run (ConfigError, in the user's words, if not)."""
    cfg = _layered(choices.preset, choices.config_file, choices.process)
    explicit = {
        section: {k: v for k, v in values.items() if v is not None}
        for section, values in choices.settings.items()
    }
    explicit = {k: v for k, v in explicit.items() if v}
    try:
        apply_overrides(cfg, explicit)
        train = explicit.get("train", {})
        _explicit_budget(cfg, train)
        _short_run_warmup(cfg, train)
        inherit_shape(cfg, explicit)
        cfg.validate()
    except ConfigError as e:
        msg = str(e)
        for key, flag in choices.flag_names.items():
            msg = msg.replace(key, flag)
        raise ConfigError(msg) from None
    named = {n for n, _ in list_corpora()}
    if cfg.data.source not in named:
        # Absolute, so the run can be resumed or evaluated from any folder.
        cfg.data.source = str(expand_user(cfg.data.source).resolve())
    return cfg


@dataclass
class RunPlan:
    """A new run, checked end to end: config valid, corpus read and tokenized, nothing on disk.

    ``create()`` makes the run directory (rank 0 only); ``trainer(...)`` builds the Trainer
    with the data already prepared, so the corpus is tokenized once.
    """

    config: RunConfig
    text: str | None = field(repr=False)  # handed to the first trainer(), then let go
    data: tuple[Any, Any] = field(
        repr=False
    )  # (tokenizer, TokenSplits), prepared before anything is created
    name: str | None = None
    run_dir: Path | None = None
    rank: int = 0

    @property
    def writes_run_dir(self) -> bool:
        return self.rank == 0

    def create(self) -> RunDir:
        if not self.writes_run_dir:
            raise RunError("only rank 0 creates the run directory")
        return RunDir.create(self.config.to_dict(), name=self.name, run_dir=self.run_dir)

    def trainer(self, run_dir: RunDir | None, **kwargs: Any):
        from .training import Trainer

        # The Trainer drops the text once it has counted the evaluated characters; the plan
        # lets go too, so a long run does not keep a copy of the corpus (a later trainer()
        # call reads it again if it needs it).
        text, self.text = self.text, None
        return Trainer(self.config, run_dir=run_dir, text=text, data=self.data, **kwargs)


def plan_run(choices: RunChoices) -> RunPlan:
    """Validate everything a new run needs before any directory exists (LdlmError if not)."""
    if choices.name is not None and choices.run_dir is not None:
        raise ConfigError("a run takes a name or a run directory, not both")
    cfg = build_run_config(choices)
    from .runtime import prepare_data, resolve_device

    resolve_device(cfg.train.device)
    text = load_corpus(cfg.data.source, max_mb=cfg.data.max_corpus_mb).text
    tok = source_tokenizer(cfg) if cfg.train.init_from else None
    data = prepare_data(cfg, tok, text=text)
    run_dir = expand_user(str(choices.run_dir)) if choices.run_dir is not None else None
    return RunPlan(cfg, text, data, choices.name, run_dir, ddp_rank())


@dataclass
class ResumePlan:
    """How a stopped run continues: its own settings, extended budget, same run directory.

    ``resume`` is False for a run that never reached its first checkpoint (it starts over in
    place); ``changed`` says whether config.json must record an extension, which
    :meth:`record_settings` does once the checkpoint has loaded.
    """

    run: RunDir
    config: RunConfig
    step: int
    resume: bool
    changed: bool
    text: str = field(repr=False, default="")
    rank: int = 0

    @property
    def writes_run_dir(self) -> bool:
        return self.rank == 0

    def record_settings(self) -> None:
        if self.changed and self.writes_run_dir:
            try:
                atomic_write_json(self.run.config_path, self.config.to_dict())
            except OSError as e:
                raise RunError(f"cannot write {self.run.config_path}: {e.strerror or e}") from None

    def trainer(self, **kwargs: Any):
        from .training import Trainer

        return Trainer(self.config, run_dir=self.run, resume=self.resume, text=self.text, **kwargs)


def plan_resume(
    run: str | Path | RunDir,
    *,
    max_steps: int | None = None,
    epochs: int | None = None,
    device: str | None = None,
    cadences: Mapping[str, int | None] | None = None,
    max_corpus_mb: int | None = None,
) -> ResumePlan:
    """Check that ``run`` may continue here, with which settings (LdlmError if it may not).

    A live run is refused (one trainer per run); a finished run or one already at its step
    limit needs a larger budget. DDP ranks other than 0 read the same settings and never
    write the run directory.
    """
    rd = run if isinstance(run, RunDir) else resolve_run(run)
    rank = ddp_rank()
    cfg = RunConfig.from_dict(rd.read_config())
    before = cfg.to_dict()
    if max_steps is not None:
        cfg.train.max_steps = max_steps
    if epochs is not None:
        cfg.train.epochs = epochs
        if max_steps is None:
            cfg.train.max_steps = None
    if device is not None:
        cfg.train.device = device
    if max_corpus_mb is not None:  # the corpus may have grown past its limit
        cfg.data.max_corpus_mb = max_corpus_mb
    for key, value in (cadences or {}).items():
        if value is not None:
            setattr(cfg.train, key, value)
    cfg.validate()
    step = rd.latest_checkpoint_step() or 0
    changed = cfg.to_dict() != before
    if rank != 0:
        text = load_corpus(cfg.data.source, max_mb=cfg.data.max_corpus_mb).text
        return ResumePlan(rd, cfg, step, _has_tokenizer(rd), changed, text, rank)
    if rd.is_locked():
        pid = rd.read_status().get("pid", "?")
        raise RunError(
            f"run {rd.name} is being trained right now (pid {pid}); stop it first "
            f"(`ldlm runs stop {rd.name}`) or attach to it"
        )
    from .runtime import resolve_device

    resolve_device(cfg.train.device)
    t = cfg.train
    if step and t.max_steps is not None and step >= t.max_steps:
        raise ConfigError(
            f"run {rd.name} is already at step {step} (max_steps {t.max_steps}); "
            f"pass --max-steps N with N > {step} to train further"
        )
    state = rd.read_status().get("state")
    if state == "finished" and max_steps is None and epochs is None:
        raise ConfigError(
            f"run {rd.name} already finished at step {step}; pass --max-steps N or --epochs N "
            "to train further"
        )
    text = load_corpus(
        cfg.data.source, max_mb=cfg.data.max_corpus_mb
    ).text  # still there, before anything changes
    return ResumePlan(rd, cfg, step, _has_tokenizer(rd), changed, text, rank)


def discard_unstarted_run(rd: RunDir) -> None:
    """Undo ``RunPlan.create`` when training could not even start: no empty run is left
    (only what ldlm wrote is removed; see :func:`ldlm_engine.runs.discard_new_run`)."""
    discard_new_run(rd)


def _has_tokenizer(rd: RunDir) -> bool:
    from .runtime import TOKENIZER_FILE

    return rd.path_of(TOKENIZER_FILE).exists() or rd.latest_checkpoint_step() is not None


def replace_sample(cfg: RunConfig, **overrides: Any) -> RunConfig:
    """A copy of ``cfg`` with sample settings overridden (None = keep) and validated."""
    out = cfg.copy()
    given = {k: v for k, v in overrides.items() if v is not None}
    apply_overrides(out, {"sample": given})
    return out.validate()
