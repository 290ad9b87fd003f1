"""What training and inference both need: device, precision, tokenizer + data, model + process.

One module so that ``training`` (the loop) and ``inference`` (loading a finished run) build a
model the same way and neither imports the other.
"""

from __future__ import annotations

import functools
import os
import statistics
import time

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


@functools.lru_cache(maxsize=1)
def cpu_bf16_is_faster() -> bool:
    """Whether bf16 matmuls run measurably faster than fp32 ones on this CPU, now.

    Measured once per process (0.1-0.3 s), on a matmul the size of a small model's MLP, so
    that "auto" follows the CPU at hand rather than a table of CPU names: with AMX or
    AVX-512 BF16 a bf16 matmul ran 2.2x fp32 and the whole bf16 step 1.8-1.9x
    (benchmarks/train_throughput.py). CPUs without those instructions emulate bf16 (4-200x
    slower) and are not even measured.
    """
    if not cpu_has_fast_bf16():
        return False
    a, b = torch.randn(2048, 256), torch.randn(256, 512)
    pairs = [(a.to(dtype), b.to(dtype)) for dtype in (torch.float32, torch.bfloat16)]
    ratios = []
    for rep in range(9):  # each round times both back to back: load hits both alike
        took = []
        for x, y in pairs:
            t0 = time.perf_counter()
            x @ y
            took.append(time.perf_counter() - t0)
        if rep:  # the first round warms oneDNN's kernels up
            ratios.append(took[0] / max(took[1], 1e-9))
    return statistics.median(ratios) > 1.25


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device; None means plain fp32.

    "bf16" is honoured wherever torch can run it; "auto" picks bf16 only where it is fast:
    CUDA GPUs with bf16 support, and CPUs on which it measures faster than fp32.
    """
    if precision == "fp32" or device.type == "mps":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "bf16" or cpu_bf16_is_faster():
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
