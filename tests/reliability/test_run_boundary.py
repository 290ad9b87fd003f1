"""A run folder is a boundary: ldlm deletes only its own files, never writes or reads past it.

Each test plays a careless or hostile user against a real tiny run: a project folder that
happens to hold a config.json, symlinks planted where ldlm writes, wrongly typed JSON, FIFOs
and /dev/zero where a file should be, absurd numbers. The answer must be one line (exit 2)
or the right result, never a traceback, a hang, a write outside the run or a lost file.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import run_ldlm
from reliability_helpers import assert_one_error_line, one_torch_thread, run, train_run, trained  # noqa: F401

from ldlm_engine import ConfigError, RunConfig, RunDir, Trainer, load_config_file, load_tokenizer
from ldlm_engine.checkpoint import load_checkpoint, save_checkpoint
from ldlm_engine.errors import CheckpointError, LdlmError, RunError
from ldlm_engine.fileio import read_bounded
from ldlm_engine.layout import RUN_MARKER, list_checkpoint_steps
from ldlm_engine.runs import delete_run, list_runs, run_info

SECRET = "the user's own data\n"


def _secret(folder: Path, name: str = "notes.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(SECRET)
    return p


def _parallel(jobs: dict[str, dict], home: Path) -> dict:
    """Run several `ldlm` executables at once (most of each is importing torch)."""
    with ThreadPoolExecutor(6) as pool:
        futures = {
            k: pool.submit(run_ldlm, *j.pop("args"), home=home, timeout=90, **j)
            for k, j in jobs.items()
        }
        return {k: f.result() for k, f in futures.items()}


def _no_traceback(res) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode in (0, 1, 2), (res.returncode, res.stderr)
    if res.returncode == 2:
        assert_one_error_line(res.stderr)


# --------------------------------------------------------------------------- deleting


def test_bare_name_never_means_a_folder_here(tmp_path: Path, ldlm_home: Path, monkeypatch) -> None:
    """`cd work; ldlm runs rm myproj` used to delete ./myproj (it held a config.json)."""
    proj = tmp_path / "work" / "myproj"
    secret = _secret(proj)
    (proj / "config.json").write_text("{}")
    monkeypatch.chdir(proj.parent)
    with pytest.raises(RunError, match="no run named myproj"):
        RunDir.open("myproj")
    with pytest.raises(RunError, match="no run named"):
        delete_run("myproj")
    # Written as a path it is found, but ldlm did not make it, so it is not deleted.
    assert RunDir.open("./myproj").path == proj
    with pytest.raises(RunError, match="did not create it"):
        delete_run("./myproj")
    monkeypatch.chdir(proj)
    with pytest.raises(RunError, match="current directory"):
        delete_run(".")
    assert secret.read_text() == SECRET and (proj / "config.json").exists()


def test_run_dir_that_holds_user_files_is_refused(tmp_path: Path, ldlm_home: Path) -> None:
    folder = tmp_path / "project"
    secret = _secret(folder)
    with pytest.raises(RunError, match="not empty and is not an ldlm run"):
        RunDir.create(RunConfig().to_dict(), run_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    rd = RunDir.create(RunConfig().to_dict(), run_dir=empty)
    assert (rd.path / RUN_MARKER).is_file()
    # Files a user adds later are never deleted with the run: nothing is, until they move.
    for where in (empty, empty / "checkpoints", empty / "checkpoints" / "step-00000002"):
        p = _secret(where)
        with pytest.raises(RunError, match="did not write"):
            delete_run(empty)
        assert p.read_text() == SECRET
        p.unlink()
    shutil.rmtree(empty / "checkpoints" / "step-00000002")
    assert delete_run(empty) == empty and not empty.exists()
    assert secret.read_text() == SECRET


def test_protected_folders_are_never_deleted(tmp_path: Path, ldlm_home: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    RunDir.create(RunConfig().to_dict(), run_dir=home)  # marker and all: still $HOME
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(RunError, match="protected"):
        delete_run(home)
    monkeypatch.chdir(home / "checkpoints")
    with pytest.raises(RunError, match=r"protected|current directory"):
        delete_run("..")
    assert (home / "config.json").is_file()


def test_runs_of_older_versions_still_work(run: Path, ldlm_home: Path, tmp_path: Path) -> None:
    """No marker: under the runs root it is listed, resumed and deleted; elsewhere kept."""
    (run / RUN_MARKER).unlink()
    assert [i.name for i in list_runs()] == ["victim"] and list_runs()[0].state == "finished"
    cfg = RunConfig.from_dict(RunDir.open("victim").read_config())
    cfg.train.max_steps = 6
    rd = RunDir.open("victim")
    try:
        assert Trainer(cfg, run_dir=rd, resume=True).run() == "finished"
    finally:
        rd.close()
    assert list_checkpoint_steps(run / "checkpoints")[-1] == 6
    outside = tmp_path / "moved"
    shutil.copytree(run, outside)
    with pytest.raises(RunError, match="did not create it"):
        delete_run(outside)
    assert delete_run("victim") == run and not run.exists()


# --------------------------------------------------------------------------- writing


def test_symlinked_lock_and_metrics_never_write_outside(run: Path, tmp_path: Path) -> None:
    outside = _secret(tmp_path / "outside")
    for name in ("lock", "metrics.jsonl"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(outside)
    rd = RunDir.open("victim")
    with pytest.raises(RunError, match="symbolic link"):
        rd.acquire_lock()
    with pytest.raises(RunError, match="symbolic link"):
        rd.append_event({"event": "step", "step": 5})
    assert rd.read_metrics() == [] and not rd.is_locked()
    assert outside.read_text() == SECRET


def test_symlinked_checkpoints_folder(run: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run / "checkpoints", elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(CheckpointError, match="symbolic link"):
        load_checkpoint(run / "checkpoints")
    with pytest.raises(CheckpointError, match="symbolic link"):
        save_checkpoint(run / "checkpoints", model_state={}, optimizer_state=None, meta={"step": 9})
    assert sorted(p.name for p in elsewhere.iterdir()) == before
    assert list_checkpoint_steps(run / "checkpoints") == []


def test_planted_temp_file_is_never_written(tmp_path: Path, monkeypatch) -> None:
    """A link planted at an atomic write's temporary name is neither followed nor removed."""
    from ldlm_engine import fileio

    outside = _secret(tmp_path / "outside")
    monkeypatch.setattr(fileio.time, "monotonic_ns", lambda: 7)  # a predictable name
    planted = tmp_path / f".tmp-status.json-{os.getpid()}-7"
    planted.symlink_to(outside)
    with pytest.raises(FileExistsError):
        fileio.atomic_write_text(tmp_path / "status.json", "{}")
    assert outside.read_text() == SECRET and planted.is_symlink()


