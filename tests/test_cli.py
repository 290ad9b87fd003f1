"""End-to-end tests of the `ldlm` command line (real subprocesses, temporary LDLM_HOME).

The "done when" flow: train → eval --json → generate --json → train --detach + runs list →
runs stop → resume → Ctrl+C → infill → --num → runs rm → data inspect, plus the plain log
format and every --help. Trained runs are shared through session/module fixtures.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    DEMO_STEPS,
    LDLM,
    TRAIN_FLAGS,
    ldlm_env,
    read_events,
    run_ldlm,
    run_many,
    start_ldlm,
    wait_for,
)

STEP_LINE = re.compile(
    r"^step (\d+)/(\d+) \| epoch \d+\.\d\d \| loss \d+\.\d{3} \| [\d,]+ tok/s \| "
    r"lr \d\.\de[-+]\d\d \| eta (\d+h\d\dm|\d+m\d\ds|\d+s|-)$"
)
EVAL_LINE = re.compile(r"^eval step (\d+) \| val ≤ \d+\.\d\d bits/char \(±\d+\.\d\d\)")
SAMPLE_LINE = re.compile(r"^sample step (\d+) \| '.*'$")


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _last_checkpoint(run_dir: Path) -> int | None:
    try:
        return json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


def _runs_json(home: Path) -> dict[str, dict]:
    """`ldlm runs list --json`, run in this process, as {name: row}."""
    from ldlm_tui.cli import run as cli_run

    old = os.environ.get("LDLM_HOME")
    os.environ["LDLM_HOME"] = str(home)
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_run(["runs", "list", "--json"]) == 0
    finally:
        if old is None:
            del os.environ["LDLM_HOME"]
        else:
            os.environ["LDLM_HOME"] = old
    return {r["name"]: r for r in json.loads(out.getvalue())}


def _kill_if_running(run_dir: Path) -> None:
    """Safety net: SIGKILL a detached trainer this test started (by the pid in its lock)."""
    try:
        pid = int((run_dir / "lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return
    if pid > 0 and _status(run_dir).get("state") in ("started", "resumed", "paused"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- detached runs
# Started first (module fixture) so they train while the other tests run.


@pytest.fixture(scope="module")
def detached(session_home: Path, corpus_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """Two detached runs started first, so they train while other tests run: "bg" (20 steps,
    left to finish) and "long" (stopped by a test through `ldlm runs stop`)."""
    flags = ("train", "--data", corpus_file, *TRAIN_FLAGS, "--seq-len", "32", "--detach")
    long_home = tmp_path_factory.mktemp("long-home")
    res = run_many(
        {
            "bg": ((*flags, "--max-steps", "20", "--name", "bg"), session_home),
            "long": ((*flags, "--max-steps", "100000", "--name", "long"), long_home),
        }
    )
    runs = {"bg": session_home / "runs" / "bg", "long": long_home / "runs" / "long"}
    yield {"res": res, "dir": runs, "long_home": long_home}
    for run in runs.values():
        _kill_if_running(run)


def _check_detach_output(res: subprocess.CompletedProcess, name: str) -> None:
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.search(rf"started {name} in the background \(pid \d+\)", out), out
    assert f"ldlm watch {name}" in out
    assert "tail -f " in out and "train.log" in out
    assert f"ldlm runs stop {name}" in out
    assert res.stderr == ""


def test_detach_prints_how_to_follow(detached) -> None:
    for name in ("bg", "long"):
        _check_detach_output(detached["res"][name], name)
        # The run exists at once (the parent created it before spawning the trainer).
        assert (detached["dir"][name] / "config.json").is_file()


def test_runs_stop_live_detached_run(detached) -> None:
    run, home = detached["dir"]["long"], detached["long_home"]
    try:
        wait_for(
            lambda: any(e.get("event") == "step" for e in read_events(run)),
            90,
            "the detached run to log a step",
        )
        listed = _runs_json(home)  # in this process: cheaper than another torch import
        res = run_ldlm("runs", "stop", "long", home=home)
    finally:
        _kill_if_running(run)
    assert listed["long"]["state"] == "live"  # the detached run is listed, and live
    assert res.returncode == 0, res.stderr
    assert "stopped long at step" in res.stdout
    st = _status(run)
    assert st["state"] == "stopped"
    step = _last_checkpoint(run)
    assert step is not None and step == st["step"] and step >= 10
    assert "stopped long" in (run / "train.log").read_text()


def test_detached_resume_extends_a_finished_run(corpus_file: Path, tmp_path: Path) -> None:
    """`--resume RUN --max-steps N --detach` on a finished run trains it on in the background
    (the child once refused: "already finished", whatever config.json said)."""
    flags = ("--data", corpus_file, *TRAIN_FLAGS, "--seq-len", "32", "--name", "ext")
    res = run_ldlm("train", *flags, "--max-steps", "4", home=tmp_path)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "ext"
    assert _status(run).get("state") == "finished"
    try:
        res = run_ldlm("train", "--resume", "ext", "--max-steps", "8", "--detach", home=tmp_path)
        assert res.returncode == 0, res.stderr
        assert re.search(r"resumed ext in the background \(pid \d+\)", res.stdout), res.stdout
        wait_for(
            lambda: _status(run).get("state") == "finished" and _status(run).get("step") == 8,
            120,
            "the detached resume to reach step 8",
        )
    finally:
        _kill_if_running(run)
    assert "already finished" not in (run / "train.log").read_text()
    assert _last_checkpoint(run) == 8


# --------------------------------------------------------------------------- help, version


HELP_COMMANDS = [
    [],
    ["train"],
    ["generate"],
    ["eval"],
    ["watch"],
    ["runs"],
    ["runs", "list"],
    ["runs", "show"],
    ["runs", "stop"],
    ["runs", "rm"],
    ["data"],
    ["data", "inspect"],
]


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    home = tmp_path_factory.mktemp("help-home")
    jobs = {" ".join(c): ((*c, "--help"), home) for c in HELP_COMMANDS}
    jobs["--version"] = (("--version",), home)
    return run_many(jobs, parallel=4)


@pytest.mark.parametrize("cmd", [" ".join(c) for c in HELP_COMMANDS], ids=lambda c: c or "ldlm")
def test_help(helps, cmd: str) -> None:
    res = helps[cmd]
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: ldlm")
    assert "Examples:" in res.stdout
    assert res.stderr == ""


def test_train_and_generate_help_document_the_contract(helps) -> None:
    out = helps["train"].stdout
    for flag in (
        "--data", "--preset", "--process", "--tokenizer", "--epochs", "--max-steps",
        "--batch-size", "--seq-len", "--lr", "--precision", "--device", "--seed",
        "--eval-every", "--sample-every", "--checkpoint-every", "--name", "--run-dir",
        "--resume", "--detach", "--config",
    ):  # fmt: skip
        assert flag in out, flag
    gen = helps["generate"].stdout
    assert "[MASK*N]" in gen and "--animate / --no-animate" in gen and "--json" in gen


def test_version_and_light_import(helps, tmp_path: Path) -> None:
    assert helps["--version"].returncode == 0
    assert re.fullmatch(r"ldlm \S+\n", helps["--version"].stdout)
    # Headless commands must not pay for Textual (nor torch) just to start.
    code = "import sys, ldlm_tui.cli; print(sorted({m.split('.')[0] for m in sys.modules}))"
    probe = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ldlm_env(tmp_path)
    )
    assert probe.returncode == 0, probe.stderr
    assert "'textual'" not in probe.stdout and "'torch'" not in probe.stdout, probe.stdout


def test_python_m_entry_point(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ldlm_tui.cli", "--version"],
        capture_output=True, text=True, env=ldlm_env(tmp_path), timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.startswith("ldlm "), res.stderr
    assert LDLM  # the console script (or this fallback) is what the other tests run


# --------------------------------------------------------------------------- train (plain)


def test_train_plain_log_format(demo_run, session_home: Path) -> None:
    out = demo_run.stdout.splitlines()
    assert out[0].startswith("training demo  (") and str(session_home) in out[0]
    steps = [m for line in out if (m := STEP_LINE.match(line))]
    assert [int(m.group(1)) for m in steps] == [10, 20, 30]
    assert all(int(m.group(2)) == DEMO_STEPS for m in steps)
    evals = [int(m.group(1)) for line in out if (m := EVAL_LINE.match(line))]
    assert evals == [15, 30]
    samples = [int(m.group(1)) for line in out if (m := SAMPLE_LINE.match(line))]
    assert samples == [15, 30]
    assert any(line.startswith(f"finished demo at step {DEMO_STEPS}") for line in out)
    assert any("ldlm generate demo" in line for line in out)
    assert any("ldlm eval demo" in line for line in out)
    assert "\x1b[" not in demo_run.stdout  # no terminal escapes without a TTY
    run = session_home / "runs" / "demo"
    assert _last_checkpoint(run) == DEMO_STEPS
    assert _status(run)["state"] == "finished"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "tiny" and cfg["model"]["seq_len"] == 72
    assert Path(cfg["data"]["source"]).is_absolute()


# --------------------------------------------------------------------------- the rest, at once
# Commands that only read the shared demo run, or work on copies in their own folders, run
# concurrently; each test below checks one of them.

INFILL = "The [MASK*5] is [MASK] good."


@pytest.fixture(scope="module")
def batch(
    demo_run, session_home: Path, corpus_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    work = tmp_path_factory.mktemp("cli-batch")
    demo = session_home / "runs" / "demo"
    homes = {k: work / k for k in ("resume", "rm_no", "rm_yes", "layers")}
    shutil.copytree(demo, homes["resume"] / "demo-copy")
    shutil.copytree(demo, homes["rm_no"] / "runs" / "old")
    shutil.copytree(demo, homes["rm_yes"] / "runs" / "old")
    (homes["layers"] / "config").mkdir(parents=True)
    (homes["layers"] / "config" / "config.toml").write_text(
        'preset = "tiny"\n[model]\nseq_len = 48\n[train]\nbatch_size = 2\nlr = 0.002\n'
    )
    exp = homes["layers"] / "exp.toml"
    exp.write_text("[model]\nseq_len = 32\n[train]\nmax_steps = 50\nseed = 7\neval_tokens = 256\n")
    quick = ("--max-tokens", "512", "--samples", "2")
    jobs = {
        "eval_json": (("eval", "demo", "--json", *quick), session_home),
        "gen_json": (("generate", "demo", "--prompt", "The ", "--length", "64", "--json"),
                     session_home),
        "gen_long": (("generate", "demo", "--prompt", "The ", "--length", "200", "--steps", "60",
                      "--json"), session_home),
        "gen_infill_num": (("generate", "demo", "--prompt", INFILL, "--num", "3",
                            "--temperature", "1.0", "--json"), session_home),
        "resume": (("train", "--resume", homes["resume"] / "demo-copy", "--max-steps", "40",
                    "--eval-every", "0"), homes["resume"]),
        "rm_no": (("runs", "rm", "old"), homes["rm_no"]),
        "rm_yes": (("runs", "rm", "old", "--yes"), homes["rm_yes"]),
        "layers": (("train", "--data", corpus_file, "--config", exp, "--max-steps", "2",
                    "--eval-every", "0", "--sample-every", "0", "--name", "layers"),
                   homes["layers"]),
    }  # fmt: skip
    return {"res": run_many(jobs, parallel=8), "homes": homes}


def _ok(batch: dict, key: str) -> subprocess.CompletedProcess:
    res = batch["res"][key]
    assert res.returncode == 0, f"{key}: rc {res.returncode}\n{res.stderr}\n{res.stdout}"
    return res


def test_eval_json(batch) -> None:
    d = json.loads(_ok(batch, "eval_json").stdout)
    for key in ("val_bits_per_char", "val_bits_per_token", "stderr_bits_per_char"):
        assert isinstance(d[key], float) and math.isfinite(d[key]) and d[key] >= 0, key
    assert 0 < d["val_bits_per_char"] < 10
    assert d["exact"] is False and d["bound"] == "upper"
    assert d["run"] == "demo" and d["step"] == DEMO_STEPS and d["process"] == "mask"


def test_generate_json(batch) -> None:
    d = json.loads(_ok(batch, "gen_json").stdout)
    assert d["text"].startswith("The ")
    assert d["generated_tokens"] == 64
    assert len(d["text"]) == 4 + 64  # char tokenizer: one character per token
    assert d["nfe"] >= 1 and d["steps"] >= 1 and d["tokens_per_s"] > 0
    assert d["sampler"] == "random"  # the tiny preset's default (see config.py)
    assert d["run"] == "demo" and d["step"] == DEMO_STEPS


def test_generate_past_the_models_window(batch) -> None:
    """200 tokens from a seq_len-72 masked model: windowed continuation, not an error."""
    d = json.loads(_ok(batch, "gen_long").stdout)
    assert d["generated_tokens"] == 200 and d["total_tokens"] == 204
    assert d["text"].startswith("The ")
    assert 3 <= d["nfe"] <= 60  # the steps budget is shared by the windows


def test_generate_infill_keeps_context(batch) -> None:
    for d in json.loads(_ok(batch, "gen_infill_num").stdout)["samples"]:
        text = d["text"]
        assert d["generated_tokens"] == 6
        assert len(text) == len("The  is  good.") + 6
        assert text.startswith("The ") and text.endswith(" good.")
        assert text[9:13] == " is "


def test_generate_num(batch) -> None:
    samples = json.loads(_ok(batch, "gen_infill_num").stdout)["samples"]
    assert [s["seed"] for s in samples] == [0, 1, 2]
    assert all(s["prompt"] == INFILL and s["run"] == "demo" for s in samples)


def test_resume_extends_steps(batch) -> None:
    res = _ok(batch, "resume")
    run = batch["homes"]["resume"] / "demo-copy"
    assert f"resuming demo-copy from step {DEMO_STEPS}" in res.stdout
    steps = [e["step"] for e in read_events(run) if e["event"] == "step"]
    assert max(steps) == 40 and steps.count(DEMO_STEPS) == 1 and 40 in steps
    assert _last_checkpoint(run) == 40
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 40
    assert "finished demo-copy at step 40" in res.stdout


def test_runs_rm(batch) -> None:
    refused = batch["res"]["rm_no"]
    assert refused.returncode == 2  # stdin is not a terminal and there is no --yes
    assert refused.stderr.startswith("ldlm: error: refusing to delete run old without --yes")
    assert (batch["homes"]["rm_no"] / "runs" / "old" / "config.json").is_file()
    res = _ok(batch, "rm_yes")
    assert res.stdout.startswith("deleted old")
    assert not (batch["homes"]["rm_yes"] / "runs" / "old").exists()


def test_config_layers(batch) -> None:
    """preset < user config < --config file < flags."""
    _ok(batch, "layers")
    run = batch["homes"]["layers"] / "runs" / "layers"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "tiny"  # from the user config
    assert cfg["model"]["d_model"] == 64  # the tiny preset
    assert cfg["train"]["batch_size"] == 2 and cfg["train"]["lr"] == 0.002  # user config
    assert cfg["model"]["seq_len"] == 32 and cfg["train"]["seed"] == 7  # --config file
    assert cfg["train"]["max_steps"] == 2  # flag
    assert _status(run)["state"] == "finished"


def test_detached_run_finishes(detached, demo_run, session_home: Path) -> None:
    run = detached["dir"]["bg"]
    wait_for(lambda: _status(run).get("state") == "finished", 90, "the detached run to finish")
    log = (run / "train.log").read_text()
    assert "training bg" in log
    assert any(STEP_LINE.match(line) for line in log.splitlines()), log
    assert "finished bg at step 20" in log
    assert _last_checkpoint(run) == 20
    res = run_ldlm("runs", "list", home=session_home)
    assert res.returncode == 0, res.stderr
    plain = res.stdout.splitlines()
    assert plain[0].split()[:3] == ["NAME", "STATE", "STEP"]
    assert any(line.split()[:3] == ["bg", "finished", "20"] for line in plain), plain
    assert any(line.split()[:3] == ["demo", "finished", str(DEMO_STEPS)] for line in plain)
    rows = _runs_json(session_home)
    assert rows["bg"]["state"] == "finished" and rows["bg"]["step"] == 20
    assert rows["demo"]["state"] == "finished" and rows["demo"]["step"] == DEMO_STEPS
    assert rows["demo"]["preset"] == "tiny" and rows["demo"]["process"] == "mask"
    assert rows["demo"]["best_val_bits_per_char"] > 0


# --------------------------------------------------------------------------- Ctrl+C


def test_sigint_saves_and_exits_130(corpus_file: Path, tmp_path: Path) -> None:
    proc = start_ldlm("train", "--data", corpus_file, *TRAIN_FLAGS, "--seq-len", "32",
                      "--max-steps", "100000", "--name", "sig", home=tmp_path)  # fmt: skip
    run = tmp_path / "runs" / "sig"
    try:
        wait_for(
            lambda: (
                proc.poll() is not None or any(e.get("event") == "step" for e in read_events(run))
            ),
            90,
            "the first logged step",
        )
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"ldlm train exited early ({proc.returncode}):\n{out}\n{err}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err + out
    assert "Traceback" not in err
    st = _status(run)
    assert st["state"] == "stopped" and "SIGINT" in st.get("message", "")
    assert _last_checkpoint(run) == st["step"] >= 10
    assert "stopped sig at step" in out and "ldlm train --resume sig" in out


# --------------------------------------------------------------------------- plain output
# The human-readable formats, checked in this process (cheap: torch is loaded once).


def test_outputs_in_process(
    demo_run, session_home: Path, corpus_file: Path, monkeypatch, capsys
) -> None:
    from ldlm_tui.cli import run as cli_run

    monkeypatch.setenv("LDLM_HOME", str(session_home))

    def plain(*argv: str) -> list[str]:
        assert cli_run([str(a) for a in argv]) == 0
        return capsys.readouterr().out.splitlines()

    line = plain("eval", "demo", "--max-tokens", "512", "--samples", "2")[0]
    assert re.fullmatch(
        r"val ≤ \d+\.\d\d bits/char \(± \d+\.\d\d\), \d+\.\d\d bits/token — "
        r"upper bound \(mask process\)",
        line,
    ), line
    out = plain("generate", "demo", "--prompt", "A", "--length", "8", "--num", "2")
    assert out[0] == "── sample 1/2 (seed 0) ──" and out[1].startswith("A")
    assert out[2] == "── sample 2/2 (seed 1) ──" and len(out) == 4
    d = json.loads("\n".join(plain("runs", "show", "demo", "--json")))
    assert d["name"] == "demo" and d["state"] == "finished"
    assert d["checkpoints"][-1] == DEMO_STEPS and d["last_checkpoint"] == DEMO_STEPS
    assert d["config"]["preset"] == "tiny" and d["last_eval"]["step"] == DEMO_STEPS
    show = "\n".join(plain("runs", "show", "demo"))
    assert "state      finished" in show and "checkpoints 15, 30" in show
    assert "last eval  step 30 · val ≤ " in show
    d = json.loads("\n".join(plain("data", "inspect", str(corpus_file), "--json")))
    text = corpus_file.read_text(encoding="utf-8")
    assert d["chars"] == len(text) and d["bytes"] == len(text.encode())
    assert d["lines"] == text.count("\n") and d["distinct_chars"] == len(set(text))
    assert d["seq_len"] == 128
    char, word, bpe = (d["tokenizers"][k] for k in ("char", "word", "bpe"))
    assert char["tokens"] == len(text) and char["vocab_size"] == len(set(text)) + 5
    assert char["train_tokens"] + char["val_tokens"] == len(text) and char["fits"]
    assert word["tokens"] < char["tokens"] and bpe["tokens"] < char["tokens"]
    assert 5 < bpe["vocab_size"] <= 2048
    inspect = "\n".join(plain("data", "inspect", str(corpus_file)))
    assert "distinct characters" in inspect and "chars/token" in inspect
    for kind in ("char", "word", "bpe"):
        row = rf"^  {kind} +[\d,]+ +[\d,]+ +\d+\.\d\d +[\d,]+ +[\d,]+$"
        assert re.search(row, inspect, re.M), inspect


def test_render_frame_never_parses_markup() -> None:
    from types import SimpleNamespace

    from ldlm_tui.progress import MASK_GLYPH, render_frame

    class Tok:
        kind = "char"

        def token_text(self, i: int) -> str:
            return {0: "[bold]", 1: "x", 2: "y"}[i]

    frame = SimpleNamespace(
        tokens=[0, 1, 2, 1],
        masked=[False, False, False, True],
        changed=[2],
        confidence=[1.0, 0.2, 0.9, 0.1],
        fixed=[True, False, False, False],
    )
    text = render_frame(frame, Tok())
    assert text.plain == "[bold]xy" + MASK_GLYPH
    styles = {text.plain[s.start : s.end]: str(s.style) for s in text.spans}
    assert styles["[bold]"] == "dim" and "reverse" in styles["y"]
