"""Memory: peak resident memory of ``ldlm train`` on a large corpus.

    python benchmarks/memory.py [--mb 100] [--steps 5] [--no-baseline] [--no-phases] [--json]

Writes a synthetic corpus of ``--mb`` megabytes (1 MB = 10^6 bytes) into a temporary folder:
shuffled and lightly perturbed copies of a base text (tiny Shakespeare where the checkout has
it), so it is not one string repeated. Then it runs, in a child process,

    ldlm train --data FILE --preset tiny --max-steps 5 --eval-every 0 --sample-every 0

(char tokenizer, a temporary ``LDLM_HOME``) and reads the child's peak RSS from ``wait4``
(the kernel's high-water mark, ``ru_maxrss``), as well as a 20 Hz sample of its
``/proc/PID/status`` to see when the peak happens. The same command on the base text alone gives
the fixed cost (Python, torch, the model), so the report separates it from the part that grows
with the corpus. A second child times the data phases (read, tokenizer, encode, split) with the
RSS after each. Everything temporary is deleted afterwards. Target: peak < 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import default_corpus, machine

MB = 1_000_000
TARGET_MB = 2000.0


def ldlm_command() -> list[str]:
    exe = Path(sys.executable).parent / "ldlm"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "ldlm_tui.cli"]


def base_text(spec: str) -> str:
    from ldlm_engine import load_corpus

    return load_corpus(spec).text


def write_corpus(path: Path, base: str, target_bytes: int, seed: int = 0) -> int:
    """Append shuffled, perturbed copies of ``base`` until the file holds ``target_bytes``."""
    rng = random.Random(seed)
    paragraphs = [p for p in base.split("\n\n") if p.strip()]
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        while written < target_bytes:
            order = paragraphs[:]
            rng.shuffle(order)
            out = []
            for p in order:
                r = rng.random()
                if r < 0.02:
                    p = p.upper()
                elif r < 0.04:
                    p = p.lower()
                elif r < 0.05:
                    p = p.swapcase()
                out.append(p)
            chunk = "\n\n".join(out) + "\n\n"
            data = chunk.encode("utf-8")
            if written + len(data) > target_bytes:
                data = data[: target_bytes - written]
                # never cut a multi-byte character in two
                data = data.decode("utf-8", errors="ignore").encode("utf-8")
            f.write(data.decode("utf-8"))
            written += len(data)
            if not data:
                break
    return written


def child_env(home: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LDLM_HOME=str(home / "home"),
        LDLM_CACHE_DIR=str(home / "cache"),
        LDLM_CONFIG_DIR=str(home / "config"),
        NO_COLOR="1",
        TERM="dumb",
        COLUMNS="120",
    )
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    (home / "config").mkdir(parents=True, exist_ok=True)
    return env


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def measure(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    """Run ``cmd``; its peak RSS (wait4), wall time, and when (s) it first came near the peak."""
    samples: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                kb = _status_kb(proc.pid).get("VmRSS")
                if kb:
                    samples.append((time.perf_counter() - t0, kb))
                done.wait(0.05)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    peak_kb = usage.ru_maxrss  # KiB on Linux
    peak_at = next((t for t, kb in samples if kb >= 0.95 * peak_kb), None)
    return {
        "peak_rss_mb": peak_kb * 1024 / MB,
        "wall_s": wall,
        "near_peak_at_s": peak_at,
        "samples": len(samples),
    }


def train_cmd(data: Path, run_dir: Path, steps: int) -> list[str]:
    return [
        *ldlm_command(),
        "train",
        "--data",
        str(data),
        "--preset",
        "tiny",
        "--tokenizer",
        "char",
        "--max-steps",
        str(steps),
        "--eval-every",
        "0",
        "--sample-every",
        "0",
        "--run-dir",
        str(run_dir),
    ]


PHASES_CODE = r"""
import json, sys, time
from pathlib import Path

def rss():
    d = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            d[k] = int(v.split()[0]) * 1024 / 1e6
    return d

out = []
t = time.perf_counter()
def mark(name):
    global t
    now = time.perf_counter()
    out.append({"phase": name, "s": now - t, "rss_mb": rss().get("VmRSS"),
                "peak_mb": rss().get("VmHWM")})
    t = time.perf_counter()

