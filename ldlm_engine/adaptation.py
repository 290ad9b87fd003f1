"""Starting a run from another run's weights (``--init-from RUN``): adapting ar to diffusion.

DiffuGPT and Fast-dLLM v2 turn a trained causal model into a diffusion model for a small
share of what training one from scratch costs. ldlm's shifted block process
(``process.block_shift``) makes that a continuation rather than a re-learning: each block's
first token is predicted exactly as the ar model predicts it, and every other masked token
is read off the position before it, where the ar model already put its guess of the next
token. The new run takes the source's shape and tokenizer (anything else would not fit the
weights), records where it started in ``train.init_from`` / ``train.init_step``, and from
then on is an ordinary run: it checkpoints and resumes like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import MODEL_SHAPE_KEYS, TOKENIZER_KEYS, RunConfig
from .errors import CheckpointError, ConfigError, LdlmError
from .layout import TOKENIZER_FILE
from .runs import RunDir, resolve_run

SHAPE = {"model": (*MODEL_SHAPE_KEYS, "activation"), "data": TOKENIZER_KEYS}
"""What a run started from another must share with it: the weights' shapes, the function
they were trained to compute with, and the tokens."""


def init_source(ref: str | Path) -> tuple[RunDir, RunConfig]:
    """The run named by ``--init-from`` and its config (ConfigError in one line if unusable)."""
    try:
        rd = resolve_run(ref)
        cfg = RunConfig.from_dict(rd.read_config())
    except LdlmError as e:
        raise ConfigError(f"--init-from: {e}") from None
    return rd, cfg


def inherit_shape(cfg: RunConfig, explicit: dict[str, dict[str, Any]]) -> RunDir | None:
    """Give ``cfg`` the shape and tokenizer of the run in ``cfg.train.init_from``.

    ``explicit`` holds the user's explicit choices: one that contradicts the source is an
    error ("cannot start from RUN: model.d_model is 128 there, 256 here"), since those weights
    cannot fill that model. Records the source's absolute path and its newest step.
    """
    if not cfg.train.init_from:
        return None
    rd, src = init_source(cfg.train.init_from)
    if "uniform" in (src.process.kind, cfg.process.kind) and src.process.kind != cfg.process.kind:
        raise ConfigError(
            f"cannot start from {rd.name}: the uniform process needs a time embedding, "
            "which other processes do not have"
        )
    for section, keys in SHAPE.items():
        chosen = explicit.get(section, {})
        for key in keys:
            theirs = getattr(getattr(src, section), key)
            if key in chosen and chosen[key] != theirs:
                raise ConfigError(
                    f"cannot start from {rd.name}: {section}.{key} is {theirs!r} there, "
                    f"{chosen[key]!r} here"
                )
            setattr(getattr(cfg, section), key, theirs)
    cfg.model.vocab_size = src.model.vocab_size
    if "ar_phase" not in explicit.get("process", {}):
        cfg.process.ar_phase = 0.0  # the source did the ar part already
    from .checkpoint import load_checkpoint

    try:
        ck = load_checkpoint(rd.checkpoints_dir)
    except CheckpointError as e:
        raise ConfigError(f"cannot start from {rd.name}: {e}") from None
    cfg.train.init_from = str(rd.path)
    cfg.train.init_step = ck.step
    return rd


def source_tokenizer(cfg: RunConfig):
    """The tokenizer of the run this one starts from (the new run's ids must mean the same)."""
    from .tokenizers import load_tokenizer

    rd, _ = init_source(cfg.train.init_from)
    return load_tokenizer(rd.path_of(TOKENIZER_FILE))


def load_init_weights(model, cfg: RunConfig) -> str:
    """Fill ``model`` with the source run's weights at ``train.init_step`` (their average
    when it was trained with ``train.ema``: the model it generates from); returns a note."""
    from .checkpoint import load_checkpoint
    from .checkpoint_checks import Fit
    from .ema import ema_spec, load_weights

    rd, _ = init_source(cfg.train.init_from)
    name = str(cfg.train.init_step) if cfg.train.init_step else None
    try:
        ck = load_checkpoint(rd.checkpoints_dir, name, fit=Fit(ema=ema_spec(model)))
        load_weights(model, ck)
    except CheckpointError as e:
        raise CheckpointError(f"--init-from {rd.name}: {e}") from None
    except RuntimeError as e:  # shapes: inherit_shape makes this unreachable for plans
        raise CheckpointError(
            f"--init-from {rd.name}: its weights do not fit this model: {str(e).splitlines()[0]}"
        ) from None
    return f"started from {rd.name} at step {ck.step}"
