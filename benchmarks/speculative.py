"""Speed of the speculative sampler on a trained shifted block run, beside the same network
decoded as ar (one token per call) and by its diffusion head alone.

    python benchmarks/speculative.py --run RUN [--length 512] [--reps 3] [--threads 1]

Each setting writes ``--length`` tokens from BOS at temperature 1 with the run's other sample
settings, in interleaved repetitions (seeds 0..reps-1, the same for every setting); prints the
best and median tokens/s and the mean tokens per model call. ``speculative, k outcomes``
drafts for the first k outcomes of each verification (the engine uses
``speculative.OUTCOMES``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from common import machine

from ldlm_engine import load_run
from ldlm_engine import speculative as spec
from ldlm_engine.sampling import final_frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a block run trained with the token shift")
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run, device="cpu")
    head = run.process.ar_head()
    if head is None:
        raise SystemExit("speculative.py: the run is not a shifted block model")
    default_outcomes = spec.OUTCOMES
    settings = {  # name: (process, sampler, outcomes)
        "ar head, one token a call": (head, "auto", default_outcomes),
        "diffusion head (low_confidence)": (run.process, "low_confidence", default_outcomes),
        "speculative, 1 outcome": (run.process, "speculative", 1),
        f"speculative, {default_outcomes} outcomes": (run.process, "speculative", default_outcomes),
        "speculative, every outcome": (run.process, "speculative", 10**6),
    }
    rates: dict[str, list[float]] = {k: [] for k in settings}
    per_call: dict[str, list[float]] = {k: [] for k in settings}
    for rep in range(args.reps):
        for name, (process, sampler, outcomes) in settings.items():
            spec.OUTCOMES = outcomes
            cfg = dataclasses.replace(
                run.config.sample, sampler=sampler, temperature=1.0, length=args.length, seed=rep
            )
            t0 = time.perf_counter()
            frame = final_frame(run.model, process, run.tokenizer, cfg, "")
            rates[name].append(args.length / (time.perf_counter() - t0))
            per_call[name].append(args.length / frame.nfe)
    spec.OUTCOMES = default_outcomes
    rows = [
        {
            "setting": name,
            "best_tokens_per_s": round(max(rates[name]), 1),
            "median_tokens_per_s": round(statistics.median(rates[name]), 1),
            "tokens_per_call": round(statistics.fmean(per_call[name]), 3),
        }
        for name in settings
    ]
    if args.json:
        print(json.dumps({"machine": machine(), "run": run.run.name, "rows": rows}, indent=2))
        return
    print(f"machine: {machine()}\nrun: {run.run.name} (step {run.step}); {args.length} tokens")
    for r in rows:
        print(
            f"{r['setting']:34} best {r['best_tokens_per_s']:7.0f} tok/s  median "
            f"{r['median_tokens_per_s']:7.0f}  {r['tokens_per_call']:.2f} tokens/call"
        )


if __name__ == "__main__":
    main()