# --------------------------------------------------------------------------- damaged runs

BAD = {
    "process-is-a-string": ("config.json", lambda p: _edit(p, process="mask")),
    "config-deep": ("config.json", lambda p: p.write_text("[" * 100_000)),
    "config-dev-zero": ("config.json", lambda p: _link(p, "/dev/zero")),
    "config-is-a-folder": ("config.json", lambda p: (p.unlink(), p.mkdir())),
    "status-step-string": ("status.json", lambda p: _edit(p, step="x", heartbeat="soon")),
    "status-fifo": ("status.json", lambda p: (p.unlink(), os.mkfifo(p))),
    "status-list": ("status.json", lambda p: p.write_text("[1, 2]")),
}
REPAIRED = {  # caches: rebuilt from metrics.jsonl, the run is not even damaged
    "summary-created-yesterday": ("summary.json", lambda p: _edit(p, created="yesterday")),
    "summary-all-wrong": (
        "summary.json",
        lambda p: _edit(p, step="x", best_val_bits_per_char="low", updated=[1]),
    ),
    "summary-dev-zero": ("summary.json", lambda p: _link(p, "/dev/zero")),
    "summary-huge": ("summary.json", lambda p: os.truncate(p, 1 << 30)),
}


def _edit(p: Path, **changes) -> None:
    d = json.loads(p.read_text())
    d.update(changes)
    p.write_text(json.dumps(d))


def _link(p: Path, target: str) -> None:
    p.unlink(missing_ok=True)
    p.symlink_to(target)


