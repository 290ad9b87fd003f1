"""Hostile runs: damage copies of a real run at random; ldlm must never cross the run's boundary.

    python benchmarks/hostile_runs.py [--damages 30] [--seed 0] [--timeout 90] [--mem-mb 3072]

It trains one real tiny run through ``ldlm train`` (a few steps, two checkpoints), then for
each of N iterations copies it into a fresh ``LDLM_HOME`` as ``victim`` next to an intact
``bystander``, applies 1-3 random damages to the victim, and runs the real executable:
``runs list``, ``runs show victim``, ``generate victim``, ``eval victim`` (these four at once),
then ``train --resume victim`` and ``runs rm victim --yes``. Each command runs under a
timeout and a memory cap (``RLIMIT_AS`` in ``preexec_fn``), so a read of ``/dev/zero`` or a
FIFO shows up as a failure instead of taking the machine.

Damages: truncation, wrong JSON types, a symlink out of the run (to a sentinel file or folder),
a symlink to ``/dev/zero``, a FIFO, a huge sparse file, a folder where a file belongs, and a
user's file planted in the run. Targets: every file ldlm reads or writes in a run, the
``checkpoints`` folder and the checkpoint folders. Then: a file moved outside and hard-linked
back (as a ``cp -al`` snapshot shares it: resuming must not write the outside name), a
mistyped ``meta.json`` field, checkpoint tensors altered with their checksums recomputed (a
state tensor dropped, an extra model tensor, a NaN weight), absurd numbers (a config field,
and ``generate --num``/``eval --samples`` of 10**20), and the app's remembered-state file as a
FIFO or ``/dev/zero`` (read by ``ldlm_tui.state.load_state``).

Three more kinds act on the run and check one promise each (issue 23): ``rm-interrupted``
SIGKILLs a real ``ldlm runs rm victim`` just before a random one of its unlinks (an audit hook
picks the point), after which what is left must be listed by ``runs list`` (or be an empty
folder, or gone); ``stop-wrong-pid`` plants a ``status.json`` naming an unrelated ``sleep``
(with the run's lock held by another process, or naming pid 1 with nobody holding it), after
which ``runs stop`` must leave the sleep alive and answer without waiting out its timeout;
``esc-name`` adds a copy of the run named with an OSC escape sequence and puts one in the
victim's status and config, after which ``runs list`` (table and JSON) and ``runs show victim``
must print no ESC byte.

Counted, and all must be 0: tracebacks, hangs (timeouts), memory-cap kills, errors that are not
one line, writes outside the run (any change to a file outside the victim, sentinels and the
bystander included), deletions of foreign files (outside files, and the planted user file) and
broken part-three promises. Exit status 1 if any is not 0.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LDLM = [str(Path(sys.executable).with_name("ldlm"))]
if not os.access(LDLM[0], os.X_OK):
    LDLM = [sys.executable, "-m", "ldlm_tui.cli"]

TOP_FILES = (
    "config.json",
    "summary.json",
    "status.json",
    "control.json",
    "lock",
    "metrics.jsonl",
    "tokenizer.json",
    ".ldlm-run",
)
CK_FILES = ("meta.json", "model.safetensors", "state.safetensors")
KINDS = (
    "truncate",
    "wrong-types",
    "symlink-out",
    "dev-zero",
    "fifo",
    "huge",
    "folder",
    "planted-user-file",
    # part two: hard links, typed checkpoint metadata, altered tensors, absurd numbers, FIFO state
    "hard-link-out",
    "meta-types",
    "altered-tensors",
    "huge-number",
    "fifo-state",
    # Part three (issue 23): actions rather than damages, each with its own check.
    "rm-interrupted",
    "stop-wrong-pid",
    "esc-name",
)
ACCEPTABLE = ("ok", "exit-1", "exit-2")  # success, training failed, one-line user error
WRONG = ["x", [1, 2], {"a": {}}, None, 10**30, float("nan"), True, -1, 1e308, "\n" * 3]


def corpus_text(chars: int = 30_000) -> str:
    """Varied English from CPython's reference docs (no network, no repository files)."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    parts, size, i = [], 0, 0
    while size < chars:
        body = topics[keys[(i * 37) % len(keys)]].strip()[:1500]
        parts.append(body)
        size += len(body) + 2
        i += 1
    return "\n\n".join(parts)[:chars] + "\n"


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LDLM_HOME=str(home),
        LDLM_CACHE_DIR=str(home.parent / "cache"),
        LDLM_CONFIG_DIR=str(home.parent / "config"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        NO_COLOR="1",
        COLUMNS="200",
    )
    for k in ("WORLD_SIZE", "RANK"):
        env.pop(k, None)
    return env


