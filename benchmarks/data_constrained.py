"""When data, not compute, is the limit: many epochs over a small corpus, per process.

    python benchmarks/data_constrained.py [--kb 150] [--minutes 6] [--processes ar,mask,block:8]
                                          [--threads 1] [--evals 16] [--json]

A user's own corpus is often small, and trained for many epochs an ``ar`` model starts to
overfit while masked diffusion, which sees every text under many masks, keeps improving
(Prabhudesai et al., arXiv 2507.15857; Ni et al., arXiv 2511.03276). This trains each process
with the ``default`` recipe on the first ``--kb`` kilobytes of tiny Shakespeare (90/10 split)
for the same CPU-time budget (``quality.py``'s budget trainer: process CPU time, evaluations
not charged), evaluates held-out bits/char ``--evals`` times along the way, and prints each
curve (epoch, CPU minutes, bits/char), the best held-out figure per process, and whether
and at which epoch of the ar run a diffusion process's best-so-far figure drops below ar's
best-so-far at the same CPU time (the crossover), or that there is none within the run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from common import default_corpus, machine
from quality import train_one


def best_so_far(curve: list[tuple]) -> list[tuple[float, float]]:
    """(cpu s, lowest bits/char up to then) along one curve."""
    out, best = [], float("inf")
    for _step, cpu, _wall, bits, _head in curve:
        best = min(best, bits)
        out.append((cpu, best))
    return out


def at(curve: list[tuple[float, float]], cpu: float) -> float:
    """The best-so-far figure of ``curve`` at CPU time ``cpu`` (inf before its first eval)."""
    value = float("inf")
    for c, b in curve:
        if c <= cpu:
            value = b
    return value


def crossover(ar: dict, other: dict) -> dict | None:
    """The first evaluation of ``other`` whose best-so-far is below ar's at that CPU time."""
    ar_best = best_so_far(ar["curve"])
    for (step, cpu, _w, _b, _h), (_c, best) in zip(
        other["curve"], best_so_far(other["curve"]), strict=True
    ):
        if best < at(ar_best, cpu):
            return {"step": step, "cpu_minutes": round(cpu / 60, 2), "bits": round(best, 4)}
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=int, default=150, help="corpus size in kilobytes")
    ap.add_argument("--minutes", type=float, default=6.0, help="CPU minutes per process")
    ap.add_argument("--processes", default="ar,mask,block:8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--evals", type=int, default=16)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--data", default=default_corpus())
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ldlm_engine import load_corpus

    text = load_corpus(args.data).text[: args.kb * 1000]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / f"first-{args.kb}kB.txt"
        corpus.write_text(text, encoding="utf-8")
        results = [train_one(p, args.minutes, str(corpus), args) for p in args.processes.split(",")]
    ar = next((r for r in results if r["process"] == "ar"), None)
    for r in results:
        r["best_bits_per_char"] = min(c[3] for c in r["curve"]) if r["curve"] else None
        r["crossover"] = crossover(ar, r) if ar and r is not ar else None
    if args.json:
        print(json.dumps({"machine": machine(), "kb": args.kb, "results": results}, indent=2))
        return
    print(f"machine: {machine()}")
    print(f"data: first {args.kb} kB of {args.data}; {args.minutes:g} CPU minutes per process")
    for r in results:
        epochs_per_step = r["epochs"] / max(1, r["steps"])
        print(f"\n{r['process']}: {r['steps']} steps, {r['epochs']:.1f} epochs")
        for step, cpu, _w, bits, _head in r["curve"]:
            print(f"  epoch {step * epochs_per_step:6.1f}  cpu {cpu / 60:5.2f} min  {bits:.3f}")
        print(f"  best {r['best_bits_per_char']:.3f}  final {r['val_bits_per_char']:.3f}")
    for r in results:
        if r is ar or ar is None:
            continue
        c = r["crossover"]
        if c is None:
            print(f"{r['process']} never goes below ar's best-so-far within the run")
        else:
            e = c["step"] * r["epochs"] / max(1, r["steps"])
            print(
                f"{r['process']} goes below ar's best-so-far at its epoch {e:.1f} "
                f"({c['cpu_minutes']} CPU min, {c['bits']:.3f} bits/char)"
            )


if __name__ == "__main__":
    main()
