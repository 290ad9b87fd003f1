"""Configuration dataclasses, presets, validation and (de)serialisation.

A :class:`RunConfig` is everything needed to rebuild a run's model, tokenizer and training
loop; it is saved as ``config.json`` in every run directory. Validation happens here, before
anything is allocated, so absurd values (negative sizes, seq_len 10**9) never reach torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .fileio import read_bounded

CONFIG_FILE_LIMIT = 4 << 20  # a settings file is a few hundred bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_VERSION = 1

PROCESSES = ("mask", "uniform", "ar", "block")
TOKENIZERS = ("char", "word", "bpe")
SCHEDULES = ("cosine", "linear")
POSITIONS = ("rope", "sincos")
# "gelu" is exact (erf); "gelu_tanh" is GPT-2's approximation, which every run saved before
# the setting existed used (runs.RunDir.read_config fills it in for them). On a CPU the
# tanh form's backward cost 4-5x the exact one's (8% of an fp32 training step).
ACTIVATIONS = ("gelu", "gelu_tanh")
LEGACY_ACTIVATION = "gelu_tanh"
OPTIMIZERS = ("adamw", "adam")
LR_SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
BLOCK_MASKINGS = ("exact", "bernoulli")
SAMPLERS_BY_PROCESS: dict[str, tuple[str, ...]] = {
    "mask": ("low_confidence", "random", "threshold", "left_to_right"),
    "uniform": ("uniform",),
    "ar": ("ar",),
    "block": ("low_confidence", "threshold", "random", "left_to_right", "speculative"),
}
"""Which samplers fit which process, the first being its default: the one table that the
samplers, both front ends and the benchmarks read (here, because this module needs no torch)."""
SAMPLERS = tuple(dict.fromkeys(s for names in SAMPLERS_BY_PROCESS.values() for s in names))


NEEDS_SHIFT = (
    "the speculative sampler needs a block model trained with the token shift "
    "(process.block_shift = true): its ar head verifies the drafts"
)


def samplers_for(process: ProcessConfig) -> tuple[str, ...]:
    """The samplers a run's process can use, its default first: ``speculative`` needs the
    token shift (its ar head verifies the drafts)."""
    names = SAMPLERS_BY_PROCESS.get(process.kind, ("low_confidence",))
    if not (process.kind == "block" and process.block_shift):
        names = tuple(n for n in names if n != "speculative")
    return names


# What the weights' shapes and the token ids depend on: a checkpoint's fingerprint and a run
# started from another (--init-from) both check these (with the vocabulary size).
MODEL_SHAPE_KEYS = (
    "d_model",
    "n_heads",
    "n_layers",
    "d_ff",
    "seq_len",
    "positions",
    "time_embedding",
    "tie_weights",
)
TOKENIZER_KEYS = ("tokenizer", "bpe_vocab_size", "word_min_count")

# Upper limits that keep a typo (or a hostile config file) from allocating terabytes.
MAX_SEQ_LEN = 65_536
MAX_VOCAB = 1_000_000
MAX_D_MODEL = 16_384
MAX_LAYERS = 256
MAX_STEPS = 10**12  # optimizer steps, warm-up and cadences: decades of training, not 2**63
MAX_EPOCHS = 1_000_000
MAX_SAMPLE_STEPS = 100_000  # model calls per sample, as many as the uniform process's T
# Per-command numbers (named in each flag's --help): generate --num, eval --samples. The
# evaluation holds windows x samples float64 terms, so their product is bounded as well.
MAX_NUM = 10_000
MAX_EVAL_SAMPLES = 1_000
MAX_EVAL_TERMS = 20_000_000  # 160 MB of terms
# Each limit above alone still allows a model of ~10**12 weights (terabytes); this caps their
# product, far above the largest preset (~110M) and anything this toolkit trains.
MAX_PARAMETERS = 10_000_000_000


@dataclass
class ModelConfig:
    """Shape of the :class:`~ldlm_engine.model.DiffusionTransformer`."""

    d_model: int = 256
    n_heads: int = 8
    n_layers: int = 6
    d_ff: int = 1024
    seq_len: int = 128
    dropout: float = 0.0
    positions: str = "rope"  # "rope" (rotary, default) or "sincos" (additive, the seed's)
    time_embedding: bool = False  # condition on t; the uniform process needs it
    tie_weights: bool = True
    activation: str = "gelu"  # the MLP's: "gelu" (exact) or "gelu_tanh" (older runs')
    vocab_size: int = 0  # filled in from the tokenizer


@dataclass
class ProcessConfig:
    """The noise process and its schedule."""

    kind: str = "mask"  # "mask" (LLaDA), "uniform" (the seed's), "ar" (causal baseline)
    timesteps: int = 1000  # T for the uniform process
    schedule: str = "cosine"  # uniform process: p(t) = 1 - alpha_bar(t)
    eps: float = 1e-3  # masked process: t ~ U(eps, 1)
    antithetic: bool = True  # stratify t across the batch to cut the loss variance
    # block process (BD3-LM): blocks left to right, masked diffusion inside each block
    block_size: int = 8  # tokens per block; must divide model.seq_len (1 = exact NLL)
    block_masking: str = "exact"  # "exact": k ~ U{1..B} masks weighted B/k; "bernoulli": 1/t
    # False: the clean copy runs without gradients (1.5x a masked step instead of 2.35x, but
    # a biased gradient that learns less per step, barely at blocks of 1-2); True: BD3-LM's
    # one joint pass. block_shift always trains jointly (its clean copy scores tokens).
    block_clean_grad: bool = False
    block_warmup: float = 0.0  # fraction of the steps trained as one block (masked) first
    # Token shift (Fast-dLLM v2): a masked token is read off the position before it and each
    # block's first token off the clean prefix, exactly as an ar model predicts it. Blocks of
    # 1 are then an ar model, so an ar run's weights start a block run where they left off.
    block_shift: bool = False
    ar_loss: float = 0.0  # block_shift: weight of the free next-token loss on the clean copy
    ar_phase: float = 0.0  # block_shift: fraction of the steps trained as ar (blocks of 1)
    full_blocks: float = 0.0  # share of steps with one block over the whole window (infill)
    # block_shift: whenever another token of a block is known, add the logits of the block's
    # last noisy position (it sees the whole block; its output is otherwise unused) to the ar
    # prediction of the block's first token, which alone cannot see the block. Without it
    # the bound can never be exact: the first token ignores the rest of its block.
    block_wrap: bool = False


@dataclass
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    source: str = "builtin"  # a file, a folder of .txt files, "builtin", or a named corpus
    tokenizer: str = "char"
    bpe_vocab_size: int = 2048
    word_min_count: int = 1
    val_fraction: float = 0.1
    # Larger corpora are refused from their size before reading (1..1,000,000 MiB).
    max_corpus_mb: int = 1024


@dataclass
class TrainConfig:
    """The optimisation loop and its cadences (all cadences in optimizer steps, 0 = never)."""

    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    epochs: int | None = None
    max_steps: int | None = 2000
    precision: str = "auto"  # bf16 where the hardware runs it fast, else fp32
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 250
    eval_every_epochs: int = 0  # the seed's "every 10 epochs" cadence; 0 = use steps
    eval_tokens: int = 16_384  # held-out tokens per periodic evaluation
    eval_samples: int = 2  # Monte Carlo draws of t per held-out window
    sample_every: int = 250
    sample_every_epochs: int = 0
    sample_length: int = 64
    # Periodic samples: greedy decoding of a young masked model gives only spaces.
    sample_temperature: float = 1.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    compile: bool = False
    # Evaluate, sample and save for inference an average of the weights (ema.py); 0 = off,
    # else its decay, e.g. 0.999 (about the last 1000 steps).
    ema: float = 0.0
    # --init-from: the run whose weights start this one (absolute path) and its step; "" = none
    init_from: str = ""
    init_step: int = 0


@dataclass
class SampleConfig:
    """How text is generated from a trained model."""

    sampler: str = "auto"  # "auto" picks the process's natural sampler
    length: int = 64  # generated tokens
    steps: int = 0  # model calls budget; 0 = one per generated token (uniform: 100)
    temperature: float = 0.8  # tempered: greedy decoding of a small model repeats one token
    block_length: int = 0  # semi-autoregressive blocks; 0 = one block
    threshold: float = 0.9  # confidence needed by the "threshold" sampler
    seed: int = 0
    top_p: float = 1.0  # nucleus: sample among the likeliest ids holding this much probability
    top_k: int = 0  # sample among the k likeliest ids; 0 = off
    cache: bool = True  # ar/block: reuse keys/values (False recomputes: benchmarks, tests)


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json``."""

    preset: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build and validate a config; unknown keys are an error, not silently dropped."""
        if not isinstance(d, dict):
            raise ConfigError("config must be a JSON/TOML object")
        _check_version(d.get("version", CONFIG_VERSION))
        cfg = cls()
        apply_overrides(cfg, d)
        cfg.validate()
        return cfg

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def copy(self) -> RunConfig:
        return RunConfig.from_dict(self.to_dict())

    def validate(self) -> RunConfig:
        validate(self)
        return self


_SECTIONS = {
    "model": ModelConfig,
    "process": ProcessConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
}


def apply_overrides(cfg: RunConfig, d: dict[str, Any]) -> RunConfig:
    """Merge a nested dict (from JSON, TOML or CLI flags) into ``cfg`` with type checks."""
    for key, value in d.items():
        if key == "version":  # a file for another ldlm: refused, never read as this one's
            _check_version(value)
            continue
        if key == "preset":
            cfg.preset = _coerce("preset", value, str)
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"unknown config section {key!r}")
        if not isinstance(value, dict):
            raise ConfigError(f"config section {key!r} must be a table/object")
        section = getattr(cfg, key)
        fields = {f.name: f for f in dataclasses.fields(section)}
        for name, v in value.items():
            if name not in fields:
                raise ConfigError(f"unknown setting {key}.{name}")
            setattr(section, name, _coerce(f"{key}.{name}", v, fields[name].type))
    return cfg


def _check_version(version: Any) -> None:
    if type(version) is not int or version != CONFIG_VERSION:  # True == 1, "1" is not 1
        raise ConfigError(
            f"config version {version!r} is not supported (this ldlm reads {CONFIG_VERSION})"
        )


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Check a value against a dataclass field's annotation (given as a string)."""
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    optional = "None" in t
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} must not be empty")
    base = t.replace("| None", "").strip()
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value


