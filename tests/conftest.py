"""Shared fixtures: a small real corpus, isolated ldlm folders, and a runner for the `ldlm` CLI.

The CLI tests run the real executable in subprocesses with a temporary ``LDLM_HOME`` (plus
``LDLM_CACHE_DIR`` and an empty ``LDLM_CONFIG_DIR``, so nothing of the user's leaks in), one
torch thread each (several processes share two cores) and no colour.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2``) each worker gets one torch thread, and so do the
    processes it starts: two workers on two cores, never four threads fighting for them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def _ldlm_command() -> list[str]:
    exe = Path(sys.executable).parent / "ldlm"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "ldlm_tui.cli"]


LDLM = _ldlm_command()


def make_corpus_text(target_chars: int = 40_000) -> str:
    """~40 KB of varied English prose, deterministically, from CPython's own reference docs.

    Topics are visited in a fixed stride so the text mixes many subjects; no network, no files.
    """
    from pydoc_data.topics import topics

    keys = sorted(topics)
    parts: list[str] = []
    size = 0
    i = 0
    while size < target_chars:
        body = topics[keys[(i * 37) % len(keys)]].strip()
        i += 1
        chunk = body[:1500]
        parts.append(chunk)
        size += len(chunk) + 2
    return "\n\n".join(parts)[:target_chars] + "\n"


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~40 KB UTF-8 text file (shared by the whole session; do not modify)."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(make_corpus_text(), encoding="utf-8")
    return path


def ldlm_env(home: Path) -> dict[str, str]:
    """Environment for an `ldlm` subprocess rooted at ``home``."""
    env = dict(os.environ)
    env.update(
        {
            "LDLM_HOME": str(home),
            "LDLM_CACHE_DIR": str(home / "cache"),
            "LDLM_CONFIG_DIR": str(home / "config"),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
    )
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


@pytest.fixture
def ldlm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LDLM_HOME (and LDLM_CACHE_DIR, LDLM_CONFIG_DIR) for this test's process."""
    home = tmp_path / "ldlm-home"
    home.mkdir()
    monkeypatch.setenv("LDLM_HOME", str(home))
    monkeypatch.setenv("LDLM_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("LDLM_CONFIG_DIR", str(home / "config"))
    return home


Runner = Callable[..., subprocess.CompletedProcess]


def run_ldlm(
    *args: str | os.PathLike[str],
    home: Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run `ldlm ARGS` to completion with stdin closed; returns text stdout/stderr."""
    return subprocess.run(
        [*LDLM, *map(str, args)],
        env={**ldlm_env(home), **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
    )


def run_many(
    jobs: dict[str, tuple[tuple, Path]], *, parallel: int = 6, timeout: float = 180
) -> dict[str, subprocess.CompletedProcess]:
    """Run several independent `ldlm` commands at once: ``{key: (args, home)}`` -> results.

    Most of a short command's time is importing torch; overlapping them keeps the suite fast
    on a couple of shared cores.
    """
    pending = list(jobs.items())
    running: dict[str, tuple[subprocess.Popen, tuple]] = {}
    results: dict[str, subprocess.CompletedProcess] = {}
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            key, (args, home) = pending.pop(0)
            running[key] = (start_ldlm(*args, home=home), args)
        for key, (proc, args) in list(running.items()):
            if proc.poll() is None and time.monotonic() < deadline:
                continue
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
            results[key] = subprocess.CompletedProcess(
                [*LDLM, *map(str, args)], proc.returncode, out, err
            )
            del running[key]
        time.sleep(0.05)
    return results


def start_ldlm(*args: str | os.PathLike[str], home: Path) -> subprocess.Popen:
    """Start `ldlm ARGS` in the background (stdout/stderr captured as text)."""
    return subprocess.Popen(
        [*LDLM, *map(str, args)],
        env=ldlm_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def read_events(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def wait_for(cond: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LDLM_HOME shared by the session's trained runs (tests must not change its runs)."""
    return tmp_path_factory.mktemp("ldlm-session-home")


# Small but real: seq_len 72 leaves room for a 4-char prompt plus 64 generated tokens. A masked
# model (the tiny preset is block diffusion), so that infill and every masked sampler apply.
DEMO_STEPS = 30
TRAIN_FLAGS = (
    "--preset", "tiny", "--process", "mask", "--tokenizer", "char", "--seq-len", "72",
    "--batch-size", "4",
    "--eval-every", "15", "--sample-every", "15", "--checkpoint-every", "15",
)  # fmt: skip


@pytest.fixture(scope="session")
def demo_run(session_home: Path, corpus_file: Path) -> subprocess.CompletedProcess:
    """`ldlm train --data corpus.txt --preset tiny --max-steps 30 --name demo` (non-TTY)."""
    res = run_ldlm(
        "train", "--data", corpus_file, *TRAIN_FLAGS, "--max-steps", DEMO_STEPS, "--name", "demo",
        home=session_home,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    return res


@pytest.fixture
def anyio_backend() -> str:
    """The Pilot tests (``pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """For the app's tests: an empty LDLM_HOME, cache and remembered state of their own, and
    one torch thread (a trainer in the app shares 2 cores with the UI). Files that need
    another ``home`` define their own."""
    import torch

    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LDLM_STATE_DIR", str(tmp_path / "state"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path / "home"
    torch.set_num_threads(threads)