def run(
    args: list[str],
    home: Path,
    *,
    timeout: float,
    mem_mb: int,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """One `ldlm` command (or ``argv``) under a timeout and an address-space cap; classified."""

    def cap() -> None:
        limit = mem_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.monotonic()
    try:
        p = subprocess.run(
            argv or [*LDLM, *args],
            env={**env_for(home), **(env or {})},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=cap,
            cwd=home.parent,
        )
    except subprocess.TimeoutExpired:
        return {"cmd": args[:2], "outcome": "hang", "detail": f"no exit after {timeout:.0f}s"}
    err = p.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err:
        outcome = "memory" if "MemoryError" in err else "traceback"
        detail = lines[-1] if lines else ""
    elif p.returncode < 0:
        outcome, detail = "killed", f"signal {-p.returncode}"
    elif p.returncode == 2 and (len(lines) != 1 or not lines[0].startswith("ldlm: error: ")):
        outcome, detail = "not-one-line", " | ".join(lines[:3])
    elif p.returncode == 0:
        outcome, detail = "ok", ""
    else:
        outcome, detail = f"exit-{p.returncode}", lines[0] if lines else ""
    return {
        "cmd": args[:2],
        "outcome": outcome,
        "detail": detail[:200],
        "s": round(time.monotonic() - t0, 1),
    }


def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every entry under ``root`` except ``skip``'s tree: what it is and a content digest."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = d / name
            if p == skip:
                continue
            st = os.lstat(p)
            if os.path.islink(p):
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_file() and st.st_size <= 64 << 20:
                out[str(p)] = ("file", st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            elif p.is_file():  # a huge (sparse) file moved out by a damage: size and mtime
                out[str(p)] = ("file", st.st_size, st.st_mtime_ns)
            else:
                out[str(p)] = ("other", oct(st.st_mode))
    return out


def train_template(work: Path, timeout: float) -> Path:
    home = work / "template" / "home"
    home.mkdir(parents=True)
    corpus = work / "corpus.txt"
    corpus.write_text(corpus_text(), encoding="utf-8")
    args = [
        "train", "--data", str(corpus), "--preset", "tiny", "--tokenizer", "char",
        "--seq-len", "32", "--batch-size", "4", "--max-steps", "4", "--checkpoint-every", "2",
        "--eval-every", "2", "--sample-every", "0", "--name", "good",
    ]  # fmt: skip
    p = subprocess.run(
        [*LDLM, *args], env=env_for(home), capture_output=True, text=True, timeout=timeout * 4
    )
    if p.returncode != 0:
        sys.exit(f"could not train the template run:\n{p.stderr}")
    return home / "runs" / "good"


def json_targets(run: Path) -> list[Path]:
    ck = sorted((run / "checkpoints").glob("step-*"))
    return [
        *(run / f for f in ("config.json", "summary.json", "status.json", "control.json")),
        run / "checkpoints" / "last.json",
        *(c / "meta.json" for c in ck),
    ]


# --------------------------------------------------------------------------- part three

KILL_RM = """
import os, signal, sys
import ldlm_engine.run_admin, ldlm_engine.runs  # noqa: F401  (imported before counting)
from ldlm_tui.cli import run
k, n = int(sys.argv[1]), [0]
def hook(event, args):
    if event in ("os.remove", "os.rmdir"):  # raised just before the unlink or rmdir
        if n[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        n[0] += 1
sys.addaudithook(hook)
sys.exit(run(["runs", "rm", "victim", "--yes"]))
"""
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(600)
"""
OSC = "\x1b]0;pwned\x07"


def _ldlm(args: list[str], home: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*LDLM, *args],
        env=env_for(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=home.parent,
    )


def _listed(home: Path, timeout: float) -> list[str]:
    out = _ldlm(["runs", "list", "--json"], home, timeout).stdout
    try:
        return [r["name"] for r in json.loads(out or "[]")]
    except (ValueError, TypeError, KeyError):
        return []


def rm_interrupted(rng: random.Random, run: Path, violations: list[str], timeout: float) -> str:
    """SIGKILL ``runs rm`` before its k-th removal; what is left must list (or be empty)."""
    k = rng.randrange(24)
    home = run.parent.parent
    env = env_for(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    p = subprocess.run(
        [sys.executable, "-c", KILL_RM, str(k)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        cwd=home.parent,
    )
    how = "killed" if p.returncode == -signal.SIGKILL else f"exit {p.returncode}"
    left = run.is_dir() and not run.is_symlink() and any(run.iterdir())
    if p.returncode == -signal.SIGKILL and left and run.name not in _listed(home, timeout):
        violations.append(f"rm killed before removal {k} left an unlisted folder")
    return f"rm-interrupted before removal {k} ({how})"


def stop_wrong_pid(rng: random.Random, run: Path, violations: list[str], timeout: float) -> str:
    """``runs stop`` with status.json naming an unrelated process (or pid 1) must signal nothing
    and must not wait out its timeout for a trainer that does not exist."""
    home = run.parent.parent
    now = time.time()
    sleeper = subprocess.Popen(["sleep", "600"])
    holder = None
    try:
        pid1 = rng.random() < 0.3
        status = {"state": "started", "pid": 1 if pid1 else sleeper.pid, "step": 1}
        status.update(host=socket.gethostname(), heartbeat=now, started_at=now)
        if not pid1:  # the sleep's real identity, as a forger would copy it from /proc
            proc = Path("/proc") / str(sleeper.pid)
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (proc / "stat").read_bytes()
                status["pid_start"] = int(stat[stat.rindex(b")") + 2 :].split()[19])
                digest = hashlib.sha256((proc / "cmdline").read_bytes()).hexdigest()
                status["cmdline_sha256"] = digest
            if run.is_dir() and not (run / "lock").is_symlink():
                holder = subprocess.Popen(
                    [sys.executable, "-c", HOLD_LOCK, str(run / "lock")],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                assert holder.stdout is not None
                holder.stdout.readline()
        with contextlib.suppress(OSError):
            (run / "status.json").unlink(missing_ok=True)
            (run / "status.json").write_text(json.dumps(status))
        t0 = time.monotonic()
        p = _ldlm(["runs", "stop", "victim", "--timeout", "6"], home, timeout)
        waited = time.monotonic() - t0
        if sleeper.poll() is not None:
            violations.append(f"runs stop killed an unrelated process ({p.stdout.strip()})")
        if pid1 and waited > 5:
            violations.append("runs stop waited for pid 1 instead of saying it found no trainer")
        if "Traceback" in p.stderr:
            violations.append(f"runs stop: {p.stderr.strip().splitlines()[-1]}")
        return f"stop-wrong-pid ({'pid 1' if pid1 else 'unrelated sleep'}: exit {p.returncode})"
    finally:
        for proc in (sleeper, holder):
            if proc is not None:
                proc.kill()
                proc.wait()


def esc_name(rng: random.Random, run: Path, violations: list[str], timeout: float) -> str:
    """A run folder named with an OSC sequence, and OSC text in the victim's own files."""
    home = run.parent.parent
    template = run.parent / "bystander"
    shutil.copytree(template, run.parent / f"ev{OSC}il{rng.randrange(100)}", symlinks=True)
    for name, key in (("status.json", "message"), ("config.json", "preset")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            d = json.loads((run / name).read_text())
            if isinstance(d, dict) and not (run / name).is_symlink():
                d[key] = f"x{OSC}y"
                (run / name).write_text(json.dumps(d))
    for args in (["runs", "list"], ["runs", "list", "--json"], ["runs", "show", "victim"]):
        p = _ldlm(args, home, timeout)
        if "\x1b" in p.stdout + p.stderr:
            violations.append(f"`ldlm {' '.join(args)}` printed a raw ESC")
    return "esc-name (a run named with an OSC sequence; OSC in status and config)"


ACTIONS = {"rm-interrupted": rm_interrupted, "stop-wrong-pid": stop_wrong_pid, "esc-name": esc_name}


def damage(
    rng: random.Random,
    run: Path,
    outside: Path,
    violations: list[str] | None = None,
    timeout: float = 90.0,
) -> str:
    """Apply one random damage to ``run``; returns what was done (broken promises of the
    part-three actions go to ``violations``)."""
    kind = rng.choice(KINDS)
    if kind in ACTIONS:
        return ACTIONS[kind](rng, run, violations if violations is not None else [], timeout)
    steps = sorted((run / "checkpoints").glob("step-*"))
    files = [run / f for f in TOP_FILES] + [run / "checkpoints" / "last.json"]
    files += [s / f for s in steps for f in CK_FILES]
    folders = [run / "checkpoints", *steps]
    if kind == "wrong-types":
        target = rng.choice(json_targets(run))
        try:
            d = json.loads(target.read_text())
        except (OSError, ValueError):
            d = {}
        if isinstance(d, dict) and d and rng.random() < 0.8:
            key = rng.choice(sorted(d))
            if isinstance(d[key], dict) and d[key] and rng.random() < 0.5:
                sub = rng.choice(sorted(d[key]))
                d[key][sub] = rng.choice(WRONG)
                key = f"{key}.{sub}"
            else:
                d[key] = rng.choice(WRONG)
        else:
            d, key = rng.choice(WRONG), "whole file"
        target.write_text(json.dumps(d))
        return f"wrong-types {target.relative_to(run)} ({key})"
    if kind == "planted-user-file":
        where = rng.choice([run, run / "checkpoints", *steps])
        if where.is_dir() and not where.is_symlink():
            (where / "my-notes.txt").write_text("the user's own notes\n")
        return f"planted-user-file {where.relative_to(run.parent)}/my-notes.txt"
    if kind == "symlink-out" and rng.random() < 0.3:
        target = rng.choice(folders)
        dest = outside / f"folder-{rng.randrange(10**6)}"
        if target.exists():
            os.rename(target, dest)  # a move, never a copy (it may hold a huge sparse file)
        else:
            dest.mkdir()
        target.symlink_to(dest)
        return f"symlink-out {target.relative_to(run)} -> outside folder"
    if kind in PART_TWO:
        return PART_TWO[kind](rng, run, outside, files, steps)
    target = rng.choice(files)
    if not target.parent.is_dir():
        return f"skipped {target.relative_to(run)} (parent gone)"
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif kind != "truncate":
        target.unlink(missing_ok=True)
    if kind == "truncate":
        if target.is_file() and not target.is_symlink():
            size = target.stat().st_size
            os.truncate(target, rng.randrange(size) if size else 0)
    elif kind == "symlink-out":
        target.symlink_to(outside / "sentinel.txt")
    elif kind == "dev-zero":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "huge":
        target.write_bytes(b'{"a": "')
        os.truncate(target, rng.choice((200 << 20, 2 << 30, 20 << 30)))  # sparse
    elif kind == "folder":
        target.mkdir()
    return f"{kind} {target.relative_to(run)}"


# --------------------------------------------------------------------------- part two


def _hard_link_out(rng: random.Random, run: Path, outside: Path, files: list, steps: list) -> str:
    """Move a file outside and hard-link it back: the run still works, and the outside name
    (now sharing the file) must be untouched by a resume (copy on first write)."""
    candidates = [f for f in [*files, run / "train.log"] if f.is_file() and not f.is_symlink()]
    if not (run / "lock").exists():
        candidates.append(run / "lock")
    target = rng.choice(candidates or [run / "lock"])
    dest = outside / f"linked-{rng.randrange(10**6)}-{target.name}"
    if target.is_file() and not target.is_symlink():
        os.rename(target, dest)
    else:
        dest.write_text("a file outside every run\n")
    os.link(dest, target)
    return f"hard-link-out {target.relative_to(run)}"


META_FIELDS = (
    "data_position",
    "optimizer",
    "elapsed_s",
    "epoch",
    "tokens_seen",
    "step",
    "best_val_bits_per_char",
    "total_steps",
    "tied",
    "extra_keys",
    "saved_at",
)


def _meta_types(rng: random.Random, run: Path, outside: Path, files: list, steps: list) -> str:
    metas = [s / "meta.json" for s in steps if (s / "meta.json").is_file()]
    if not metas:
        return "skipped meta-types (no meta.json)"
    target = rng.choice(metas)
    d = json.loads(target.read_text())
    key = rng.choice(META_FIELDS)
    d[key] = rng.choice(WRONG)
    if key == "data_position" and rng.random() < 0.5:
        d[key] = {"epoch": "x", "index": -5}
    target.write_text(json.dumps(d))
    return f"meta-types {target.relative_to(run)} ({key})"


def _altered_tensors(rng: random.Random, run: Path, outside: Path, files: list, steps: list) -> str:
    """Change a checkpoint's tensors and recompute meta.json's checksums, as an attacker
    who edits both would: only the tensor checks stand in the way."""
    import torch
    from safetensors.torch import load_file, save_file

    valid = [s for s in steps if all((s / f).is_file() for f in CK_FILES)]
    if not valid:
        return "skipped altered-tensors (no intact checkpoint)"
    ck = rng.choice(valid)
    how = rng.choice(("drop-rng-noise", "extra-tensor", "nan-weight", "wrong-dtype"))
    fname = "state.safetensors" if how == "drop-rng-noise" else "model.safetensors"
    tensors = load_file(str(ck / fname))
    if how == "drop-rng-noise":
        tensors.pop("extra.rng_noise", None)
    elif how == "extra-tensor":
        tensors["planted.weight"] = torch.zeros(3, 3)
    else:
        name = rng.choice(sorted(k for k, t in tensors.items() if t.is_floating_point()))
        if how == "nan-weight":
            tensors[name] = tensors[name].clone()
            tensors[name].view(-1)[0] = float("nan")
        else:
            tensors[name] = tensors[name].double()
    save_file(tensors, str(ck / fname))
    meta = json.loads((ck / "meta.json").read_text())
    data = (ck / fname).read_bytes()
    meta["files"][fname] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ck / "meta.json").write_text(json.dumps(meta))
    return f"altered-tensors {ck.name}/{fname} ({how})"


HUGE = (0, -1, 10**20, 2**63, 10**9)


def _huge_number(rng: random.Random, run: Path, outside: Path, files: list, steps: list) -> str:
    """An absurd number in config.json (the huge-number commands run for this one too)."""
    cfg = run / "config.json"
    try:
        d = json.loads(cfg.read_text())
        section = rng.choice([k for k, v in d.items() if isinstance(v, dict)])
        key = rng.choice(sorted(k for k, v in d[section].items() if isinstance(v, int)))
    except (OSError, ValueError, IndexError):
        return "huge-number (config.json unreadable: commands only)"
    d[section][key] = rng.choice(HUGE)
    cfg.write_text(json.dumps(d))
    return f"huge-number config.json ({section}.{key} = {d[section][key]})"


def _fifo_state(rng: random.Random, run: Path, outside: Path, files: list, steps: list) -> str:
    """The app's remembered-state file (``$LDLM_STATE_DIR/tui-state.json``) made hostile."""
    state = run.parent.parent.parent / "state"
    state.mkdir(exist_ok=True)
    target = state / "tui-state.json"
    how = rng.choice(("fifo", "dev-zero", "dev-urandom", "huge"))
    if how == "fifo":
        os.mkfifo(target)
    elif how == "huge":
        target.write_bytes(b'{"theme": "')
        os.truncate(target, 2 << 30)
    else:
        target.symlink_to("/dev/zero" if how == "dev-zero" else "/dev/urandom")
    return f"fifo-state tui-state.json ({how})"


PART_TWO = {
    "hard-link-out": _hard_link_out,
    "meta-types": _meta_types,
    "altered-tensors": _altered_tensors,
    "huge-number": _huge_number,
    "fifo-state": _fifo_state,
}
HUGE_COMMANDS = [
    ["generate", "victim", "--num", "99999999999999999999", "--length", "1", "--no-animate"],
    ["eval", "victim", "--samples", "99999999999999999999", "--device", "cpu"],
    ["generate", "victim", "--steps", "99999999999999999999", "--no-animate"],
]
STATE_PROBE = "from ldlm_tui.state import load_state; load_state()"


def part_two_commands(what: list[str], home: Path, t: float, mem_mb: int) -> list[dict]:
    """The extra commands that the part-two damages call for (absurd numbers, the app's state)."""
    out = []
    if any(w.startswith("huge-number") for w in what):
        out += [run(c, home, timeout=t, mem_mb=mem_mb) for c in HUGE_COMMANDS]
    if any(w.startswith("fifo-state") for w in what):
        argv = [sys.executable, "-c", STATE_PROBE]
        env = {"LDLM_STATE_DIR": str(home.parent / "state")}
        out.append(run(["state", "load"], home, timeout=t, mem_mb=mem_mb, argv=argv, env=env))
    return out


def one_iteration(i: int, rng: random.Random, template: Path, work: Path, args) -> dict:
    base = work / f"it{i:03d}"
    home = base / "home"
    runs = home / "runs"
    runs.mkdir(parents=True)
    outside = base / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_text("a file outside every run\n")
    victim = runs / "victim"
    shutil.copytree(template, victim)
    shutil.copytree(template, runs / "bystander")
    what: list[str] = []
    violations: list[str] = []
    for _ in range(rng.randint(1, 3)):
        try:
            what.append(damage(rng, victim, outside, violations, args.timeout))
        except OSError as e:  # e.g. a damage that needs a file an earlier one replaced
            what.append(f"skipped ({e.strerror})")
    planted = list(victim.rglob("my-notes.txt"))
    before = snapshot(base, victim)
    t = args.timeout
    cmds = [
        ["runs", "list"],
        ["runs", "show", "victim"],
        ["generate", "victim", "--no-animate", "--length", "8", "--device", "cpu"],
        ["eval", "victim", "--max-tokens", "256", "--device", "cpu"],
    ]
    with ThreadPoolExecutor(len(cmds)) as pool:
        results = list(pool.map(lambda c: run(c, home, timeout=t, mem_mb=args.mem_mb), cmds))
    results += part_two_commands(what, home, t, args.mem_mb)
    results.append(
        run(
            ["train", "--resume", "victim", "--max-steps", "6"], home, timeout=t, mem_mb=args.mem_mb
        )
    )
    results.append(run(["runs", "rm", "victim", "--yes"], home, timeout=t, mem_mb=args.mem_mb))
    after = snapshot(base, victim)
    outside_writes = sorted(k for k in after if before.get(k, after[k]) != after[k])
    outside_writes += sorted(k for k in after if k not in before)
    lost = sorted(k for k in before if k not in after)
    lost += [str(p) for p in planted if not os.path.lexists(p)]
    listed = json.loads(
        subprocess.run(
            [*LDLM, "runs", "list", "--json"], env=env_for(home), capture_output=True, text=True
        ).stdout
        or "[]"
    )
    bystander_ok = any(r["name"] == "bystander" and r["state"] == "finished" for r in listed)
    shutil.rmtree(base, ignore_errors=True)
    return {
        "damage": what,
        "results": results,
        "outside_writes": outside_writes,
        "lost": lost,
        "bystander_ok": bystander_ok,
        "violations": violations,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--damages", type=int, default=30, help="iterations (damaged copies)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per command")
    ap.add_argument("--mem-mb", type=int, default=3072, help="RLIMIT_AS per command")
    ap.add_argument("--verbose", action="store_true", help="print every iteration")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ldlm-hostile-") as tmp:
        work = Path(tmp)
        template = train_template(work, args.timeout)
        outcomes: Counter[str] = Counter()
        problems: list[str] = []
        writes = lost = bystander_broken = broken = 0
        for i in range(args.damages):
            it = one_iteration(i, rng, template, work, args)
            for r in it["results"]:
                outcomes[r["outcome"]] += 1
                if r["outcome"] not in ACCEPTABLE:
                    problems.append(f"#{i} {' '.join(r['cmd'])}: {r['outcome']} {r['detail']}")
            writes += len(it["outside_writes"])
            lost += len(it["lost"])
            bystander_broken += not it["bystander_ok"]
            for w in it["outside_writes"]:
                problems.append(f"#{i} wrote outside the run: {w}")
            for w in it["lost"]:
                problems.append(f"#{i} deleted a foreign file: {w}")
            broken += len(it["violations"])
            problems += [f"#{i} {v}" for v in it["violations"]]
            if args.verbose:
                rs = ", ".join(f"{' '.join(r['cmd'][:2])}={r['outcome']}" for r in it["results"])
                print(f"#{i:03d} {'; '.join(it['damage'])}\n      {rs}", flush=True)
    n_cmds = sum(outcomes.values())
    bad = {k: outcomes[k] for k in ("traceback", "hang", "memory", "killed", "not-one-line")}
    bad["other"] = sum(v for k, v in outcomes.items() if k not in (*ACCEPTABLE, *bad))
    print(
        f"hostile runs: {args.damages} damaged copies, {n_cmds} commands "
        f"(seed {args.seed}, {time.monotonic() - t0:.0f}s, timeout {args.timeout:.0f}s, "
        f"RLIMIT_AS {args.mem_mb} MB)"
    )
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(
        f"  tracebacks {bad['traceback']}, hangs {bad['hang']}, memory-cap kills "
        f"{bad['memory'] + bad['killed']}, multi-line errors {bad['not-one-line']}, "
        f"other exits {bad['other']}"
    )
    print(
        f"  writes outside the run {writes}, deletions of foreign files {lost}, "
        f"bystander broken {bystander_broken}, part-three promises broken {broken}"
    )
    for line in problems[:40]:
        print("  " + line)
    failures = sum(bad.values()) + writes + lost + bystander_broken + broken
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
