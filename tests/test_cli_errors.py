"""Every user error gives exit status 2 and ONE line on stderr starting with `ldlm: error:`.

Each case runs through ``ldlm_tui.cli.run`` (what the console script's ``main`` calls) in this
process, which keeps ~25 cases cheap; a representative subset also runs through the real
executable to prove the wiring (stderr, exit status, no traceback) end to end.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_many

from ldlm_tui.cli import run as cli_run


@pytest.fixture
def env(ldlm_home: Path, tmp_path: Path, corpus_file: Path, session_home: Path, demo_run):
    """Files for the error cases, and copies of the trained demo run to damage."""
    files = tmp_path / "files"
    files.mkdir()
    (files / "empty.txt").write_text("")
    (files / "blank.txt").write_text("  \n\n ")
    (files / "binary.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (files / "latin1.txt").write_bytes("café déjà vu, naïve façade\n".encode("latin-1") * 50)
    (files / "short.txt").write_text("A short text.\n" * 10)  # 140 chars < one sequence
    (files / "tiny.txt").write_text("Too short to evaluate.\n")
    (files / "bad.toml").write_text("[train\nmax_steps = \n")
    (files / "unknown.toml").write_text("[train]\nmax_stepz = 10\n")
    (files / "badtype.toml").write_text('[train]\nbatch_size = "many"\n')
    demo = session_home / "runs" / "demo"
    runs = ldlm_home / "runs"
    for name in ("demo", "v999", "otherfp"):
        shutil.copytree(demo, runs / name)
    _edit_meta(runs / "v999", format_version=999)
    _edit_meta(runs / "otherfp", config_fingerprint="0" * 64)
    return {"files": files, "home": ldlm_home, "corpus": corpus_file, "runs": runs}


def _edit_meta(run: Path, **changes) -> None:
    last = json.loads((run / "checkpoints" / "last.json").read_text())
    meta_path = run / "checkpoints" / last["name"] / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


Args = Callable[[dict], list]
TINY = ["--preset", "tiny", "--max-steps", "5"]

# (id, argv from the env fixture, fragment expected in the message)
CASES: list[tuple[str, Args, str]] = [
    ("missing-data", lambda e: ["train", "--data", e["files"] / "nope.txt", *TINY],
     "no such file, folder or corpus"),
    ("empty-corpus", lambda e: ["train", "--data", e["files"] / "empty.txt", *TINY], "is empty"),
    ("blank-corpus", lambda e: ["train", "--data", e["files"] / "blank.txt", *TINY], "is empty"),
    ("binary-corpus", lambda e: ["train", "--data", e["files"] / "binary.bin", *TINY],
     "is not UTF-8 text"),
    ("non-utf8-corpus", lambda e: ["train", "--data", e["files"] / "latin1.txt", *TINY],
     "is not UTF-8 text"),
    ("short-corpus", lambda e: ["train", "--data", e["files"] / "short.txt", *TINY],
     "corpus too short"),
    ("unknown-preset", lambda e: ["train", "--data", e["corpus"], "--preset", "huge"],
     "unknown preset 'huge'"),
    ("unknown-process", lambda e: ["train", "--process", "gauss"], "--process"),
    ("unknown-option", lambda e: ["train", "--colour", "red"], "No such option: --colour"),
    ("name-and-run-dir", lambda e: ["train", "--name", "a", "--run-dir", e["files"] / "r"],
     "--name and --run-dir cannot be used together"),
    ("resume-and-preset", lambda e: ["train", "--resume", "demo", "--preset", "tiny"],
     "--preset cannot be used with --resume"),
    ("resume-finished", lambda e: ["train", "--resume", "demo"], "already at step 30"),
    ("resume-unknown", lambda e: ["train", "--resume", "nosuch"], "no run named nosuch"),
    ("resume-other-fingerprint", lambda e: ["train", "--resume", "otherfp", "--max-steps", "60"],
     "different model configuration"),
    ("negative-max-steps", lambda e: ["train", "--data", e["corpus"], *TINY, "--max-steps", "-5"],
     "--max-steps must be at least 1"),
    ("negative-batch-size", lambda e: ["train", "--data", e["corpus"], "--batch-size", "-1"],
     "--batch-size must be in 1..65536"),
    ("bad-toml", lambda e: ["train", "--config", e["files"] / "bad.toml"],
     "cannot parse config file"),
    ("unknown-setting", lambda e: ["train", "--config", e["files"] / "unknown.toml"],
     "unknown setting train.max_stepz"),
    ("wrong-type-setting", lambda e: ["train", "--config", e["files"] / "badtype.toml"],
     "train.batch_size must be an integer"),
    ("missing-config", lambda e: ["train", "--config", e["files"] / "nope.toml"],
     "config file not found"),
    ("generate-unknown-run", lambda e: ["generate", "nosuch"], "no run named nosuch"),
    ("eval-unknown-run", lambda e: ["eval", "nosuch", "--json"], "no run named nosuch"),
    ("show-unknown-run", lambda e: ["runs", "show", "nosuch"], "no run named nosuch"),
    ("watch-unknown-run", lambda e: ["watch", "nosuch"], "no run named nosuch"),
    ("watch-typo", lambda e: ["watch", "dmeo"], "no run named dmeo (did you mean demo?)"),
    ("generate-typo", lambda e: ["generate", "deom"], "(did you mean demo?)"),
    ("unknown-run-path", lambda e: ["eval", e["files"] / "norun"], "no run at "),
    ("stop-unknown-run", lambda e: ["runs", "stop", "nosuch"], "no run named nosuch"),
    ("rm-unknown-run", lambda e: ["runs", "rm", "nosuch", "--yes"], "no run named nosuch"),
    ("stop-finished-run", lambda e: ["runs", "stop", "demo"], "is not running (state: finished)"),
    ("checkpoint-version", lambda e: ["generate", "v999", "--json"], "format version 999"),
    ("checkpoint-fingerprint", lambda e: ["eval", "otherfp"], "different model configuration"),
    ("generate-infill-too-long", lambda e: ["generate", "demo", "--prompt", "a[MASK*500]b"],
     "window"),
    ("generate-wrong-sampler", lambda e: ["generate", "demo", "--sampler", "uniform"],
     "does not fit a 'mask' model"),
    ("generate-bad-num", lambda e: ["generate", "demo", "--num", "0"], "--num must be at least 1"),
    ("eval-short-data", lambda e: ["eval", "demo", "--data", e["files"] / "tiny.txt"],
     "shorter than one sequence"),
    ("inspect-missing", lambda e: ["data", "inspect", e["files"] / "nope.txt"],
     "no such file, folder or corpus"),
]  # fmt: skip


def _check(rc: int, out: str, err: str, fragment: str) -> None:
    assert rc == 2, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ldlm: error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in err + out


@pytest.mark.parametrize(("argv", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_error(env, argv: Args, fragment: str, capsys: pytest.CaptureFixture) -> None:
    rc = cli_run([str(a) for a in argv(env)])
    out, err = capsys.readouterr()
    _check(rc, out, err, fragment)
    # Nothing was created for a run that could not start.
    runs = sorted(p.name for p in env["runs"].iterdir())
    assert runs == ["demo", "otherfp", "v999"], runs


def test_cuda_without_gpu(env, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is available here")
    rc = cli_run(["train", "--data", str(env["corpus"]), *TINY, "--device", "cuda"])
    out, err = capsys.readouterr()
    _check(rc, out, err, "no CUDA GPU is available")
    assert sorted(p.name for p in env["runs"].iterdir()) == ["demo", "otherfp", "v999"]


def test_rm_live_run_is_refused(env, capsys: pytest.CaptureFixture) -> None:
    from ldlm_engine import RunDir

    rd = RunDir(env["runs"] / "demo")
    rd.acquire_lock()  # as a trainer would hold it
    try:
        rc = cli_run(["runs", "rm", "demo", "--yes"])
    finally:
        rd.release_lock()
    out, err = capsys.readouterr()
    _check(rc, out, err, "is live")
    assert (env["runs"] / "demo" / "config.json").is_file()


SUBPROCESS_CASES = ("missing-data", "name-and-run-dir", "checkpoint-version", "watch-typo")


def test_errors_through_the_executable(env) -> None:
    """The console script prints the same single line and exits 2, without a traceback."""
    by_id = {c[0]: c for c in CASES}
    jobs = {k: (tuple(by_id[k][1](env)), env["home"]) for k in SUBPROCESS_CASES}
    results = run_many(jobs)
    for key, res in results.items():
        _check(res.returncode, res.stdout, res.stderr, by_id[key][2])