@pytest.mark.parametrize("kind", [*BAD, *REPAIRED])
def test_one_damaged_run_never_breaks_the_others(run: Path, kind: str) -> None:
    shutil.copytree(run, run.parent / "bystander")
    fname, damage = {**BAD, **REPAIRED}[kind]
    damage(run / fname)
    tracemalloc.start()
    try:
        infos = {i.name: i for i in list_runs()}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MB allocated to list two runs"
    assert infos["bystander"].state == "finished" and infos["bystander"].step == 4
    victim = infos["victim"]
    if kind in BAD:
        assert victim.state == "damaged" and fname in victim.reason and "\n" not in victim.reason
    else:
        assert victim.state == "finished" and victim.step == 4 and victim.reason == ""
        assert isinstance(victim.created, float) and victim.created > 0
        assert victim.best_val_bits_per_char == infos["bystander"].best_val_bits_per_char


def test_damaged_summary_never_blocks_resume(run: Path) -> None:
    """A mistyped summary.json used to crash every resume (int("x") in the summary update)."""
    _edit(run / "summary.json", step="x", best_val_bits_per_char="low")
    cfg = RunConfig.from_dict(RunDir.open("victim").read_config())
    cfg.train.max_steps, cfg.train.eval_every = 6, 6
    rd = RunDir.open("victim")
    try:
        assert Trainer(cfg, run_dir=rd, resume=True).run() == "finished"
    finally:
        rd.close()
    s = json.loads((run / "summary.json").read_text())
    assert s["step"] == 6 and isinstance(s["best_val_bits_per_char"], float)
    assert run_info(RunDir.open("victim")).step == 6


def test_cli_list_and_show_with_damaged_runs(run: Path, ldlm_home: Path) -> None:
    for kind, (fname, damage) in {**BAD, **REPAIRED}.items():
        dst = run.parent / kind
        shutil.copytree(run, dst)
        damage(dst / fname)
    mistyped = run.parent / "mistyped-metrics"
    shutil.copytree(run, mistyped)
    with open(mistyped / "metrics.jsonl", "a") as f:
        f.write('{"event": "step", "step": "x", "loss": "low", "tokens_per_s": [1]}\n')
        f.write('{"event": "eval", "step": 5, "val_bits_per_char": "good"}\n')
        f.write('{"event": "sample", "step": 5, "text": 7}\n')
    _edit(mistyped / "status.json", step="x", pid="me")
    jobs = {"list": dict(args=("runs", "list")), "json": dict(args=("runs", "list", "--json"))}
    for name in (*BAD, *REPAIRED, "mistyped-metrics"):
        jobs[name] = dict(args=("runs", "show", name))
    res = _parallel(jobs, ldlm_home)
    for r in res.values():
        _no_traceback(r)
    assert res["list"].returncode == 0
    rows = {r["name"]: r for r in json.loads(res["json"].stdout)}
    assert rows["victim"]["state"] == "finished"
    assert {rows[k]["state"] for k in BAD} == {"damaged"}
    assert {rows[k]["state"] for k in REPAIRED} == {"finished"}
    assert res["mistyped-metrics"].returncode == 0
    assert res["summary-created-yesterday"].returncode == 0


# --------------------------------------------------------------------------- bounded reads


def _finishes(fn, timeout: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it blocks."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} blocked"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_read_bounded_refuses_fifos_devices_links_and_huge_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    huge = tmp_path / "huge"
    huge.write_bytes(b"")
    os.truncate(huge, 10 << 30)  # sparse: 10 GB that costs no disk
    for path, reason in ((fifo, "regular"), (zero, "symbolic link"), (huge, "larger than")):
        with pytest.raises(OSError, match=reason):
            _finishes(lambda p=path: read_bounded(p, 1 << 20))
    with pytest.raises(OSError, match="regular"):
        read_bounded("/dev/zero", 1 << 20)
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    assert read_bounded(small, 100) == b"x" * 100
    with pytest.raises(OSError, match="larger than"):
        read_bounded(small, 99)


def test_config_and_tokenizer_files_are_bounded(tmp_path: Path, run: Path) -> None:
    fifo = tmp_path / "exp.toml"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ConfigError, match="regular"):
            _finishes(lambda p=path: load_config_file(p))
    tok = run / "tokenizer.json"
    _link(tok, "/dev/zero")
    with pytest.raises(CheckpointError, match="symbolic link"):
        _finishes(lambda: load_tokenizer(tok))
    tok.unlink()
    os.mkfifo(tok)
    with pytest.raises(CheckpointError, match="regular"):
        _finishes(lambda: load_tokenizer(tok))


