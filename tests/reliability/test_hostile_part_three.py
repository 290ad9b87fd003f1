"""Hostile runs, part three: deleting is all or nothing, ``runs stop`` signals only its own
trainer, names from a run folder cannot drive the terminal, settings are never rewritten.

Each case plays the probe that found it against a real tiny run (issue 23): a read-only or
immutable ``checkpoints/``, a delete SIGKILLed at every point, a ``status.json`` naming an
unrelated process or pid 1, a run folder named with an OSC escape sequence, a block size or
config version that used to be silently changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import LDLM, ldlm_env, run_ldlm
from reliability_helpers import (  # noqa: F401
    ANSI,
    assert_one_error_line,
    cli,
    one_torch_thread,
    run,
    train_run,
    trained,
)

from ldlm_engine import ConfigError, RunChoices, get_preset
from ldlm_engine import run_admin as A
from ldlm_engine.layout import owned_entries
from ldlm_engine.plans import build_run_config
from ldlm_engine.proc_identity import cmdline_digest, start_ticks, trainer_problem
from ldlm_engine.runs import RunDir, delete_run, list_runs
from ldlm_engine.safe_text import visible

REPO = Path(__file__).resolve().parents[2]
OSC = "\x1b]0;pwned\x07"  # retitles the terminal when printed raw
NOBODY = 65534


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` with its bytes (None for folders)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = None if p.is_dir() else p.read_bytes()
    return out


def _names(home: Path | None = None) -> list[str]:
    return [i.name for i in list_runs(home)]


# --------------------------------------------------------------------------- rm: all or nothing


@pytest.fixture
def open_home(monkeypatch: pytest.MonkeyPatch):
    """An LDLM_HOME every user can reach (pytest's own temporary folders are root-only), so
    the test can act as an ordinary user."""
    base = Path(tempfile.mkdtemp(prefix="ldlm-h23-", dir="/tmp"))
    base.chmod(0o755)
    home = base / "home"
    (home / "runs").mkdir(parents=True)
    monkeypatch.setenv("LDLM_HOME", str(home))
    try:
        yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def as_owner(tree: Path):
    """Act as an ordinary user who owns ``tree``: root ignores a read-only folder, so a root
    test runner takes the effective ids of ``nobody`` (after chown) for the block."""
    if os.geteuid() != 0:
        yield
        return
    for p in [tree, *tree.rglob("*")]:
        os.lchown(p, NOBODY, NOBODY)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_rm_with_a_read_only_checkpoints_folder_deletes_nothing(trained, open_home) -> None:
    victim = open_home / "runs" / "part"
    shutil.copytree(trained, victim)
    before = _tree(victim)
    (victim / "checkpoints").chmod(0o555)
    with as_owner(open_home / "runs"):
        with pytest.raises(A.RunError, match=r"read-only for this user.*nothing was deleted"):
            A.delete_run_dir(RunDir.open("part"))
        problems = A.removal_problems(A.removal_order(victim, *owned_entries(victim)[:2]))
    assert problems and all("checkpoints" in p for p in problems)
    assert _tree(victim) == before  # tokenizer.json, .ldlm-run, lock ... all still there
    assert RunDir.open("part").liveness() == "finished"  # and the run still loads
    (victim / "checkpoints").chmod(0o755)
    with as_owner(open_home / "runs"):  # the same user, once the folder is writable: all gone
        assert A.removal_problems(A.removal_order(victim, *owned_entries(victim)[:2])) == []
        A.delete_run_dir(RunDir.open("part"))
    assert not victim.exists()


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.parametrize("target", ["checkpoints/last.json", "checkpoints"])
def test_rm_with_an_immutable_entry_deletes_nothing(run, target, capsys) -> None:
    """``chattr +i`` stops root too: the check must see it before the first unlink."""
    before = _tree(run)
    if not _chattr("+i", run / target):
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE)")
    try:
        code, _, err = cli(capsys, "runs", "rm", "victim", "--yes")
        assert code == 2
        assert_one_error_line(err, "immutable or append-only", "nothing was deleted")
        assert _tree(run) == before
    finally:
        _chattr("-i", run / target)
    assert RunDir.open("victim").liveness() == "finished"


def test_rm_with_a_mount_point_inside_deletes_nothing(run, tmp_path) -> None:
    step = sorted((run / "checkpoints").glob("step-*"))[0]
    moved = tmp_path / "moved"
    shutil.move(step, moved)  # mount on an empty step folder (what a mount hides is not ours)
    step.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(step)], capture_output=True).returncode:
        pytest.skip("cannot mount here")
    try:
        before = _tree(run)
        with pytest.raises(A.RunError, match=r"is a mount point.*nothing was deleted"):
            delete_run("victim")
        assert _tree(run) == before
    finally:
        subprocess.run(["umount", str(step)], check=True)


KILLER = """
import os, signal, sys
from ldlm_engine.runs import delete_run
from ldlm_engine import run_admin  # noqa: F401  (imported before counting)

k, n = int(sys.argv[2]), 0

def hook(event, args):
    global n
    if event in ("os.remove", "os.rmdir"):  # raised before the file system call
        if n == k:
            os.kill(os.getpid(), signal.SIGKILL)
        n += 1

sys.addaudithook(hook)
delete_run(sys.argv[1])
print(n)
"""


def test_rm_killed_at_every_point_leaves_a_run_that_lists_and_rm_finishes(
    trained, ldlm_home
) -> None:
    """A real ``delete_run`` SIGKILLs itself just before its k-th unlink/rmdir, for every k:
    what is left is the intact run, or one ``runs list`` shows and ``runs rm`` finishes, or
    an empty folder that does not block the name."""
    victim = ldlm_home / "runs" / "victim"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cfg = json.loads((trained / "config.json").read_text())
    k, total = 0, None
    while total is None:
        shutil.copytree(trained, victim)
        p = subprocess.run(
            [sys.executable, "-c", KILLER, "victim", str(k)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if p.returncode == 0:  # k is past the last removal: the delete finished
            total = int(p.stdout)
            assert not victim.exists()
            break
        assert p.returncode == -signal.SIGKILL, p.stderr
        assert victim.is_dir(), f"killed before removal {k}: the folder itself went"
        if k == 0:
            assert RunDir.open("victim").liveness() == "finished"  # nothing removed yet
        if any(victim.iterdir()):
            assert "victim" in _names(), f"killed before removal {k}: not listed"
            delete_run("victim")  # rm finishes it
            assert not victim.exists()
        else:  # only the final rmdir was left: the name is free for a new run
            RunDir.create(cfg, name="victim")
            shutil.rmtree(victim)
        k += 1
    assert total == k and total >= 10


def test_an_older_interrupted_delete_is_listed_and_finished(run, capsys) -> None:
    """What 93b737b left after a SIGKILL: checkpoints/ and status.json, no marker, no
    config.json. It is shown as incomplete; ``train --name`` says why the name is taken."""
    for name in (".ldlm-run", "config.json", "tokenizer.json", "metrics.jsonl", "summary.json"):
        (run / name).unlink()
    rows = {i.name: i for i in list_runs()}
    assert rows["victim"].state == "damaged" and "interrupted delete" in rows["victim"].reason
    code, out, _ = cli(capsys, "runs", "list")
    assert code == 0 and "victim: incomplete (an interrupted delete)" in out
    with pytest.raises(A.RunError, match=r"already exists.*interrupted delete"):
        RunDir.create(get_preset("tiny").to_dict(), name="victim")
    code, out, _ = cli(capsys, "runs", "rm", "victim", "--yes")
    assert code == 0 and not run.exists()
    (run.parent / "mine").mkdir()
    (run.parent / "mine" / "notes.txt").write_text("a user's folder, not an ldlm leftover")
    assert "mine" not in _names()  # a foreign file: not ldlm's to show or delete


# --------------------------------------------------------------------------- stop: own trainer


def _plant_status(run: Path, pid: int, **extra) -> None:
    now = time.time()
    st = {"state": "started", "pid": pid, "host": socket.gethostname(), "heartbeat": now}
    (run / "status.json").write_text(json.dumps({**st, "step": 4, "started_at": now, **extra}))


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("identity", ["none", "planted"])
def test_stop_never_signals_an_unrelated_pid_named_in_status(run, capsys, identity) -> None:
    """The lock is held by another process and status.json names an unrelated ``sleep``
    (even with that sleep's real start time and command line planted): it must survive."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run / "lock")], stdout=subprocess.PIPE, text=True
    )
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        extra = {}
        if identity == "planted":
            extra = {"pid_start": start_ticks(sleeper.pid)}
            extra["cmdline_sha256"] = cmdline_digest(sleeper.pid)
        _plant_status(run, sleeper.pid, **extra)
        assert RunDir.open("victim").liveness() == "live"
        code, out, err = cli(capsys, "runs", "stop", "victim", "--timeout", "1.5")
        assert code == 1 and "did not stop within" in err
        assert "not verified" in out and f"pid {sleeper.pid}" in out
        assert "SIGTERM" not in out
        assert sleeper.poll() is None and holder.poll() is None  # both alive
        assert json.loads((run / "control.json").read_text())["action"] == "stop"
    finally:
        for p in (sleeper, holder):
            p.kill()
            p.wait()


def test_stop_with_pid_1_or_a_future_heartbeat_refuses_at_once(run, capsys) -> None:
    _plant_status(run, 1)  # fresh heartbeat, pid 1 exists, nobody holds the lock
    code, _, err = cli(capsys, "runs", "stop", "victim")  # default 60 s wait: must not wait
    assert code == 2
    assert_one_error_line(err, "could not find its trainer", "no process was signalled")
    assert json.loads((run / "control.json").read_text())["action"] == "stop"
    _plant_status(run, 1, heartbeat=time.time() + 3600)  # a heartbeat from the future
    code, _, err = cli(capsys, "runs", "stop", "victim")
    assert code == 2
    assert_one_error_line(err, "is not running (state: dead)")
    assert trainer_problem(1, {"pid_start": 1}, run / "lock") != ""
    assert trainer_problem(os.getpid(), {"pid_start": 1}, run / "lock") != ""


TRAINER = """
import sys, time
from ldlm_engine.runs import RunDir
run = RunDir(sys.argv[1])
run.acquire_lock()
run.write_status("started", step=4)
print("ready", flush=True)
time.sleep(60)  # never polls control.json: only SIGTERM can stop it
"""


def test_stop_signals_the_verified_trainer(run, capsys) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        st = json.loads((run / "status.json").read_text())
        assert st["pid"] == child.pid and st["pid_start"] == start_ticks(child.pid)
        assert trainer_problem(child.pid, st, run / "lock") == ""
        threading.Thread(target=child.wait, daemon=True).start()  # reaped once it exits
        code, out, _ = cli(capsys, "runs", "stop", "victim", "--timeout", "3")
        assert code == 0, out
        assert f"trainer pid {child.pid}" in out and f"sent SIGTERM to pid {child.pid}" in out
        assert child.wait(10) == -signal.SIGTERM
    finally:
        child.kill()
        child.wait()


# --------------------------------------------------------------------------- names and text


def test_visible_shows_every_control_character() -> None:
    assert visible("plain-name_1.x") == "plain-name_1.x"
    assert visible("ev" + OSC + "il") == "ev\\x1b]0;pwned\\x07il"
    assert visible("a\nb\rc\x9bd\x7f") == "a\\x0ab\\x0dc\\x9bd\\x7f"
    assert visible("\u202eabc\u200b") == "\\u202eabc\\u200b"  # bidi override, zero width
    assert visible("caf\udce9") == "caf\\xe9"  # a non-UTF-8 byte from os.listdir
    assert visible("Ångström 東京") == "Ångström 東京"
    obeyed = ("Cc", "Cf", "Cs", "Zl", "Zp")  # what a terminal acts on or cannot print
    for c in map(chr, range(0x110000)):
        assert not any(unicodedata.category(x) in obeyed for x in visible(c)), repr(c)


def test_an_osc_run_name_reaches_no_terminal(run, ldlm_home) -> None:
    evil = run.parent / f"ev{OSC}il"
    run.rename(evil)
    status = json.loads((evil / "status.json").read_text())
    status["message"] = f"done {OSC}"
    (evil / "status.json").write_text(json.dumps(status))
    res = run_ldlm("runs", "list", home=ldlm_home)
    assert res.returncode == 0 and not ANSI.search(res.stdout + res.stderr)
    assert "ev\\x1b]0;pwned\\x07il" in res.stdout
    res = run_ldlm("runs", "list", "--json", home=ldlm_home)
    assert res.returncode == 0 and not ANSI.search(res.stdout)
    assert json.loads(res.stdout)[0]["name"] == evil.name  # JSON keeps the real name
    # In a real terminal (rich's table): colours, but no OSC and no BEL.
    master, slave = pty.openpty()
    env = {**ldlm_env(ldlm_home), "TERM": "xterm-256color"}
    env.pop("NO_COLOR")
    p = subprocess.Popen([*LDLM, "runs", "list"], env=env, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    with contextlib.suppress(OSError):
        while chunk := os.read(master, 65536):
            chunks.append(chunk)
    os.close(master)
    assert p.wait(60) == 0
    shown = b"".join(chunks).decode()
    assert "\x1b]" not in shown and "\x07" not in shown and "pwned" in shown


def test_run_show_and_errors_print_run_strings_escaped(run, capsys) -> None:
    cfg = json.loads((run / "config.json").read_text())
    cfg["preset"], cfg["data"]["source"] = f"tiny{OSC}", f"/data/{OSC}.txt"
    (run / "config.json").write_text(json.dumps(cfg))
    status = json.loads((run / "status.json").read_text())
    status["message"] = f"finished {OSC}\r\x1b[2K"
    (run / "status.json").write_text(json.dumps(status))
    code, out, err = cli(capsys, "runs", "show", "victim")
    assert code == 0 and not ANSI.search(out + err) and "\r" not in out
    assert "tiny\\x1b]0;pwned\\x07" in out and "/data/\\x1b]0;pwned\\x07.txt" in out
    status["state"] = f"x{OSC}"  # a state string is shown in the error line
    (run / "status.json").write_text(json.dumps(status))
    code, out, err = cli(capsys, "runs", "stop", "victim")
    assert code == 2 and not ANSI.search(out + err)
    assert_one_error_line(err, "is not running (state: x\\x1b]0;pwned\\x07)")
    (run / "checkpoints" / f"notes{OSC}").write_text("mine")  # a foreign name in an error
    code, out, err = cli(capsys, "runs", "rm", "victim", "--yes")
    assert code == 2 and not ANSI.search(out + err)


@pytest.mark.anyio
async def test_the_app_shows_an_osc_name_escaped(run, tmp_path, monkeypatch) -> None:
    from textual.command import CommandList
    from textual.widgets import DataTable
    from tui_helpers import wait_for

    from ldlm_tui.app import LdlmApp

    monkeypatch.setenv("LDLM_STATE_DIR", str(tmp_path / "state"))
    evil = run.parent / f"ev{OSC}il"
    run.rename(evil)
    app = LdlmApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="the run")
        cells = [str(c) for c in table.get_row(evil.name)]
        assert "ev\\x1b]0;pwned\\x07il" in cells and not any("\x1b" in c for c in cells)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"open run ev")

        def prompts() -> list[str]:
            options = app.screen.query_one(CommandList).options
            return [str(o.prompt) for o in options if "pwned" in str(o.prompt)]

        await wait_for(pilot, prompts, timeout=10, what="the run in the palette")
        assert all("\x1b" not in p and "\x07" not in p for p in prompts())
        assert any("ev\\x1b]0;pwned\\x07il" in p for p in prompts())


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("size", [65, 128, 10**9, 5])
def test_a_block_size_that_does_not_divide_is_refused_whatever_the_flags(tmp_path, size):
    conf = tmp_path / "block.toml"
    conf.write_text(f"[process]\nblock_size = {size}\n")
    for process in ("block", None):  # with --process block, and without
        choices = RunChoices(preset="tiny", config_file=conf, process=process)
        # a size past any seq_len is refused by its range, the others for not dividing
        refusal = "must be in 1..65536" if size > 65_536 else rf"\({size}\) must divide"
        with pytest.raises(ConfigError, match=rf"block_size {refusal}"):
            build_run_config(choices)


