"""Generation speed against length: ar and block, with the KV cache and recomputing.

    python benchmarks/generation_speed.py [--lengths 256,512,1024,2048,4096] [--reps 2]
        [--uncached-max 1024] [--block-size 8] [--threads 1] [--json]

A randomly initialised model of the default shape (d_model 128, 4 layers, 4 heads, seq_len
128, char vocabulary of the corpus: 65 characters for tiny Shakespeare) generates each length
from an empty prompt, at temperature 1, with:

* ``ar``: one model call per token; cached (one new key per call) or recomputing the whole
  window (up to seq_len tokens) every call;
* ``block`` (block size 8): ``low_confidence`` at one and at four tokens per call, cached
  (each call runs on the current block against the cache) or recomputing the window.

Past seq_len both slide their context (re-anchoring every half window, see
``ldlm_engine/decoding.py``), so the cached cost per token is flat. Weights do not change the
cost, so random ones are enough. Every generation consumes its frames through a
``Transcript``, as a front end would. Repetitions are interleaved (rep 1 of every setting, then
rep 2, ...) so a load change on a shared machine hits all settings alike, and each setting's
fastest repetition is reported (the one least slowed by other processes; the JSON also has the
medians). Targets: cached time grows linearly (time(4096) <= 1.2 x 16 x time(256), for ar and
block) and cached ``ar`` at 1024 tokens is >= 3x faster than recomputing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from common import default_corpus, machine, median

from ldlm_engine import SampleConfig, adapt_process, build_tokenizer, get_preset, load_corpus
from ldlm_engine.model import DiffusionTransformer
from ldlm_engine.processes import make_process
from ldlm_engine.sampling import Transcript, generate


def build(kind: str, args, tokenizer):
    cfg = adapt_process(get_preset("default"), kind)
    cfg.process.block_size = args.block_size
    m = cfg.model
    m.d_model, m.n_heads, m.n_layers, m.d_ff = (
        args.d_model,
        args.heads,
        args.layers,
        4 * args.d_model,
    )
    m.seq_len, m.time_embedding, m.vocab_size = args.seq_len, False, tokenizer.vocab_size
    cfg.validate()
    torch.manual_seed(args.seed)
    model = DiffusionTransformer(m, causal=kind == "ar").eval()
    return model, make_process(cfg.process, tokenizer)


def settings(args) -> list[dict]:
    out = [{"name": "ar", "kind": "ar", "sampler": "ar", "per_call": 1}]
    for k in (1, 4):
        out.append(
            {"name": f"block k={k}", "kind": "block", "sampler": "low_confidence", "per_call": k}
        )
    return out


def time_one(model, process, tokenizer, s: dict, length: int, cache: bool, seed: int) -> dict:
    cfg = SampleConfig(
        sampler=s["sampler"],
        length=length,
        steps=length // s["per_call"] if s["per_call"] > 1 else 0,
        temperature=1.0,
        seed=seed,
        cache=cache,
    )
    transcript = Transcript()
    t0 = time.perf_counter()
    for frame in generate(model, process, tokenizer, cfg, ""):
        transcript.apply(frame)
    dt = time.perf_counter() - t0
    assert len(transcript.tokens) == length and not any(transcript.masked)
    return {"seconds": dt, "nfe": transcript.last.nfe}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_corpus(), help="corpus for the char vocabulary")
    ap.add_argument("--lengths", default="256,512,1024,2048,4096")
    ap.add_argument("--uncached-max", type=int, default=1024, help="longest recomputing run")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = sorted(int(x) for x in args.lengths.split(",") if x.strip())
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    tokenizer = build_tokenizer("char", load_corpus(args.data).text[:1_000_000])
    models = {kind: build(kind, args, tokenizer) for kind in ("ar", "block")}
    plan = [
        (s, n, cache)
        for s in settings(args)
        for n in lengths
        for cache in (True, False)
        if cache or n <= args.uncached_max
    ]
    times: dict[tuple[str, int, bool], list[float]] = {}
    nfe: dict[tuple[str, int, bool], int] = {}
    for s in settings(args):  # warm-up: lazy initialisation, first-call allocations
        time_one(*models[s["kind"]], tokenizer, s, min(lengths), True, args.seed)
    t_start = time.perf_counter()
    for rep in range(args.reps):
        log(f"repetition {rep + 1}/{args.reps} ...")
        for s, n, cache in plan:
            r = time_one(*models[s["kind"]], tokenizer, s, n, cache, args.seed + rep)
            key = (s["name"], n, cache)
            times.setdefault(key, []).append(r["seconds"])
            nfe[key] = r["nfe"]
    rows = []
    for s in settings(args):
        for n in lengths:
            row = {"setting": s["name"], "length": n}
            for cache in (True, False):
                key = (s["name"], n, cache)
                if key in times:
                    sec = min(times[key])
                    tag = "cached" if cache else "recompute"
                    row[f"{tag}_s"] = sec
                    row[f"{tag}_median_s"] = median(times[key])
                    row[f"{tag}_tokens_per_s"] = n / sec
                    row[f"{tag}_nfe"] = nfe[key]
            if "recompute_s" in row:
                row["speedup"] = row["recompute_s"] / row["cached_s"]
            rows.append(row)

    def row_of(name: str, n: int) -> dict | None:
        return next((r for r in rows if r["setting"] == name and r["length"] == n), None)

    targets = []
    lo, hi = lengths[0], lengths[-1]
    for name in ("ar", "block k=1"):
        a, b = row_of(name, lo), row_of(name, hi)
        if a and b and hi > lo:
            limit = 1.2 * (hi / lo) * a["cached_s"]
            targets.append(
                {
                    "target": f"{name} cached: time({hi}) <= 1.2 x {hi // lo} x time({lo})",
                    "value": b["cached_s"] / a["cached_s"],
                    "limit": 1.2 * hi / lo,
                    "met": b["cached_s"] <= limit,
                }
            )
    r = row_of("ar", 1024)
    if r and "speedup" in r:
        targets.append(
            {
                "target": "ar at 1024 tokens: cached >= 3x faster than recomputing",
                "value": r["speedup"],
                "limit": 3.0,
                "met": r["speedup"] >= 3.0,
            }
        )
    ar_model = models["ar"][0]
    info = {
        "machine": machine(),
        "load_avg": os.getloadavg(),
        "model": (
            f"random init, d_model {args.d_model}, {args.layers} layers, {args.heads} heads, "
            f"seq_len {args.seq_len}, vocab {tokenizer.vocab_size}, "
            f"{ar_model.num_parameters():,} params; block size {args.block_size}"
        ),
        "reps": args.reps,
        "wall_s": time.perf_counter() - t_start,
    }
    if args.json:
        print(json.dumps({**info, "rows": rows, "targets": targets}, indent=2))
        return
    print(f"machine: {info['machine']}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in info['load_avg'])}")
    print(f"model: {info['model']}")
    print(f"best of {args.reps} interleaved repetitions, temperature 1, empty prompt")
    print()
    hdr = (
        f"{'setting':11} {'length':>6}  {'cached tok/s':>12} {'NFE':>5}  "
        f"{'recompute tok/s':>15} {'NFE':>5}  {'speedup':>7}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        rec = (
            f"{r['recompute_tokens_per_s']:>15,.0f} {r['recompute_nfe']:>5}  {r['speedup']:>6.1f}x"
            if "recompute_s" in r
            else f"{'-':>15} {'':>5}  {'':>7}"
        )
        print(
            f"{r['setting']:11} {r['length']:>6}  {r['cached_tokens_per_s']:>12,.0f} "
            f"{r['cached_nfe']:>5}  {rec}"
        )
    print()
    for t in targets:
        verdict = "met" if t["met"] else "MISSED"
        print(f"{t['target']}: {t['value']:.2f} (limit {t['limit']:g}) → {verdict}")
    print(f"total {info['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
