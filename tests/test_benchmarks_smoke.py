"""The benchmark scripts still run: each once, at its smallest settings, with ``--json``.

They start together (most of each one's time is importing torch) and share the 40 KB test
corpus; the figures are not checked, only that every script finishes and reports its fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, ldlm_env

BENCH = REPO / "benchmarks"


def commands(corpus: Path) -> dict[str, list[str]]:
    c = str(corpus)
    return {
        "sampling": [
            "sampling.py", "--data", c, "--train-steps", "3", "--batch", "4", "--d-model", "32",
            "--layers", "1", "--length", "16",
            "--num", "1", "--thresholds", "0.5", "--top-p", "1,0.9", "--top-k", "0,1",
            "--threads", "1", "--json",
        ],
        "generation_speed": [
            "generation_speed.py", "--data", c, "--lengths", "32,64", "--uncached-max", "32",
            "--d-model", "32", "--heads", "2", "--layers", "1", "--seq-len", "16",
            "--block-size", "4", "--reps", "1", "--threads", "1", "--json",
        ],
        "memory": [
            "memory.py", "--data", c, "--mb", "0.3", "--steps", "1", "--no-baseline", "--json",
        ],
        "tui_overhead": [
            "tui_overhead.py", "--data", c, "--preset", "tiny", "--batch", "2", "--seq-len",
            "16", "--max-steps", "60", "--seconds", "0.5", "--warmup", "0", "--presses", "2",
            "--gap", "0", "--threads", "1", "--json",
        ],
        "quality": [
            "quality.py", "--data", c, "--preset", "tiny", "--processes", "ar,block:4,preset",
            "--minutes", "0.01", "--batch", "4", "--set", "model.seq_len=16", "--evals", "2",
            "--eval-tokens", "256", "--eval-samples", "2", "--threads", "1", "--json",
        ],
        "train_throughput": [
            "train_throughput.py", "--data", c, "--shapes", "default", "--steps", "1",
            "--reps", "1", "--profile-steps", "1", "--bf16", "auto", "--threads", "1", "--json",
        ],
        "train_throughput_avx2": [
            "train_throughput.py", "--data", c, "--shapes", "default", "--steps", "1",
            "--reps", "1", "--profile-steps", "0", "--cpu-isa", "avx2", "--threads", "1",
            "--json",
        ],
    }  # fmt: skip


@pytest.fixture(scope="module")
def results(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("bench-home")
    env = ldlm_env(home)
    procs = {
        name: subprocess.Popen(
            [sys.executable, *args],
            cwd=BENCH,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands(corpus_file).items()
    }
    out = {}
    deadline = time.monotonic() + 150
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        out[name] = (proc.returncode, stdout, stderr)
    return out


def _json(results: dict, name: str) -> dict:
    rc, stdout, stderr = results[name]
    assert rc == 0, f"{name} exited {rc}:\n{stderr[-3000:]}"
    return json.loads(stdout)


def test_sampling_benchmark_runs(results):
    d = _json(results, "sampling")
    samplers = {r["sampler"] for r in d["rows"]}
    assert samplers == {"low_confidence", "threshold", "random"}
    assert {r["process"] for r in d["rows"]} == {"mask", "block"}
    for r in d["rows"]:
        assert r["nfe"] >= 1 and r["tokens_per_s"] > 0 and r["gen_nll"] > 0
    assert d["rows"][0]["nfe"] == 16  # one token per model call
    swept = {(r["process"], r["top_p"], r["top_k"]) for r in d["rows"] if r["setting"][0] == "p"}
    assert swept == {(m, p, k) for m in ("mask", "block") for p, k in ((1, 1), (0.9, 0), (0.9, 1))}
    for r in d["rows"]:
        assert r["unigram_entropy_bits"] >= 0
    assert {r["temperature"] for r in d["rows"]} == {0.8}  # the engine's default
    verdicts = d["parallel_targets"]
    assert set(verdicts) == {"mask T=0.8", "block T=0.8"}
    assert all(isinstance(v["pass"], bool) for v in verdicts.values())
    assert isinstance(d["entropy_matched"]["pass"], bool)


def test_generation_speed_benchmark_runs(results):
    d = _json(results, "generation_speed")
    rows = {(r["setting"], r["length"]): r for r in d["rows"]}
    assert set(rows) == {(s, n) for s in ("ar", "block k=1", "block k=4") for n in (32, 64)}
    for (_setting, n), r in rows.items():
        assert r["cached_tokens_per_s"] > 0
        assert ("speedup" in r) == (n == 32)  # recomputing only up to --uncached-max
    assert rows[("ar", 64)]["cached_nfe"] == 64 and rows[("block k=4", 64)]["cached_nfe"] == 16
    assert [isinstance(t["met"], bool) for t in d["targets"]] == [True, True]


def test_memory_benchmark_runs(results):
    d = _json(results, "memory")
    assert 0.29 < d["corpus_mb"] <= 0.3
    assert d["peak_rss_mb"] > 10 and isinstance(d["pass"], bool)
    assert [p["phase"] for p in d["phases"]["phases"]][-1] == "drop the text"


def test_tui_overhead_benchmark_runs(results):
    d = _json(results, "tui_overhead")
    assert d["headless_tokens_per_s"] > 0 and d["app_tokens_per_s"] > 0
    assert d["latency"]["presses"] == 2


def test_quality_benchmark_runs(results):
    d = _json(results, "quality")
    ar, blk, shifted = d["results"]
    assert (ar["process"], blk["process"], shifted["process"]) == ("ar", "block:4", "preset")
    assert ar["exact"] and not blk["exact"] and blk["stderr"] > 0
    # Only the shifted block model (the tiny preset) has an ar head to report, exact.
    assert ar["ar_head_bits_per_char"] is None and blk["ar_head_bits_per_char"] is None
    assert 0 < shifted["ar_head_bits_per_char"] < 20
    assert all(c[4] is not None for c in shifted["curve"])
    for r in (ar, blk, shifted):
        # Training stops once its CPU budget (0.6 s) is spent, evaluations not counted.
        assert r["steps"] >= 1 and 0.01 <= r["cpu_minutes"] < 0.5
        assert 0 < r["val_bits_per_char"] < 20 and r["curve"]


def test_train_throughput_benchmark_runs(results):
    d = _json(results, "train_throughput")
    (shape,) = d["shapes"]
    rows = {r["variant"]: r for r in shape["rows"]}
    bf16 = {"engine bf16", "engine bf16 (SDPA attention)"} if d["bf16_units"] else set()
    assert set(rows) == {"engine fp32"} | bf16  # emulated bf16 is not measured (too slow)
    assert rows["engine fp32"]["vs_engine_fp32"] == 1.0
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and r["mfu"] > 0
        assert abs(sum(r["breakdown"].values()) - 1) < 0.01 and "matmuls" in r["breakdown"]
    assert d["auto_picks"] in ("fp32", "bf16")


def test_train_throughput_measures_as_a_cpu_without_bf16_units(results):
    """--cpu-isa avx2 reruns the script on PyTorch's AVX2 kernels (bf16 emulated there): it
    says so, measures fp32 only, and finds that --precision auto would train in fp32."""
    d = _json(results, "train_throughput_avx2")
    assert d["machine"].endswith("AVX2 kernels")
    assert d["bf16_units"] is False and d["auto_picks"] == "fp32"
    (shape,) = d["shapes"]
    assert [r["variant"] for r in shape["rows"]] == ["engine fp32"]
    assert d["peaks_gflops"]["bf16"] is None


def test_auto_precision_is_fp32_where_bf16_is_emulated(monkeypatch):
    """A CPU held to AVX2 (the switches --cpu-isa avx2 sets) runs as one without bf16 units,
    which emulates bf16 matmuls: there "auto" measures and trains in fp32, whatever the
    machine's flags say."""
    monkeypatch.syspath_prepend(str(BENCH))
    import train_throughput

    env = {**train_throughput.AVX2_ENV, "OMP_NUM_THREADS": "1"}
    code = (
        "import torch; from ldlm_engine.runtime import autocast_dtype as a; "
        "print(torch.backends.cpu.get_cpu_capability(), a('auto', torch.device('cpu')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.stdout.split() == ["AVX2", "None"], out.stderr


def test_train_throughput_builds_the_seed_shape(corpus_file, monkeypatch):
    """The seed shape swaps the preset's process for the masked one: its config must still
    be valid (the preset's speculative sampler does not fit a masked model)."""
    monkeypatch.syspath_prepend(str(BENCH))
    import train_throughput

    engine = train_throughput.Engine("seed", "fp32", str(corpus_file), "cpu")
    assert engine.trainer.cfg.process.kind == "mask"
    assert engine.trainer.cfg.sample.sampler != "speculative"