mark("python start")
import torch
from ldlm_engine import build_tokenizer, load_corpus
from ldlm_engine.data import encode_corpus, split_train_val
mark("import torch + ldlm_engine")
text = load_corpus(sys.argv[1]).text
mark("read corpus")
tok = build_tokenizer("char", text)
mark("build char tokenizer")
ids = encode_corpus(tok, text)
mark("encode")
splits = split_train_val(ids, len(text), 0.1, 64)
mark("split train/val")
n_chars = len(text)
del text
mark("drop the text")
print(json.dumps({"phases": out, "tokens": int(ids.numel()), "chars": n_chars,
                  "id_bytes": ids.element_size()}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0, help="synthetic corpus size (10^6 bytes)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--data", default=default_corpus(), help="base text to copy and perturb")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the child (0: all)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the base-text-only run")
    ap.add_argument("--no-phases", action="store_true", help="skip the timed data phases")
    ap.add_argument("--keep", metavar="DIR", help="keep the corpus and runs in DIR")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print

    root = Path(args.keep or tempfile.mkdtemp(prefix="ldlm-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        base = base_text(args.data)
        big = root / "corpus.txt"
        t0 = time.perf_counter()
        size = write_corpus(big, base, int(args.mb * MB))
        t_write = time.perf_counter() - t0
        env = child_env(root, args.threads)
        cmd = train_cmd(big, root / "run-big", args.steps)
        log(f"corpus written ({size / MB:.1f} MB in {t_write:.1f} s); training on it ...")
        big_res = measure(cmd, env, root / "train-big.log")
        base_res = None
        base_bytes = len(base.encode("utf-8"))
        if not args.no_baseline:
            small = root / "base.txt"
            small.write_text(base, encoding="utf-8")
            log("training on the base text alone ...")
            base_res = measure(
                train_cmd(small, root / "run-base", args.steps), env, root / "train-base.log"
            )
        phases = None
        if not args.no_phases:
            log("timing the data phases ...")
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-c", PHASES_CODE, str(big)],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if p.returncode != 0:
                raise SystemExit(f"phase timing failed:\n{p.stderr[-2000:]}")
            phases = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    peak = big_res["peak_rss_mb"]
    corpus_mb = size / MB
    result = {
        "machine": machine(),
        "load_avg": os.getloadavg(),
        "command": " ".join(["ldlm", *cmd[len(ldlm_command()) :]]).replace(str(root), "$TMP"),
        "corpus_mb": corpus_mb,
        "corpus_write_s": t_write,
        "peak_rss_mb": peak,
        "ratio_to_corpus": peak / corpus_mb,
        "train_wall_s": big_res["wall_s"],
        "near_peak_at_s": big_res["near_peak_at_s"],
        "baseline": None,
        "phases": phases,
        "target_mb": TARGET_MB,
        "pass": peak < TARGET_MB,
    }
    if base_res is not None:
        growth = (peak - base_res["peak_rss_mb"]) / max(1e-9, corpus_mb - base_bytes / MB)
        result["baseline"] = {
            "corpus_mb": base_bytes / MB,
            "peak_rss_mb": base_res["peak_rss_mb"],
            "wall_s": base_res["wall_s"],
            "mb_per_corpus_mb": growth,
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return

    print(f"machine: {result['machine']}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in result['load_avg'])}")
    print(
        f"corpus: {corpus_mb:.1f} MB synthetic (shuffled, perturbed copies of {args.data}), "
        f"written in {t_write:.1f} s"
    )
    print(f"command: {result['command']}  (threads {args.threads or 'all'})")
    when = big_res["near_peak_at_s"]
    when_s = f", within 5% of it from {when:.1f} s" if when is not None else ""
    print(
        f"peak RSS: {peak:,.0f} MB = {peak / corpus_mb:.2f}× the corpus; "
        f"wall {big_res['wall_s']:.1f} s{when_s}"
    )
    if result["baseline"]:
        b = result["baseline"]
        print(
            f"same command on the base text alone ({b['corpus_mb']:.1f} MB): peak RSS "
            f"{b['peak_rss_mb']:,.0f} MB, wall {b['wall_s']:.1f} s → "
            f"{b['mb_per_corpus_mb']:.2f} MB of RSS per MB of corpus beyond that"
        )
    if phases:
        print(
            f"data phases in one process ({phases['chars']:,} chars → {phases['tokens']:,} "
            f"tokens of {phases['id_bytes']} bytes):"
        )
        print(f"  {'phase':28} {'time s':>7} {'RSS MB':>8} {'peak MB':>8}")
        for ph in phases["phases"]:
            print(
                f"  {ph['phase']:28} {ph['s']:>7.2f} {ph['rss_mb']:>8,.0f} {ph['peak_mb']:>8,.0f}"
            )
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"target: peak RSS < {TARGET_MB:,.0f} MB → {peak:,.0f} MB {verdict}")


if __name__ == "__main__":
    main()
