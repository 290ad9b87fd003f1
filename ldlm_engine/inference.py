"""Loading a trained run for generation and evaluation (no optimizer, no training state)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .checkpoint_checks import Fit, model_spec
from .config import MAX_EVAL_SAMPLES, MAX_EVAL_TERMS, RunConfig, check_range
from .corpora import load_corpus
from .data import count_chars, encode_corpus, eval_windows
from .ema import ema_spec, load_weights
from .errors import CheckpointError, ConfigError, DataError
from .evaluation import BoundEstimate, estimate_nll
from .model import DiffusionTransformer
from .processes import NoiseProcess
from .runs import RunDir, resolve_run
from .runtime import TOKENIZER_FILE, autocast_dtype, build_model, prepare_data, resolve_device
from .tokenizers import Tokenizer, load_tokenizer


@dataclass
class LoadedRun:
    """A run's model at its latest checkpoint, ready to sample from or evaluate."""

    run: RunDir
    config: RunConfig
    tokenizer: Tokenizer
    model: DiffusionTransformer
    process: NoiseProcess
    step: int
    device: torch.device
    note: str = ""  # set when the newest checkpoint was incomplete and an older one loaded
    live: bool = False  # the weights of a run training in this process, not a checkpoint


def load_run(run: str | Path | RunDir, device: str = "auto") -> LoadedRun:
    """Rebuild model, process and tokenizer from a run directory and its latest checkpoint
    (with its averaged weights when it was trained with ``train.ema``).

    Works on a run that is still training: checkpoints are written atomically, so the newest
    complete one is always readable.
    """
    rd = run if isinstance(run, RunDir) else resolve_run(run)
    config = RunConfig.from_dict(rd.read_config())
    tokenizer = load_tokenizer(rd.path_of(TOKENIZER_FILE))
    if tokenizer.vocab_size != config.model.vocab_size:
        raise CheckpointError(
            f"{rd.path_of(TOKENIZER_FILE)} has {tokenizer.vocab_size} tokens but the model "
            f"expects {config.model.vocab_size}"
        )
    dev = resolve_device(device)
    model, process = build_model(config, tokenizer)
    fit = Fit(model_spec(model), (), config.to_dict(), ema=ema_spec(model))
    ck = load_checkpoint(rd.checkpoints_dir, fit=fit)
    load_weights(model, ck)  # names, shapes and dtypes checked above; the average if saved
    model.to(dev).eval()
    process.to(dev)
    return LoadedRun(rd, config, tokenizer, model, process, ck.step, dev, ck.note)


def check_eval_request(samples: int | None, max_tokens: int | None) -> None:
    """Refuse an evaluation's counts before the run loads (ConfigError, one line):
    ``samples`` in 1..MAX_EVAL_SAMPLES, ``max_tokens`` in 1..10**9 (None: the defaults)."""
    check_range("--samples", samples, 1, MAX_EVAL_SAMPLES)
    check_range("--max-tokens", max_tokens, 1, 10**9)


def evaluate_run(
    loaded: LoadedRun,
    *,
    data: str | None = None,
    max_tokens: int | None = None,
    samples: int | None = None,
    seed: int = 0,
) -> BoundEstimate:
    """Held-out bits/char of a run: its own validation split, or the start of another file.

    Characters are those of the tokens evaluated (at most ``max_tokens``), counted exactly.
    """
    check_eval_request(samples, max_tokens)
    cfg = loaded.config
    seq_len = cfg.model.seq_len
    max_tokens = max_tokens or max(cfg.train.eval_tokens, 65_536)
    source = cfg.data.source if data is None else data
    text = load_corpus(source, max_mb=cfg.data.max_corpus_mb).text
    if data is None:
        _, splits = prepare_data(cfg, loaded.tokenizer, text)
        val, start = splits.val, int(splits.train.numel())
    else:
        val, start = encode_corpus(loaded.tokenizer, text), 0
        if val.numel() < seq_len:
            raise DataError(
                f"{data} is shorter than one sequence ({val.numel()} < {seq_len} tokens)"
            )
    windows = eval_windows(val, seq_len, max_tokens)
    samples = samples or max(4, cfg.train.eval_samples)
    if windows.shape[0] * samples > MAX_EVAL_TERMS:
        raise ConfigError(
            f"{windows.shape[0]:,} windows x {samples} samples is more than {MAX_EVAL_TERMS:,} "
            "terms; lower --samples or --max-tokens"
        )
    chars = count_chars(loaded.tokenizer, text, start, windows, start + int(val.numel()))
    return estimate_nll(
        loaded.model,
        loaded.process,
        windows,
        chars_per_token=chars / windows.numel(),
        samples=samples,
        batch_size=max(64, cfg.train.batch_size),
        seed=seed,
        device=loaded.device,
        autocast_dtype=autocast_dtype(cfg.train.precision, loaded.device),
    )