def check_range(name: str, value: int | None, lo: int, hi: int) -> None:
    """Refuse a count outside ``lo..hi`` in one line, before anything is allocated."""
    if value is not None and not lo <= value <= hi:
        raise ConfigError(f"{name} must be at least {lo} and at most {hi:,}; got {value}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{name} must be one of {', '.join(choices)}; got {value!r}")


def estimate_parameters(m: ModelConfig) -> int:
    """Approximate weight count of a model config (attention, MLP, embeddings), no allocation."""
    per_layer = 4 * m.d_model * m.d_model + 2 * m.d_model * m.d_ff
    embeddings = m.vocab_size * m.d_model * (1 if m.tie_weights else 2)
    return m.n_layers * per_layer + embeddings


def validate(cfg: RunConfig) -> None:
    """Reject impossible or absurd settings with a one-line :class:`ConfigError`."""
    m, p, d, t, s = cfg.model, cfg.process, cfg.data, cfg.train, cfg.sample
    _check(1 <= m.d_model <= MAX_D_MODEL, f"model.d_model must be in 1..{MAX_D_MODEL}")
    _check(1 <= m.n_heads <= m.d_model, "model.n_heads must be in 1..d_model")
    _check(m.d_model % m.n_heads == 0, "model.d_model must be divisible by model.n_heads")
    _check(
        m.positions != "rope" or (m.d_model // m.n_heads) % 2 == 0,
        "model.d_model / n_heads must be even for rotary positions",
    )
    _check(1 <= m.n_layers <= MAX_LAYERS, f"model.n_layers must be in 1..{MAX_LAYERS}")
    _check(1 <= m.d_ff <= 8 * MAX_D_MODEL, "model.d_ff is out of range")
    _check(2 <= m.seq_len <= MAX_SEQ_LEN, f"model.seq_len must be in 2..{MAX_SEQ_LEN}")
    _check(0.0 <= m.dropout < 1.0, "model.dropout must be in [0, 1)")
    _choice("model.positions", m.positions, POSITIONS)
    _choice("model.activation", m.activation, ACTIVATIONS)
    _check(0 <= m.vocab_size <= MAX_VOCAB, f"model.vocab_size must be in 0..{MAX_VOCAB}")
    n_params = estimate_parameters(m)
    _check(
        n_params <= MAX_PARAMETERS,
        f"model is too large: about {n_params:,} parameters (the limit is {MAX_PARAMETERS:,})",
    )
    _choice("process.kind", p.kind, PROCESSES)
    _choice("process.schedule", p.schedule, SCHEDULES)
    _check(2 <= p.timesteps <= 100_000, "process.timesteps must be in 2..100000")
    _check(0.0 < p.eps < 1.0, "process.eps must be in (0, 1)")
    _choice("data.tokenizer", d.tokenizer, TOKENIZERS)
    _check(64 <= d.bpe_vocab_size <= MAX_VOCAB, "data.bpe_vocab_size must be in 64..1000000")
    _check(1 <= d.word_min_count <= 10**9, "data.word_min_count must be in 1..10**9")
    _check(0.0 < d.val_fraction < 0.5, "data.val_fraction must be in (0, 0.5)")
    _check(1 <= d.max_corpus_mb <= 1_000_000, "data.max_corpus_mb must be in 1..1000000")
    _check(d.source != "", "data.source must not be empty")
    _check(1 <= t.batch_size <= 65_536, "train.batch_size must be in 1..65536")
    _check(0.0 < t.lr < 10.0, "train.lr must be in (0, 10)")
    _choice("train.optimizer", t.optimizer, OPTIMIZERS)
    _choice("train.lr_schedule", t.lr_schedule, LR_SCHEDULES)
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.device", t.device, DEVICES)
    _check(0 <= t.weight_decay <= 10, "train.weight_decay must be in [0, 10]")
    _check(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1/beta2 must be in [0, 1)")
    _check(0 <= t.warmup_steps <= MAX_STEPS, "train.warmup_steps must be in 0..10**12")
    _check(0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio must be in [0, 1]")
    _check(0 <= t.grad_clip <= 1e6, "train.grad_clip must be in [0, 1e6] (0 = off)")
    _check(0 <= t.ema < 1, f"train.ema must be in [0, 1) (0 = off); got {t.ema}")
    _check(t.epochs is None or t.epochs >= 1, "train.epochs must be at least 1")
    _check(t.epochs is None or t.epochs <= MAX_EPOCHS, f"train.epochs must be in 1..{MAX_EPOCHS}")
    _check(t.max_steps is None or t.max_steps >= 1, "train.max_steps must be at least 1")
    _check(t.max_steps is None or t.max_steps <= MAX_STEPS, "train.max_steps must be in 1..10**12")
    _check(
        t.epochs is not None or t.max_steps is not None,
        "set train.epochs or train.max_steps (or both)",
    )
    for name in (
        "log_every",
        "eval_every",
        "eval_every_epochs",
        "sample_every",
        "sample_every_epochs",
        "checkpoint_every",
    ):
        _check(0 <= getattr(t, name) <= MAX_STEPS, f"train.{name} must be in 0..10**12")
    _check(1 <= t.eval_tokens <= 10**9, "train.eval_tokens must be in 1..10**9")
    _check(1 <= t.eval_samples <= 1000, "train.eval_samples must be in 1..1000")
    _check(1 <= t.sample_length <= MAX_SEQ_LEN, "train.sample_length is out of range")
    _check(t.sample_temperature >= 0, "train.sample_temperature must be >= 0")
    _check(1 <= t.keep_checkpoints <= 10_000, "train.keep_checkpoints must be in 1..10000")
    _check(t.init_step >= 0, "train.init_step must be >= 0")
    _check(s.sampler == "auto" or s.sampler in SAMPLERS, f"unknown sampler {s.sampler!r}")
    _check(s.sampler != "speculative" or "speculative" in samplers_for(p), NEEDS_SHIFT)
    _check(1 <= s.length <= MAX_SEQ_LEN, f"sample.length must be in 1..{MAX_SEQ_LEN}")
    _check(
        0 <= s.steps <= MAX_SAMPLE_STEPS,
        f"sample.steps must be in 0..{MAX_SAMPLE_STEPS} (0 = auto)",
    )
    _check(s.temperature >= 0, "sample.temperature must be >= 0")
    _check(0 <= s.block_length <= MAX_SEQ_LEN, f"sample.block_length must be in 0..{MAX_SEQ_LEN}")
    _check(0 < s.threshold <= 1, "sample.threshold must be in (0, 1]")
    _check(0 < s.top_p <= 1, "sample.top_p must be in (0, 1]")
    _check(s.top_k >= 0, "sample.top_k must be >= 0 (0 = off)")
    _check(isinstance(s.cache, bool), "sample.cache must be true or false")
    if p.kind == "uniform":
        _check(m.time_embedding, "the uniform process needs model.time_embedding = true")
    elif p.kind in ("mask", "ar"):  # ar has no noise level; masks already say how much is hidden
        _check(
            not m.time_embedding,
            f"model.time_embedding is only for the uniform process (this is {p.kind})",
        )
    for seed_name, seed in (("train.seed", t.seed), ("sample.seed", s.seed)):
        _check(0 <= seed < 2**63, f"{seed_name} must be in 0..2**63-1; got {seed}")
    for temp_name, temp in (
        ("sample.temperature", s.temperature),
        ("train.sample_temperature", t.sample_temperature),
    ):
        _check(
            temp == 0 or 1e-6 <= temp <= 1e6,
            f"{temp_name} must be 0 (greedy) or between 1e-6 and 1e6; got {temp}",
        )
    # Every number, whatever its field: finite, and an int that fits in 64 bits (JSON, torch).
    for section_name, section in _SECTIONS.items():
        for f in dataclasses.fields(section):
            v = getattr(getattr(cfg, section_name), f.name)
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, float):
                _check(math.isfinite(v), f"{section_name}.{f.name} must be finite; got {v}")
            elif isinstance(v, int):
                _check(abs(v) < 2**63, f"{section_name}.{f.name} is out of range; got {v}")
    _check(1 <= p.block_size <= MAX_SEQ_LEN, f"process.block_size must be in 1..{MAX_SEQ_LEN}")
    _choice("process.block_masking", p.block_masking, BLOCK_MASKINGS)
    _check(0.0 <= p.block_warmup <= 1.0, "process.block_warmup must be in [0, 1]")
    _check(0.0 <= p.ar_loss <= 10.0, "process.ar_loss must be in [0, 10]")
    _check(0.0 <= p.ar_phase < 1.0, "process.ar_phase must be in [0, 1)")
    _check(0.0 <= p.full_blocks <= 1.0, "process.full_blocks must be in [0, 1]")
    if p.kind == "block" and not p.block_shift:
        _check(
            p.ar_loss == 0 and p.ar_phase == 0,
            "process.ar_loss and process.ar_phase need process.block_shift = true",
        )
    _check(
        not (p.kind == "block" and p.block_wrap and not p.block_shift),
        "process.block_wrap needs process.block_shift = true",
    )
    if p.kind == "block":
        _check(  # a block longer than the sequence does not divide it either
            p.block_size <= m.seq_len and m.seq_len % p.block_size == 0,
            f"process.block_size ({p.block_size}) must divide model.seq_len ({m.seq_len})",
        )
        _check(
            not m.time_embedding,
            "the block process has a noise level per block: set model.time_embedding = false",
        )


def exact_bound(kind: str, block_size: int = 0) -> bool:
    """Whether a process's held-out figure is the exact NLL ("=") rather than a bound ("≤"):
    ar, and block diffusion with blocks of one token (left to right, nothing to integrate)."""
    return kind == "ar" or (kind == "block" and block_size == 1)


def adapt_process(cfg: RunConfig, kind: str) -> RunConfig:
    """Switch a config to another process, fixing the settings that process requires.

    It never changes a value the user may have chosen to another one: a ``block_size`` that
    does not divide ``seq_len`` stays as it is, for validation to refuse with one line
    (every preset's own block size divides its own ``seq_len``).
    """
    _choice("process", kind, PROCESSES)
    cfg.process.kind = kind
    # Only the uniform process needs t: a replaced token looks like any other. ar has no t,
    # and a masked model reads its noise level off the masks (MDLM, LLaDA: no t), so its
    # samplers pass none. A preset's time embedding (the seed's) is for the uniform process.
    cfg.model.time_embedding = kind == "uniform"
    if kind == "block":
        cfg.model.time_embedding = False  # one noise level per block, none per sequence
    return fit_sampler(cfg)


def fit_sampler(cfg: RunConfig) -> RunConfig:
    """Replace a sampler the process cannot use: ``speculative`` (the small presets') becomes
    ``random``, the faithful ancestral order, where that fits (a small model decoded
    most-confident-first falls into repeating one token); any other becomes auto."""
    fits = samplers_for(cfg.process)
    if cfg.sample.sampler not in ("auto", *fits):
        speculative = cfg.sample.sampler == "speculative"
        cfg.sample.sampler = "random" if speculative and "random" in fits else "auto"
    return cfg


def training_phase(cfg: RunConfig, step: int, total_steps: int) -> str:
    """What a run is learning at ``step``: "ar" while a shifted block run trains blocks of 1,
    else its process ("block 8", "mask", ...). Both front ends show this one answer."""
    p = cfg.process
    if p.kind != "block":
        return p.kind
    progress = step / max(1, total_steps)
    if p.block_shift and progress < p.ar_phase:
        return "ar"
    if progress < p.block_warmup:
        return "one block"
    return f"block {p.block_size}"


def training_phases(cfg: RunConfig, total_steps: int) -> str:
    """The whole plan in words, e.g. "ar to step 420, then block 8" (one phase: its name)."""
    p = cfg.process
    if p.kind == "block" and p.block_shift and p.ar_phase > 0:
        end = math.ceil(p.ar_phase * total_steps)
        return f"ar to step {end}, then block {p.block_size}"
    return training_phase(cfg, total_steps, total_steps)


def describe_phase(config: dict[str, Any], step: int, total_steps: int) -> str:
    """One line for ``runs show`` and the app: the phase now, the plan when it has several,
    and the run it started from ("" for a config that does not load)."""
    try:
        cfg = RunConfig.from_dict(config)
    except ConfigError:
        return ""
    total = max(1, int(total_steps or cfg.train.max_steps or 1))
    line = training_phase(cfg, max(step - 1, 0), total)  # as the trainer names a logged step
    plan = training_phases(cfg, total)
    if plan != line:
        line += f" (plan: {plan})"
    if cfg.train.init_from:
        line += f" · started from {Path(cfg.train.init_from).name} at step {cfg.train.init_step}"
    return line


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON settings file into a nested dict."""
    p = Path(path)
    try:  # bounded, never a FIFO or device (a link to a regular file is fine: it is the user's)
        raw = read_bounded(p.resolve(), CONFIG_FILE_LIMIT)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, RuntimeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"cannot read config file {p}: {reason}") from None
    try:
        text = raw.decode("utf-8")
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"cannot parse config file {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must contain a table/object")
    return data