def test_huge_control_json_is_never_read(run: Path) -> None:
    """A 50 MB control.json used to be read at every training step."""
    rd = RunDir.open("victim")
    rd.acquire_lock()
    try:
        with open(run / "control.json", "w") as f:
            f.write('{"action": "stop", "id": "x", "time": 1.0, "pad": "')
            f.write("x" * (50 << 20) + '"}')
        tracemalloc.start()
        try:
            assert [rd.poll_control() for _ in range(20)] == [None] * 20
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20, f"{peak} bytes read for a refused control.json"
        rd.request("pause")  # a real request still arrives
        assert rd.poll_control() == "pause"
    finally:
        rd.close()


# --------------------------------------------------------------------------- numbers and names


@pytest.mark.parametrize(
    "bad",
    [
        {"train": {"seed": 10**20}},
        {"train": {"seed": -1}},
        {"sample": {"seed": 2**63}},
        {"sample": {"temperature": float("inf")}},
        {"sample": {"temperature": 1e-320}},
        {"train": {"sample_temperature": float("inf")}},
        {"train": {"grad_clip": float("inf")}},
        {"train": {"weight_decay": float("inf")}},
        {"train": {"warmup_steps": 10**30}},
    ],
    ids=lambda d: json.dumps(d),
)
def test_numbers_are_range_checked(bad: dict) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(json.loads(json.dumps(bad)))
    assert "\n" not in str(info.value)


def test_run_names_are_checked() -> None:
    for bad, fragment in (
        ("demo\n", "control characters"),
        ("de\x1b[2Jmo", "control characters"),
        ("x" * 256, "too long"),
        ("./" + "x" * 300, "too long"),
        ("~nouser-ldlm-test/x", "cannot expand"),
    ):
        with pytest.raises(RunError, match=fragment):
            RunDir.open(bad)
        with pytest.raises(RunError, match=fragment):
            delete_run(bad)
    with pytest.raises(RunError, match="invalid run name"):
        RunDir.create({}, name="demo\n")


# --------------------------------------------------------------------------- fallback


