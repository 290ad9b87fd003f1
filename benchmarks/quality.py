"""Quality per unit of compute: each process trained for the same CPU-time budget.

    python benchmarks/quality.py [--minutes 10] [--processes ar,mask,uniform,block:4,block:8]
                                 [--threads 2] [--plot out.png]

Each process trains the ``default`` recipe on tiny Shakespeare (90/10 split); ``block:B`` is
the block process with blocks of B tokens. The budget is **CPU time of the training process**
(``time.process_time``: every thread's time, so a busy shared machine does not shrink it),
excluding setup and the periodic evaluations. Training stops when the budget is spent, and
the learning-rate schedule is sized over it: after every step the planned step count is
re-estimated from the CPU seconds per step so far, so the cosine decay ends with the budget
whatever the speed. Prints held-out bits/char for each (an upper bound for the diffusion
processes, exact for ar and block:1) with its standard error, the ratios to ar, CPU and wall
minutes, and writes a bound-vs-CPU-time plot if matplotlib is installed (``pip install -e
".[bench]"``).
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

import torch
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


def split_spec(spec: str) -> tuple[str, int | None]:
    """``block:4`` → ("block", 4); any other name → (name, None)."""
    kind, _, size = spec.partition(":")
    if not size:
        return kind, None
    if kind != "block" or not size.isdigit():
        raise ConfigError(f"process {spec!r}: only block takes a size (block:B, e.g. block:4)")
    return kind, int(size)


def recipe(spec: str, data: str, args) -> RunConfig:
    """The preset for one process with the command line's overrides, validated.

    ``preset`` is the preset exactly as ``ldlm train --preset`` runs it (for ``default``: a
    shifted block model with an ar phase); ``block:B`` is the plain BD3-LM path (no token
    shift, no ar phase or ar loss), as the block presets trained before them.
    """
    cfg = get_preset(args.preset)
    if spec != "preset":
        kind, size = split_spec(spec)
        if size is not None:
            cfg.process.block_size = size
        cfg.process.block_shift, cfg.process.ar_loss, cfg.process.ar_phase = False, 0.0, 0.0
        cfg.process.full_blocks = 0.0
        if cfg.sample.sampler == "speculative":  # it needs the shift
            cfg.sample.sampler = "auto"
        cfg = adapt_process(cfg, kind)
    cfg.data.source = data
    if args.batch:
        cfg.train.batch_size = args.batch
    for item in args.set:
        apply_overrides(cfg, parse_setting(item))
    return cfg.validate()


class BudgetTrainer(Trainer):
    """A Trainer that stops when its training CPU time reaches ``budget_s`` and sizes the LR
    schedule to it (re-planning ``total_steps`` from the seconds per step so far), with an
    evaluation every ``budget_s / evals`` CPU seconds; evaluations are not charged."""

    def __init__(self, cfg: RunConfig, budget_s: float, evals: int, **kw):
        super().__init__(cfg, **kw)
        self.budget_s = budget_s
        self.eval_period = budget_s / max(1, evals)
        # step, cpu s, wall s, bits/char, and the ar head's (a shifted block model; else None)
        self.curve: list[tuple[int, float, float, float, float | None]] = []

    def setup(self) -> None:
        super().setup()
        self.total_steps = max(self.total_steps, 10**9)  # re-planned after every step
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.eval_cpu = self.eval_wall = 0.0
        self.next_eval = self.eval_period
        self.spent = (0.0, 0.0)  # training CPU and wall seconds at the last step

    def train_cpu(self) -> float:
        return time.process_time() - self.cpu0 - self.eval_cpu

    def train_wall(self) -> float:
        return time.perf_counter() - self.wall0 - self.eval_wall

    def _emit_eval(self) -> None:
        c, w = time.process_time(), time.perf_counter()
        super()._emit_eval()
        self.eval_cpu += time.process_time() - c
        self.eval_wall += time.perf_counter() - w

    def emit(self, event) -> None:
        super().emit(event)
        if event.event == "eval":
            self.curve.append((event.step, self.train_cpu(), self.train_wall(),
                               event.val_bits_per_char, event.ar_head_bits_per_char))  # fmt: skip
        if event.event != "step":
            return
        used = self.train_cpu()
        self.spent = (used, self.train_wall())
        if used >= self.budget_s:
            self.total_steps = self.step  # the loop ends; the final evaluation follows
            return
        per_step = used / self.step
        self.total_steps = self.step + max(1, round((self.budget_s - used) / per_step))
        if used >= self.next_eval:
            self.next_eval += self.eval_period
            self._emit_eval()


def train_one(spec: str, minutes: float, data: str, args) -> dict:
    cfg = recipe(spec, data, args)
    cfg.train.log_every = 1  # every step reports, so the budget is checked every step
    cfg.train.eval_every = cfg.train.sample_every = cfg.train.checkpoint_every = 0
    cfg.train.eval_tokens = 16_384
    cfg.train.epochs = None
    name = f"quality-{spec.replace(':', '')}-{time.strftime('%Y%m%d-%H%M%S')}"
    rd = RunDir.create(cfg.to_dict(), name=name)
    tr = BudgetTrainer(cfg, minutes * 60, args.evals, run_dir=rd, handle_signals=False)
    tr.run()
    est = evaluate_run(load_run(rd.path), max_tokens=args.eval_tokens, samples=args.eval_samples)
    return {
        "process": spec,
        "run": str(rd.path),
        "steps": tr.step,
        "epochs": round(tr.batcher.epoch_progress, 3),
        "cpu_s_per_step": round(tr.spent[0] / max(1, tr.step), 4),
        "cpu_minutes": round(tr.spent[0] / 60, 2),
        "wall_minutes": round(tr.spent[1] / 60, 2),
        "val_bits_per_char": round(est.bits_per_char, 4),
        "stderr": round(est.stderr_bits_per_char, 4),
        "exact": est.exact,
        # a shifted block model's ar head, exact: the NLL of what its speculative sampler writes
        "ar_head_bits_per_char": _round(est.ar_head_bits_per_char),
        "curve": [
            (s, round(c, 1), round(w, 1), round(b, 4), _round(a)) for s, c, w, b, a in tr.curve
        ],
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def plot(results: list[dict], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs = [c / 60 for _, c, _, _, _ in r["curve"]]
        ys = [b for _, _, _, b, _ in r["curve"]]
        label = f"{r['process']} ({'exact' if r['exact'] else 'upper bound'})"
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_xlabel("training CPU time (minutes)")
    ax.set_ylabel("held-out bits per character")
    ax.set_title("tiny Shakespeare, default recipe, same CPU-time budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--minutes", type=float, default=10.0, help="training CPU-time budget per process"
    )
    ap.add_argument("--processes", default="ar,mask,uniform,block:4,block:8")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice)")
    ap.add_argument("--evals", type=int, default=12, help="evaluations along the curve")
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
    if args.threads:
        torch.set_num_threads(args.threads)
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
        print(
            f"data: {args.data}; preset {args.preset}; "
            f"{args.minutes:g} CPU minutes of training per process"
        )
        ar = next((r for r in results if r["process"] == "ar"), None)
        print(
            f"{'process':9} {'steps':>6} {'cpu s/step':>10} {'cpu min':>7} {'wall min':>8} "
            f"{'bits/char':>14} {'× ar':>6} {'ar head':>9} {'× ar':>6}"
        )
        for r in results:
            rel = f"{r['val_bits_per_char'] / ar['val_bits_per_char']:.2f}" if ar else "-"
            sign = "=" if r["exact"] else "≤"
            head, head_rel = "-", "-"
            if r["ar_head_bits_per_char"] is not None:
                head = f"= {r['ar_head_bits_per_char']:.3f}"
                if ar:
                    head_rel = f"{r['ar_head_bits_per_char'] / ar['val_bits_per_char']:.2f}"
            print(
                f"{r['process']:9} {r['steps']:>6} {r['cpu_s_per_step']:>10.3f} "
                f"{r['cpu_minutes']:>7.2f} {r['wall_minutes']:>8.2f} "
                f"{sign} {r['val_bits_per_char']:.3f} ±{r['stderr']:.3f} {rel:>6} "
                f"{head:>9} {head_rel:>6}"
            )
    if args.plot and not plot(results, args.plot):
        print("plot skipped: matplotlib is not installed (pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
