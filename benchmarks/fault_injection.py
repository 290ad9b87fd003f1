"""Fault injection: SIGKILL a real training process at random moments; nothing may be lost.

    python benchmarks/fault_injection.py [--kills 20] [--seed 0] [--jobs 2] [--keep DIR]

Each iteration starts a real training subprocess (a tiny masked model, a ``Trainer`` writing a
run directory in a fresh temporary ``LDLM_HOME``, a checkpoint every step, ``log_every=1``) and
SIGKILLs it once it has written its first checkpoint. Iterations cycle through three kinds of
kill:

* ``random``      after a random delay (0-1.5 s);
* ``checkpoint``  after a random 0-0.8 s, as soon as a ``.tmp-*`` entry appears in the run's
  ``checkpoints/`` (a checkpoint folder or ``last.json`` being written), plus 0-30 ms;
* ``metrics``     after a random 0-0.8 s, as soon as ``metrics.jsonl`` grows (an event
  append), plus 0-2 ms.

After each kill it checks that

1. the run is not reported live (the kernel dropped the trainer's lock);
2. every complete line of ``metrics.jsonl`` is a JSON object (a partial last line is allowed);
3. the latest checkpoint loads and verifies (``ldlm_engine.checkpoint.load_checkpoint``), has
   finite weights, and is at least as new as the last ``checkpoint`` event in the metrics (an
   announced checkpoint is never lost);
4. ``Trainer(..., resume=True)`` continues from exactly that step, finishes 3 more steps, and
   its final checkpoint loads; the events it appends parse.

Any violation counts as a corrupted state. The summary line gives their count; the exit status
is 1 if it is not 0. ``tests/reliability/test_fault_injection.py`` runs the same code with 3
kills on every CI run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

RUN_NAME = "fi"
MODES = ("random", "checkpoint", "metrics")
RESUME_STEPS = 3
FIRST_CHECKPOINT_TIMEOUT_S = 120.0
TARGET_TIMEOUT_S = 10.0

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n"
    "the sun is up and the sky is blue. we sat in the sun and the cat sat with us.\n"
) * 40


def make_config(max_steps: int = 1_000_000):
    """A tiny masked model that checkpoints every step and logs every step."""
    from ldlm_engine import get_preset

    cfg = get_preset("tiny")
    cfg.model.d_model, cfg.model.n_heads, cfg.model.n_layers, cfg.model.d_ff = 32, 2, 1, 64
    cfg.model.seq_len = 32
    t = cfg.train
    t.batch_size, t.max_steps, t.warmup_steps, t.eval_tokens = 8, max_steps, 5, 256
    t.log_every, t.eval_every, t.sample_every = 1, 0, 0
    t.checkpoint_every, t.keep_checkpoints = 1, 2
    t.device = "cpu"
    return cfg.validate()


def child_main(home: str) -> int:
    """The victim: train a fresh run under ``home`` until killed."""
    os.environ["LDLM_HOME"] = home
    from ldlm_engine import RunDir, Trainer

    cfg = make_config()
    rd = RunDir.create(cfg.to_dict(), name=RUN_NAME)
    Trainer(cfg, run_dir=rd, text=TEXT).run()
    return 0


# --------------------------------------------------------------------------- one iteration


@dataclass
class KillResult:
    index: int
    mode: str
    killed_at_step: int | None = None  # last step event seen before the kill
    checkpoint_step: int | None = None  # what load_checkpoint returned
    interrupted_write: bool = False  # a .tmp-* entry was left behind by the kill
    torn_line: bool = False  # metrics.jsonl ended mid-line
    resumed: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def corrupted(self) -> bool:
        return bool(self.problems)


def _child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LDLM_HOME": str(home),
            "LDLM_CACHE_DIR": str(home / "cache"),
            "LDLM_CONFIG_DIR": str(home / "config"),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(k, None)
    return env


def _wait(cond: Callable[[], bool], timeout: float, proc: subprocess.Popen, poll: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        if poll:
            time.sleep(poll)
    return True


def _has_tmp(ckdir: Path) -> bool:
    try:
        return any(name.startswith(".tmp-") for name in os.listdir(ckdir))
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _check_metrics(data: bytes, problems: list[str]) -> tuple[list[dict], bool]:
    """Parse every complete line; returns (events, last line torn)."""
    cut = data.rfind(b"\n")
    complete, rest = data[: cut + 1], data[cut + 1 :]
    events = []
    for n, line in enumerate(complete.split(b"\n")[:-1], 1):
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            problems.append(f"metrics.jsonl line {n} does not parse: {line[:80]!r}")
            continue
        if not isinstance(obj, dict) or "event" not in obj:
            problems.append(f"metrics.jsonl line {n} is not an event: {line[:80]!r}")
            continue
        events.append(obj)
    return events, bool(rest)


def run_one(
    index: int,
    mode: str,
    rng: random.Random,
    workdir: Path,
    *,
    resume_lock: threading.Lock | None = None,
) -> KillResult:
    """Start, kill (per ``mode``), verify and resume one training run."""
    t_start = time.monotonic()
    res = KillResult(index, mode)
    home = workdir / f"kill-{index:03d}"
    run_path = home / "runs" / RUN_NAME
    ckdir = run_path / "checkpoints"
    metrics = run_path / "metrics.jsonl"
    home.mkdir(parents=True)
    log = open(home / "child.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(home)],
        env=_child_env(home),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if not _wait(
            lambda: (ckdir / "last.json").exists(), FIRST_CHECKPOINT_TIMEOUT_S, proc, 0.02
        ):
            res.problems.append(f"setup: no first checkpoint (child exit {proc.poll()})")
            return res
        if mode == "random":
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            time.sleep(rng.uniform(0.0, 0.8))  # then aim: so targeted kills hit varied steps
        if mode == "checkpoint":
            _wait(lambda: _has_tmp(ckdir), TARGET_TIMEOUT_S, proc, 0.0002)
            time.sleep(rng.choice([0.0, rng.uniform(0.0, 0.03)]))
        elif mode == "metrics":
            size = _size(metrics)
            _wait(lambda: _size(metrics) != size, TARGET_TIMEOUT_S, proc, 0.0002)
            time.sleep(rng.choice([0.0, rng.uniform(0.0, 0.002)]))
        if proc.poll() is not None:
            res.problems.append(f"setup: the child exited by itself (status {proc.returncode})")
            return res
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        res.interrupted_write = _has_tmp(ckdir)
        with resume_lock or contextlib.nullcontext():
            _verify_and_resume(run_path, res)
    except Exception as e:  # a harness bug must not read as "0 corrupted"
        res.problems.append(f"harness error: {type(e).__name__}: {e}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        res.seconds = time.monotonic() - t_start
    return res


def _verify_and_resume(run_path: Path, res: KillResult) -> None:
    import torch

    from ldlm_engine import LdlmError, RunConfig, RunDir, Trainer
    from ldlm_engine.checkpoint import load_checkpoint

    problems = res.problems
    run = RunDir(run_path)
    if run.liveness() == "live":
        problems.append("the killed run is still reported live")
    before = run.metrics_path.read_bytes() if run.metrics_path.exists() else b""
    events, res.torn_line = _check_metrics(before, problems)
    steps = [e["step"] for e in events if e.get("event") == "step"]
    res.killed_at_step = max(steps) if steps else None
    announced = max((e["step"] for e in events if e.get("event") == "checkpoint"), default=0)
    try:
        ck = load_checkpoint(run.checkpoints_dir)
    except LdlmError as e:
        problems.append(f"latest checkpoint does not load: {e}")
        return
    res.checkpoint_step = ck.step
    if ck.step < announced:
        problems.append(f"lost work: checkpoint step {ck.step} < announced step {announced}")
    if not all(torch.isfinite(v).all() for v in ck.model_state.values()):
        problems.append(f"checkpoint step {ck.step} has non-finite weights")

    cfg = RunConfig.from_dict(run.read_config())
    cfg.train.max_steps = ck.step + RESUME_STEPS
    seen: list = []
    trainer = Trainer(cfg, run_dir=run, sinks=[seen.append], resume=True, text=TEXT)
    try:
        state = trainer.run()
    except LdlmError as e:
        problems.append(f"resume failed: {e}")
        return
    finally:
        run.close()
    new_steps = [e.step for e in seen if e.event == "step"]
    if state != "finished" or trainer.step != ck.step + RESUME_STEPS:
        problems.append(f"resume ended {state} at step {trainer.step}")
    if not new_steps or new_steps[0] != ck.step + 1:
        problems.append(f"resume did not continue from step {ck.step}: steps {new_steps[:3]}")
    after = run.metrics_path.read_bytes()[len(before) :]
    _check_metrics(after.lstrip(b"\n"), problems)
    final = load_checkpoint(run.checkpoints_dir)
    if final.step != ck.step + RESUME_STEPS:
        problems.append(f"final checkpoint is step {final.step}, not {ck.step + RESUME_STEPS}")
    res.resumed = not problems


# --------------------------------------------------------------------------- the loop


@dataclass
class Summary:
    results: list[KillResult]
    seed: int
    seconds: float

    @property
    def corrupted(self) -> int:
        return sum(r.corrupted for r in self.results)

    def lines(self) -> list[str]:
        rs = self.results
        by_mode = {m: [r for r in rs if r.mode == m] for m in MODES}
        interrupted = sum(r.interrupted_write for r in rs)
        kill_steps = [r.killed_at_step or 0 for r in rs]
        out = [
            f"fault injection: {len(rs)} SIGKILLs of a training process (seed {self.seed}, "
            f"{self.seconds:.0f}s): {len(by_mode['random'])} at random moments, "
            f"{len(by_mode['checkpoint'])} during checkpoint writes, "
            f"{len(by_mode['metrics'])} during metrics appends",
            f"  killed at steps {min(kill_steps, default=0)}-{max(kill_steps, default=0)}; "
            f"{interrupted} kills left a half-written checkpoint or pointer (.tmp-*), "
            f"{sum(r.torn_line for r in rs)} left a torn last metrics line",
            f"  latest checkpoint loaded: {sum(r.checkpoint_step is not None for r in rs)}"
            f"/{len(rs)}; resumed from it and finished: {sum(r.resumed for r in rs)}/{len(rs)}",
            f"  corrupted states: {self.corrupted}",
        ]
        for r in rs:
            for p in r.problems:
                out.append(f"  ! kill {r.index} ({r.mode}): {p}")
        return out


def run_fault_injection(
    kills: int = 20,
    seed: int = 0,
    *,
    jobs: int = 1,
    workdir: Path | None = None,
    keep: bool = False,
    progress: Callable[[KillResult], None] | None = None,
) -> Summary:
    """Run ``kills`` iterations (``jobs`` at a time) and return their summary."""
    rng = random.Random(seed)
    modes = [MODES[i % len(MODES)] for i in range(kills)]
    rng.shuffle(modes)
    rngs = [random.Random(rng.getrandbits(64)) for _ in range(kills)]
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="ldlm-fault-")) if own else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [
                pool.submit(run_one, i, modes[i], rngs[i], root, resume_lock=lock)
                for i in range(kills)
            ]
            results = []
            for fut in futures:
                r = fut.result()
                results.append(r)
                if progress is not None:
                    progress(r)
    finally:
        if own and not keep:
            shutil.rmtree(root, ignore_errors=True)
    return Summary(results, seed, time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="iterations (default 20)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--jobs", type=int, default=1, help="iterations run at once (default 1)")
    ap.add_argument("--keep", metavar="DIR", help="keep the killed runs under DIR")
    ap.add_argument("--child", metavar="HOME", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if args.kills < 1:
        ap.error("--kills must be at least 1")

    def progress(r: KillResult) -> None:
        verdict = "CORRUPTED" if r.corrupted else "ok"
        print(
            f"kill {r.index + 1:>3}/{args.kills} {r.mode:<10} step {r.killed_at_step!s:>4} -> "
            f"checkpoint {r.checkpoint_step!s:>4}{' (.tmp left)' if r.interrupted_write else ''}"
            f"{' (torn line)' if r.torn_line else ''}  {verdict}  {r.seconds:.1f}s",
            flush=True,
        )

    summary = run_fault_injection(
        args.kills,
        args.seed,
        jobs=args.jobs,
        workdir=Path(args.keep) if args.keep else None,
        keep=bool(args.keep),
        progress=progress,
    )
    print("\n".join(summary.lines()))
    return 1 if summary.corrupted else 0


if __name__ == "__main__":
    sys.exit(main())
