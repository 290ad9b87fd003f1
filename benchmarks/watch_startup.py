"""``ldlm watch RUN``: time to the first full frame, and CPU use while it sits idle.

    python benchmarks/watch_startup.py [--run NAME_OR_DIR | --live] [--idle 10] [--size 80x24]

Without ``--run`` it first trains a real small run (``ldlm train --preset tiny``, a few dozen
steps on the built-in corpus) in a temporary LDLM_HOME, so the watched run has a checkpoint
and a metrics log with train and val points; ``--live`` keeps it training in the background
meanwhile (stopped at the end), so the chart redraws as steps arrive.

``ldlm watch`` starts in a pseudo-terminal of ``--size`` (``TERM=xterm-256color``, as over
SSH) and its output is read until one frame holds the chart's title (``loss: NAME``) and the
footer's ``palette``: the start-up time is from spawning the process to that frame. It is then
left alone for ``--idle`` seconds while its output is drained; idle CPU is the user + system
time the process spent meanwhile (``/proc/PID/stat``) over the wall time. The load average is
printed: other work on the machine slows the start-up and inflates the CPU figure.

Targets (issue 20): start-up < 3 s on a quiet machine, idle CPU < 2 %.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

STARTUP_TARGET_S = 3.0
IDLE_TARGET_PCT = 2.0
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ldlm(env: dict[str, str], *args: str) -> None:
    cmd = [sys.executable, "-m", "ldlm_tui.cli", *args]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def train_small_run(env: dict[str, str], name: str, steps: int, live: bool) -> None:
    """A finished run of ``steps`` steps; ``live``: one training in the background instead,
    returned once it has logged about ``steps`` steps."""
    if not live:
        ldlm(env, "train", "--preset", "tiny", "--max-steps", str(steps), "--name", name)
        return
    ldlm(env, "train", "--preset", "tiny", "--max-steps", "1000000", "--name", name, "--detach")
    metrics = Path(env["LDLM_HOME"]) / "runs" / name / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.read_bytes().count(b'"step":') > steps // 10:
            return  # (it logs every 10 steps)
        time.sleep(1)
    raise SystemExit(f"the background run logged fewer than {steps} steps in 300 s")


def visible_text(data: bytes) -> str:
    """The printable text of terminal output (escape sequences removed)."""
    return ANSI.sub(b"", data).decode("utf-8", "replace")


def measure(run: str, title: str, env: dict[str, str], size: tuple[int, int], idle: float) -> dict:
    cols, rows = size
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**env, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ldlm_tui.cli", "watch", run],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    first_frame = None
    idle_cpu = None
    try:
        deadline = start + 120
        while first_frame is None and time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
                text = visible_text(seen[-200_000:])
                if title in text and "palette" in text:
                    first_frame = time.monotonic() - start
        if first_frame is None:
            tail = visible_text(seen[-2000:])
            raise SystemExit(f"ldlm watch drew no full frame (exit {proc.poll()}): {tail!r}")
        time.sleep(0.5)  # the frame's own follow-up work (first poll, status line) settles
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        while time.monotonic() - t0 < idle:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    os.read(master, 65536)
                except OSError:
                    break
        idle_cpu = 100.0 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        if proc.poll() is None:
            with_timeout_quit(proc, master)
        os.close(master)
    return {"startup_s": round(first_frame, 2), "idle_cpu_pct": round(idle_cpu, 2)}


def with_timeout_quit(proc: subprocess.Popen, master: int) -> None:
    """Quit the app as a user would (q), then make sure this benchmark's child is gone."""
    try:
        os.write(master, b"q")
        end = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                os.read(master, 65536)
    except OSError:
        pass
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an existing run to watch (default: train a small one)")
    parser.add_argument("--steps", type=int, default=40, help="steps of the small run")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured")
    parser.add_argument("--size", default="80x24", help="terminal COLSxROWS")
    parser.add_argument(
        "--live", action="store_true", help="keep the small run training while it is watched"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cols, rows = (int(v) for v in args.size.lower().split("x"))
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
        env["LDLM_STATE_DIR"] = str(Path(tmp) / "state")  # never the user's remembered state
        env.setdefault("OMP_NUM_THREADS", "1")
        run = args.run
        if run is None:
            env["LDLM_HOME"] = str(Path(tmp) / "home")
            env["LDLM_CACHE_DIR"] = str(Path(tmp) / "cache")
            env["LDLM_CONFIG_DIR"] = str(Path(tmp) / "config")
            train_small_run(env, "watched", args.steps, args.live)
            run = "watched"
        name = Path(run).name
        load = os.getloadavg()
        try:
            result = measure(run, f"loss: {name}", env, (cols, rows), args.idle)
        finally:
            if args.live and args.run is None:
                ldlm(env, "runs", "stop", run)
    result.update(
        {
            "size": f"{cols}x{rows}",
            "live": bool(args.live),
            "idle_s": args.idle,
            "load_avg_1m": round(load[0], 2),
            "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
            "startup_ok": result["startup_s"] < STARTUP_TARGET_S,
            "idle_ok": result["idle_cpu_pct"] < IDLE_TARGET_PCT,
        }
    )
    if args.json:
        print(json.dumps(result))
        return
    what = "a live run" if args.live else "a finished run"
    print(f"ldlm watch of {what} at {result['size']} on {result['machine']} (load {load[0]:.2f})")
    ok = "ok" if result["startup_ok"] else "over"
    print(f"  first full frame: {result['startup_s']:.2f} s (target < {STARTUP_TARGET_S} s: {ok})")
    ok = "ok" if result["idle_ok"] else "over"
    print(
        f"  idle CPU over {args.idle:g} s: {result['idle_cpu_pct']:.2f} % "
        f"(target < {IDLE_TARGET_PCT} %: {ok})"
    )


if __name__ == "__main__":
    main()
