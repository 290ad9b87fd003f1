"""Sample quality of trained runs under an independent ar judge, compared at matched entropy.

    python benchmarks/sample_judge.py --judge RUN --run RUN [--run RUN ...]
                                      [--temperatures 0.7,0.8,0.9,1.0] [--num 16] [--length 128]

Each ``--run`` (any process: ar, block, mask) writes ``--num`` samples of ``--length`` tokens
from BOS with its own sample settings (the preset's sampler, top-p, ...) at each temperature,
through the same generation session as ``ldlm generate``. The judge, an ``ar`` run that is
none of the contestants (issue 19 asks for one trained at least 4x longer), scores every
sample: mean nats per generated token (per character for char tokens), and each sample's
unigram entropy (a repetition check). Held-out text is scored the same way.

The verdict compares runs at matched entropy: for each run, the lowest judge NLL among its
temperatures whose mean unigram entropy is within ``--entropy-tol`` (5%) of real text's; the
first ``--run`` is the one compared (``× first``) with the others. A sample made of repeated
spaces scores low under any judge, so only samples as varied as real text compete.

``--run RUN@sampler=speculative,top_p=1.0`` overrides that run's sample settings (the same
run may compete several times with different settings).
"""

from __future__ import annotations

import argparse
import json

import sampling as bench
import torch
from common import machine

from ldlm_engine import GenerationSession


def split_run(spec: str) -> tuple[str, dict]:
    """``RUN@key=value,key=value`` → (RUN, {key: value}); numbers are read as numbers."""
    name, _, rest = spec.partition("@")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = float(value) if "." in value else int(value)
        except ValueError:
            overrides[key] = value
    return name, overrides


def score(run, judge, temperature: float, args, overrides: dict) -> dict:
    sc = bench.SESSION.settings(
        run.loaded, **{**overrides, "temperature": temperature, "length": args.length}
    )
    nll, ent, texts, calls = [], [], [], []
    for i in range(args.num):
        sc.seed = args.seed * 1000 + i
        res = None
        for res in bench.SESSION.stream(run.loaded, sc, ""):  # noqa: B007
            pass
        ids = [t for t, f in zip(res.tokens, res.fixed, strict=True) if not f]
        calls.append(res.frame.nfe)
        nll.append(judge.nll([], judge.to_judge_ids(ids)))
        ent.append(bench.unigram_entropy(ids))
        texts.append(run.tokenizer.decode(ids))
    m, se = bench.mean_se(nll)
    e, e_se = bench.mean_se(ent)
    return {
        "temperature": temperature,
        "sampler": bench.SESSION.sampler_name(run.loaded, sc),
        "top_p": sc.top_p,
        "nll": round(m, 4),
        "nll_se": round(se, 4),
        "entropy": round(e, 3),
        "entropy_se": round(e_se, 3),
        "tokens_per_call": round(args.length * len(calls) / max(1, sum(calls)), 3),
        "example": texts[0][: args.examples],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", required=True, help="an ar run, none of the contestants")
    ap.add_argument("--run", action="append", required=True, help="a contestant (repeatable)")
    ap.add_argument("--temperatures", default="0.7,0.8,0.9,1.0")
    ap.add_argument("--num", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--entropy-tol", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--examples", type=int, default=80, help="chars of one sample per row")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench.SESSION = GenerationSession(device="cpu", cache_size=8)
    judge_model = bench.load_model("ar", args.judge, torch.device("cpu"))
    runs = []
    for spec in args.run:
        name = split_run(spec)[0]
        kind = bench.SESSION.load(name).config.process.kind
        runs.append(bench.load_model(kind, name, torch.device("cpu")))
    if args.judge in [split_run(spec)[0] for spec in args.run]:
        raise SystemExit("the judge must not be one of the contestants")
    real_args = argparse.Namespace(num=args.num, length=args.length)
    out = {"machine": machine(), "judge": judge_model.source, "rows": [], "verdict": {}}
    rows_by_run: dict[str, list[dict]] = {}
    for name, run in zip(args.run, runs, strict=True):
        judge = bench.Judge(judge_model, run.tokenizer, torch.device("cpu"))
        overrides = split_run(name)[1]
        rows = [score(run, judge, float(t), args, overrides) for t in args.temperatures.split(",")]
        for r in rows:
            r["run"] = name
        rows_by_run[name] = rows
        out["rows"] += rows
    real = bench.real_text_reference(
        bench.Judge(judge_model, judge_model.tokenizer, torch.device("cpu")), real_args, []
    )
    real_entropy = real["entropy"][0]
    out["real_text"] = {"nll": real["nll"][0], "entropy": real_entropy}
    best = {}
    for name, rows in rows_by_run.items():
        ok = [r for r in rows if abs(r["entropy"] / real_entropy - 1) <= args.entropy_tol]
        best[name] = min(ok, key=lambda r: r["nll"]) if ok else None
    first = best[args.run[0]]
    for name, b in best.items():
        out["verdict"][name] = {
            "best_matched": b,
            "vs_first": round(first["nll"] / b["nll"], 3) if b and first else None,
        }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {out['machine']}\njudge: {out['judge']}")
    print(f"real text: NLL {real['nll'][0]:.3f} nats/token, unigram entropy {real_entropy:.2f}")
    print(
        f"{'run':28} {'T':>4} {'sampler':>14} {'NLL':>14} {'entropy':>8} {'tok/call':>8}  example"
    )
    for r in out["rows"]:
        flag = "*" if best.get(r["run"]) is r else " "
        print(
            f"{r['run'][:28]:28} {r['temperature']:>4} {r['sampler']:>14} "
            f"{r['nll']:>7.3f} ±{r['nll_se']:.3f}{flag} {r['entropy']:>7.2f} "
            f"{r['tokens_per_call']:>8.2f}  {r['example']!r}"
        )
    print(f"* lowest NLL within {args.entropy_tol:.0%} of real text's entropy")
    for name, v in out["verdict"].items():
        b = v["best_matched"]
        if b is None:
            print(f"{name}: no temperature within the entropy tolerance")
        else:
            ratio = f"; {args.run[0]} / this = {v['vs_first']:.3f}" if v["vs_first"] else ""
            print(f"{name}: {b['nll']:.3f} ± {b['nll_se']:.3f} at T {b['temperature']}{ratio}")


if __name__ == "__main__":
    main()
