"""Infilling: a block model's whole-window infill against a masked model's, judged by ar.

    python benchmarks/infill.py --block-run NAME --mask-run NAME --judge-run NAME
                                [--num 24] [--window 96] [--gap 24] [--threads 1] [--json]

Takes ``--num`` held-out windows of ``--window`` characters from the corpus the block run
trained on (its last 10%, never trained on), hides a span of ``--gap`` characters in the
middle of each (a ``[MASK*gap]`` template), and lets each model fill it with its own sampler
defaults and the same seeds. The judge, an ``ar`` run that is neither contestant, scores the
whole infilled window (context and fill) in nats per character; the real windows are scored
as the reference row. Prints mean ± standard error per model, the ratio of the block model's
figure to the masked model's, and one example per model; each model also fills the windows
in the other's order (``low_confidence`` for the block model, ``left_to_right`` for the
masked one), so a reader sees that the ratio is not one fill order's artefact.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics

import torch
import torch.nn.functional as F
from common import machine

from ldlm_engine import generate, load_corpus, load_run
from ldlm_engine.sampling import Transcript


def judge_nll(judge, text: str) -> float:
    """Mean nats per character of ``text`` under the ar judge, given BOS."""
    ids = judge.tokenizer.encode(text)
    x = torch.tensor([ids])
    inp = torch.cat([torch.full((1, 1), judge.process.bos_id), x[:, :-1]], dim=1)
    with torch.no_grad():
        logits = judge.model(inp, None).float()
    nll = F.cross_entropy(logits[0], x[0], reduction="sum")
    return float(nll) / max(1, len(text))


def infill(run, template: str, seed: int, sampler: str | None = None) -> str:
    cfg = dataclasses.replace(run.config.sample, seed=seed)
    if sampler:
        cfg.sampler = sampler
    t = Transcript()
    for frame in generate(run.model, run.process, run.tokenizer, cfg, template):
        t.apply(frame)
    return run.tokenizer.decode(t.tokens)


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = statistics.fmean(xs)
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0
    return m, se


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block-run", required=True)
    ap.add_argument("--mask-run", required=True)
    ap.add_argument("--judge-run", required=True)
    ap.add_argument("--num", type=int, default=24)
    ap.add_argument("--window", type=int, default=96)
    ap.add_argument("--gap", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = {
        "block": load_run(args.block_run, device="cpu"),
        "mask": load_run(args.mask_run, device="cpu"),
    }
    judge = load_run(args.judge_run, device="cpu")
    text = load_corpus(runs["block"].config.data.source).text
    held_out = text[int(len(text) * 0.9) :]
    step = max(args.window, (len(held_out) - args.window) // args.num)
    windows = []
    for start in range(0, len(held_out) - args.window, step):
        w = held_out[start : start + args.window]
        if "[" not in w and "]" not in w:
            windows.append(w)
        if len(windows) == args.num:
            break
    a = (args.window - args.gap) // 2
    # Each model with its own defaults, then with the other fill order (most-confident-first,
    # or left to right), so the ratio is not one order's artefact.
    contestants = [
        ("block", "block", None),
        ("mask", "mask", None),
        ("block, low_confidence", "block", "low_confidence"),
        ("mask, left_to_right", "mask", "left_to_right"),
    ]
    owner = {name: who for name, who, _ in contestants}
    scores: dict[str, list[float]] = {"real text": []} | {name: [] for name in owner}
    examples: dict[str, str] = {}
    for i, w in enumerate(windows):
        template = f"{w[:a]}[MASK*{args.gap}]{w[a + args.gap :]}"
        scores["real text"].append(judge_nll(judge, w))
        for name, who, sampler in contestants:
            filled = infill(runs[who], template, seed=i, sampler=sampler)
            scores[name].append(judge_nll(judge, filled))
            examples.setdefault(name, filled)
    rows = {k: mean_se(v) for k, v in scores.items()}
    ratio = rows["block"][0] / rows["mask"][0]
    # Both fill the same windows: the ratio's standard error from the paired residuals
    # b_i - ratio * m_i (the delta method), much smaller than the two spreads suggest.
    resid = [b - ratio * m for b, m in zip(scores["block"], scores["mask"], strict=True)]
    ratio_se = mean_se(resid)[1] / rows["mask"][0]
    if args.json:
        out = {
            "machine": machine(),
            "windows": len(windows),
            "rows": rows,
            "ratio": ratio,
            "ratio_se": ratio_se,
        }
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {machine()}")
    print(
        f"{len(windows)} held-out windows of {args.window} chars, a gap of {args.gap} in the "
        f"middle; judge {judge.run.name} (ar, step {judge.step})"
    )
    for name, (m, se) in rows.items():
        who = runs[owner[name]].run.name if name in owner else "-"
        print(f"{name:22} {m:.3f} ± {se:.3f} nats/char   {who}")
    print(f"block / mask = {ratio:.3f} ± {ratio_se:.3f} (target ≤ 1.10)")
    for name, ex in examples.items():
        print(f"\n{name}: {ex!r}")


if __name__ == "__main__":
    main()
