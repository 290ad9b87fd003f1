"""Shared helpers for the benchmark scripts: the corpus, the machine, medians and peaks."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def default_corpus() -> str:
    """tiny Shakespeare where the checkout has it beside it, else the built-in corpus."""
    return str(SHAKESPEARE) if SHAKESPEARE.exists() else "builtin"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {dev}"
    )


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, reps: int = 5) -> float:
    """Best achieved FLOP/s of an n×n matmul in ``dtype``: the yardstick for MFU."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = 0.0
    for _ in range(reps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def model_flops_per_token(n_params_no_emb: int, n_layers: int, d_model: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 per weight, plus attention scores (PaLM's estimate)."""
    return 6 * n_params_no_emb + 12 * n_layers * d_model * seq_len
