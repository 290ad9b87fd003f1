"""What training and inference both need: device, precision, tokenizer + data, model + process.

One module so that ``training`` (the loop) and ``inference`` (loading a finished run) build a
model the same way and neither imports the other.
"""

from __future__ import annotations

import os

import torch

from .config import RunConfig
from .corpora import load_corpus
from .data import TokenSplits, encode_corpus, split_train_val
from .errors import ConfigError
from .model import DiffusionTransformer
from .processes import NoiseProcess, make_process
from .tokenizers import Tokenizer, build_tokenizer

TOKENIZER_FILE = "tokenizer.json"


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an unavailable explicit choice is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but no CUDA GPU is available here")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps was asked for, but MPS is not available here")
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX-512 BF16).

    Elsewhere (AVX2-only CPUs, e.g. many AMD EPYC and laptop chips) oneDNN emulates bf16 and a
    bf16 matmul runs 4-200x *slower* than fp32, so "auto" must not pick it there.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device; None means plain fp32.

    "bf16" is honoured wherever torch can run it; "auto" picks bf16 only where it is fast:
    CUDA GPUs with bf16 support and CPUs with bf16 instructions.
    """
    if precision == "fp32" or device.type == "mps":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "bf16" or cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def prepare_data(
    cfg: RunConfig, tokenizer: Tokenizer | None = None, text: str | None = None
) -> tuple[Tokenizer, TokenSplits]:
    """Load the corpus, build (or reuse) the tokenizer, encode and split."""
    if text is None:
        text = load_corpus(cfg.data.source, max_mb=cfg.data.max_corpus_mb).text
    if tokenizer is None:
        tokenizer = build_tokenizer(
            cfg.data.tokenizer,
            text,
            vocab_size=cfg.data.bpe_vocab_size,
            min_count=cfg.data.word_min_count,
        )
    ids = encode_corpus(tokenizer, text)
    return tokenizer, split_train_val(ids, len(text), cfg.data.val_fraction, cfg.model.seq_len)


def build_model(cfg: RunConfig, tokenizer: Tokenizer) -> tuple[DiffusionTransformer, NoiseProcess]:
    """The network and its noise process; the vocabulary size comes from the tokenizer."""
    cfg.model.vocab_size = tokenizer.vocab_size
    model = DiffusionTransformer(cfg.model, causal=cfg.process.kind == "ar")
    return model, make_process(cfg.process, tokenizer)