def test_falls_back_to_the_last_intact_checkpoint(run: Path) -> None:
    (run / "checkpoints" / "step-00000004" / "state.safetensors").unlink()
    ck = load_checkpoint(run / "checkpoints")
    assert ck.step == 2 and ck.fallback_from == "step-00000004"
    assert "step-00000004" in ck.note and "missing" in ck.note and "\n" not in ck.note
    (run / "checkpoints" / "last.json").unlink()  # no pointer: the newest that verifies
    ck = load_checkpoint(run / "checkpoints")
    assert ck.step == 2 and ck.fallback_from == "step-00000004" and "missing" in ck.note
    shutil.rmtree(run / "checkpoints" / "step-00000004")  # the folder itself gone
    assert load_checkpoint(run / "checkpoints").step == 2
    (run / "checkpoints" / "step-00000002" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(run / "checkpoints")


def test_altered_checkpoint_names_the_intact_one(run: Path) -> None:
    f = run / "checkpoints" / "step-00000004" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as info:
        load_checkpoint(run / "checkpoints")
    assert "step-00000002 is intact" in str(info.value)


def test_cli_generate_eval_and_resume_fall_back(run: Path, ldlm_home: Path) -> None:
    """The newest checkpoint lost a file: every command uses the previous intact one."""
    (run / "checkpoints" / "step-00000004" / "model.safetensors").unlink()
    res = _parallel(
        {
            "generate": dict(args=("generate", "victim", "--no-animate", "--length", "8")),
            "eval": dict(args=("eval", "victim", "--max-tokens", "256")),
            "resume": dict(args=("train", "--resume", "victim", "--max-steps", "6")),
        },
        ldlm_home,
    )
    for r in res.values():
        assert r.returncode == 0, r.stderr + r.stdout
        assert "Traceback" not in r.stderr
    assert list_checkpoint_steps(run / "checkpoints")[-1] == 6
    assert load_checkpoint(run / "checkpoints").step == 6


def test_hostile_runs_never_raise_anything_but_ldlm_errors(run: Path) -> None:
    """The engine's whole surface on a run full of planted links, FIFOs and wrong types."""
    for name in ("config.json", "status.json", "summary.json", "control.json", "lock"):
        _link(run / name, "/dev/zero")
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    _link(run / "checkpoints" / "last.json", "/dev/zero")
    rd = RunDir.open("victim")

    def surface():
        info = run_info(rd)
        assert info.state == "damaged"
        assert rd.read_metrics() == [] and rd.read_status() == {}
        assert rd.poll_control() is None and rd.latest_checkpoint_step() is None
        assert rd.read_summary()["step"] == 0
        with pytest.raises(LdlmError):
            rd.read_config()
        with pytest.raises(RunError):
            rd.acquire_lock()
        return load_checkpoint(rd.checkpoints_dir).step  # no pointer: the newest intact

    assert _finishes(surface) == 4


# --------------------------------------------------------------------------- the executable


def test_cli_refusals_are_one_line_and_touch_nothing(
    run: Path, ldlm_home: Path, tmp_path: Path, corpus_file: Path
) -> None:
    """Each case through `ldlm` itself: exit 2, one line, no file lost, no run left behind."""
    proj = tmp_path / "work" / "myproj"
    secrets = [_secret(proj), _secret(tmp_path / "project")]
    (proj / "config.json").write_text("{}")
    own = tmp_path / "mine"
    RunDir.create(RunConfig().to_dict(), run_dir=own)  # a real run, but we stand in it
    (ldlm_home / "runs" / "link").symlink_to(run)
    outside = _secret(tmp_path / "outside")
    (run / "lock").unlink(missing_ok=True)
    (run / "lock").symlink_to(outside)  # `train --resume` used to truncate this file
    fifo = tmp_path / "exp.toml"
    os.mkfifo(fifo)
    train = ("train", "--data", corpus_file)
    cases = {
        "rm-bare-name": (("runs", "rm", "myproj", "--yes"), proj.parent, "no run named myproj"),
        "rm-dot": (("runs", "rm", ".", "--yes"), proj, "current directory"),
        "rm-own-dot": (("runs", "rm", ".", "--yes"), own, "current directory"),
        "rm-parent": (("runs", "rm", "..", "--yes"), own / "checkpoints", "current directory"),
        "rm-symlinked-run": (("runs", "rm", "link", "--yes"), None, "symbolic link"),
        "run-dir-not-empty": ((*train, "--run-dir", tmp_path / "project"), None, "not empty"),
        "config-fifo": ((*train, "--config", fifo), None, "not a regular file"),
        "config-dev-zero": ((*train, "--config", "/dev/zero"), None, "not a regular file"),
        "seed-too-big": ((*train, "--seed", "99999999999999999999"), None, "--seed"),
        "temperature-inf": (
            ("generate", "victim", "--no-animate", "--temperature", "inf"),
            None,
            "temperature",
        ),
        "name-too-long": (("runs", "show", "x" * 300), None, "too long"),
        "name-newline": (("runs", "rm", "victim\n", "--yes"), None, "control characters"),
        "bad-tilde": (("generate", "~nouser-ldlm-test/x"), None, "cannot expand"),
        "resume-lock-symlink": (("train", "--resume", "victim", "--max-steps", "6"), None, "lock"),
    }
    res = _parallel({k: dict(args=a, cwd=cwd) for k, (a, cwd, _) in cases.items()}, ldlm_home)
    for key, (_, _, fragment) in cases.items():
        assert res[key].returncode == 2, (key, res[key].stderr, res[key].stdout)
        assert_one_error_line(res[key].stderr, fragment)
    assert all(p.read_text() == SECRET for p in (*secrets, outside))
    assert (proj / "config.json").is_file() and (own / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "project").iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in (ldlm_home / "runs").iterdir()) == ["link", "victim"]
