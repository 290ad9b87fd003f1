"""Quality per unit of compute: ar, mask and uniform trained for the same wall-clock budget.

    python benchmarks/quality.py [--minutes 10] [--processes ar,mask,uniform] [--plot out.png]

Each process trains the ``default`` recipe on tiny Shakespeare (90/10 split). The step budget
is calibrated so that the learning-rate schedule ends when the time does: a few timed steps
first, then ``max_steps = minutes / seconds_per_step``. Prints held-out bits/char for each
(an upper bound for the diffusion processes, exact for ar) with its standard error, the
ratios to ar, and writes a loss-vs-time plot if matplotlib is installed (``pip install
-e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from common import default_corpus, machine

from ldlm_engine import (
    RunConfig,
    RunDir,
    Trainer,
    adapt_process,
    evaluate_run,
    get_preset,
    load_run,
)
from ldlm_engine.config import apply_overrides
from ldlm_engine.errors import ConfigError


def parse_setting(item: str) -> dict:
    """``model.d_model=192`` → ``{"model": {"d_model": 192}}``; values read as TOML literals."""
    key, sep, value = item.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot:
        raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word such as cosine
    return {section: {name: parsed}}


def calibrate(cfg, steps: int = 20) -> float:
    """Seconds per optimizer step of this config on this machine (after warm-up)."""
    c = cfg.copy()
    c.train.max_steps = steps + 3
    c.train.log_every = 1
    c.train.eval_every = c.train.sample_every = c.train.checkpoint_every = 0
    times = []
    Trainer(
        c,
        sinks=[lambda e: times.append(e.elapsed_s) if e.event == "step" else None],
        handle_signals=False,
    ).run()
    return (times[-1] - times[2]) / (len(times) - 3)


def recipe(process: str, data: str, args) -> RunConfig:
    """The preset for one process with the command line's overrides, validated."""
    cfg = adapt_process(get_preset(args.preset), process)
    cfg.data.source = data
    if args.batch:
        cfg.train.batch_size = args.batch
    for item in args.set:
        apply_overrides(cfg, parse_setting(item))
    return cfg.validate()


def train_one(process: str, minutes: float, data: str, args) -> dict:
    cfg = recipe(process, data, args)
    sec = calibrate(cfg)
    steps = max(20, int(minutes * 60 / sec))
    cfg.train.max_steps = steps
    cfg.train.eval_every = max(10, steps // 12)
    cfg.train.sample_every = 0
    cfg.train.checkpoint_every = steps
    cfg.train.eval_tokens = 16_384
    name = f"quality-{process}-{time.strftime('%Y%m%d-%H%M%S')}"
    rd = RunDir.create(cfg.to_dict(), name=name)
    curve = []

    def sink(e):
        if e.event == "eval":
            curve.append((e.step, e.time, e.val_bits_per_char))

    t0 = time.time()
    Trainer(cfg, run_dir=rd, sinks=[sink], handle_signals=False).run()
    wall = time.time() - t0
    est = evaluate_run(load_run(rd.path), max_tokens=args.eval_tokens, samples=args.eval_samples)
    return {
        "process": process,
        "run": str(rd.path),
        "steps": steps,
        "sec_per_step": round(sec, 3),
        "train_minutes": round(wall / 60, 2),
        "val_bits_per_char": round(est.bits_per_char, 4),
        "stderr": round(est.stderr_bits_per_char, 4),
        "exact": est.exact,
        "curve": [(s, round(t - t0, 1), round(b, 4)) for s, t, b in curve],
    }


def plot(results: list[dict], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs = [t / 60 for _, t, _ in r["curve"]]
        ys = [b for _, _, b in r["curve"]]
        label = f"{r['process']} ({'exact' if r['exact'] else 'upper bound'})"
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("held-out bits per character")
    ax.set_title("tiny Shakespeare, default recipe, same wall-clock budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per process")
    ap.add_argument("--processes", default="ar,mask,uniform")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one recipe setting, e.g. --set model.d_model=192 (repeatable)",
    )
    ap.add_argument("--data", default=default_corpus())
    ap.add_argument("--eval-tokens", type=int, default=65_536)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--plot", default="", help="PNG path for the loss-vs-time plot")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    processes = args.processes.split(",")
    try:  # every bad setting is one line before minutes of training, not a traceback after
        for p in processes:
            recipe(p, args.data, args)
    except ConfigError as e:
        print(f"quality.py: {e}", file=sys.stderr)
        sys.exit(2)
    results = [train_one(p, args.minutes, args.data, args) for p in processes]
    if args.json:
        print(json.dumps({"machine": machine(), "results": results}, indent=2))
    else:
        print(f"machine: {machine()}")
        print(f"data: {args.data}; preset {args.preset}; {args.minutes:g} minutes per process")
        ar = next((r for r in results if r["process"] == "ar"), None)
        print(
            f"{'process':8} {'steps':>6} {'s/step':>7} {'minutes':>7} {'bits/char':>14} {'× ar':>6}"
        )
        for r in results:
            rel = f"{r['val_bits_per_char'] / ar['val_bits_per_char']:.2f}" if ar else "-"
            sign = "=" if r["exact"] else "≤"
            print(
                f"{r['process']:8} {r['steps']:>6} {r['sec_per_step']:>7.2f} "
                f"{r['train_minutes']:>7.1f} "
                f"{sign} {r['val_bits_per_char']:.3f} ±{r['stderr']:.3f} {rel:>6}"
            )
    if args.plot and not plot(results, args.plot):
        print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