def test_block_size_refusal_is_one_line_and_presets_still_switch(tmp_path, corpus_file) -> None:
    conf = tmp_path / "block.toml"
    conf.write_text("[process]\nblock_size = 5\n")
    res = run_ldlm(
        "train", "--data", corpus_file, "--preset", "tiny", "--process", "block",
        "--config", conf, "--max-steps", "1", "--name", "b5", home=tmp_path / "home",
    )  # fmt: skip
    assert res.returncode == 2
    assert_one_error_line(res.stderr, "block_size (5) must divide")
    assert not (tmp_path / "home" / "runs" / "b5").exists()
    for preset in ("default", "tiny", "seed", "small", "base"):  # a preset's own block size
        for process in ("block", "mask", "uniform", "ar"):
            cfg = build_run_config(RunChoices(preset=preset, process=process))
            assert cfg.process.kind == process
            assert cfg.model.seq_len % cfg.process.block_size == 0


@pytest.mark.parametrize("version", ["99", '"1"', "true", "0"])
def test_an_unknown_config_version_is_refused(tmp_path, version) -> None:
    conf = tmp_path / "settings.toml"
    conf.write_text(f"version = {version}\n[train]\nlr = 0.001\n")
    with pytest.raises(ConfigError, match=r"settings.toml: config version .* is not supported"):
        build_run_config(RunChoices(preset="tiny", config_file=conf))
    conf.write_text("version = 1\n[train]\nlr = 0.001\n")
    assert build_run_config(RunChoices(preset="tiny", config_file=conf)).train.lr == 0.001


def test_status_identity_fields_are_type_checked(run) -> None:
    """A planted identity of the wrong type marks the run damaged, never reaches a check."""
    _plant_status(run, 1, pid_start="soon", cmdline_sha256=7)
    info = {i.name: i for i in list_runs()}["victim"]
    assert info.state == "damaged" and "pid_start" in info.reason
    assert "pid_start" not in RunDir.open("victim").read_status()


def test_a_held_lock_alone_is_not_proof(run) -> None:
    """trainer_problem reads real /proc entries: this process holds the lock file open but
    the recorded identity is another process's."""
    fd = os.open(run / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            st = {"pid_start": start_ticks(sleeper.pid)}
            assert "does not hold the run's lock" in trainer_problem(sleeper.pid, st, run / "lock")
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        os.close(fd)
