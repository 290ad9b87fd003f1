"""Bad corpora: each one either trains correctly or fails with one clear line.

Through the engine (``load_corpus`` then a few real training steps with the char tokenizer) and,
for a representative few, through the real ``ldlm train`` executable (exit 2, one stderr line,
no run directory left behind).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_many
from engine_helpers import TEXT, tiny_config
from reliability_helpers import assert_one_error_line, one_torch_thread  # noqa: F401

from ldlm_engine import DataError, Trainer, load_corpus

EMOJI = (
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 and combining e\u0301 a\u0308 o\u0302 n\u0303, "
    "zalgo Z\u0351\u0352a\u0353l\u0354g\u0355o, Hangul 한국어, Devanagari हिन्दी, RTL עברית.\n"
)
# CRLF, lone CR and LF in one file: every kind becomes LF.
MIXED = TEXT.replace("\n", "\r\n", 3).replace("log.", "log.\r")
MIXED_AS_LF = TEXT.replace("log.", "log.\n")


def _files(root: Path) -> dict[str, Path]:
    """Every bad corpus, written into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        f[name] = root / name

    put("empty.txt", b"")
    put("whitespace.txt", b" \t\n\r\n   \n\x0b\x0c" * 100)
    put("binary.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    put("latin1.txt", "café déjà vu, naïve façade\n".encode("latin-1") * 200)
    put("utf16.txt", TEXT.encode("utf-16"))
    put("surrogates.txt", b"text with a lone surrogate \xed\xa0\x80 inside\n" * 100)
    put("short.txt", b"far too short\n")
    put("mixed-endings.txt", MIXED.encode())
    put("emoji.txt", (EMOJI * 60).encode("utf-8"))
    put("bom.txt", b"\xef\xbb\xbf" + TEXT.encode())
    put("late-nul.txt", TEXT.encode() * 2 + b"\x00 a NUL after the sniffed prefix\n")
    no_text = root / "no-text"
    (no_text / "sub").mkdir(parents=True)
    (no_text / "notes.md").write_text("markdown, not .txt")
    (no_text / "sub" / "data.bin").write_bytes(b"\x00\x01")
    f["no-text"] = no_text
    empties = root / "empty-txts"
    empties.mkdir()
    (empties / "a.txt").write_text("")
    (empties / "b.txt").write_text("\n\n")
    f["empty-txts"] = empties
    fifo = root / "pipe.txt"
    os.mkfifo(fifo)
    f["pipe.txt"] = fifo
    return f


# name -> (fails with this fragment | None = trains, extra check of the loaded text)
CASES: dict[str, tuple[str | None, Callable[[str], bool] | None]] = {
    "empty.txt": ("is empty", None),
    "whitespace.txt": ("is empty", None),
    "binary.png": ("not UTF-8 text", None),
    "latin1.txt": ("not UTF-8 text", None),
    "utf16.txt": ("not UTF-8 text", None),
    "surrogates.txt": ("not UTF-8 text", None),
    "short.txt": ("too short", None),
    "no-text": ("has no .txt files", None),
    "empty-txts": ("is empty", None),
    "pipe.txt": ("not a regular file", None),
    "mixed-endings.txt": (None, lambda t: t == MIXED_AS_LF),
    "emoji.txt": (None, lambda t: t == EMOJI * 60),
    "bom.txt": (None, lambda t: t == TEXT),
    "late-nul.txt": (None, lambda t: "\x00" in t),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _files(tmp_path_factory.mktemp("bad-corpora"))


def _train_steps(text: str, steps: int = 3) -> Trainer:
    cfg = tiny_config("mask", max_steps=steps)
    cfg.train.eval_tokens = 256
    tr = Trainer(cfg, text=text)
    assert tr.run() == "finished"
    return tr


@pytest.mark.parametrize("name", list(CASES))
def test_bad_corpus_trains_or_fails_in_one_line(files, name: str) -> None:
    fragment, check = CASES[name]
    path = files[name]
    t0 = time.perf_counter()
    stage = "load"
    try:
        text = load_corpus(str(path)).text
        stage = "train"
        tr = _train_steps(text)
    except DataError as e:
        msg = str(e)
        assert fragment is not None, f"{name} should train, got: {msg}"
        assert fragment in msg and "\n" not in msg, msg
        assert stage == "train" or str(path) in msg, msg  # load errors name the path
    else:
        assert fragment is None, f"{name} trained but should fail with {fragment!r}"
        assert check is not None and check(text)
        assert tr.step == 3
        # The char tokenizer is lossless on what it trained on, whatever the script.
        assert tr.tokenizer.decode(tr.tokenizer.encode(text[:2000])) == text[:2000]
    assert time.perf_counter() - t0 < 30


def test_single_50mb_line_trains_with_bounded_memory(tmp_path: Path) -> None:
    """One 50 MB line (no newline at all) loads, encodes and trains; memory stays a few copies."""
    path = tmp_path / "one-line.txt"
    unit = b"the quick brown fox jumps over the lazy dog; "
    size = 50 * 2**20
    with open(path, "wb") as f:
        f.write(unit * (size // len(unit)))
    size = path.stat().st_size
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        text = load_corpus(str(path)).text
        assert "\n" not in text and len(text) == size
        tr = _train_steps(text, steps=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tr.splits.train.numel() + tr.splits.val.numel() == size  # every character a token
    assert peak < 6 * size, f"peak {peak / 2**20:.0f} MB for a {size / 2**20:.0f} MB corpus"
    assert time.perf_counter() - t0 < 45


def test_bad_corpora_through_the_executable(files, tmp_path: Path) -> None:
    """`ldlm train --data BAD`: exit 2, one `ldlm: error:` line, and no run directory made."""
    jobs = {
        name: (("train", "--data", files[name], "--preset", "tiny", "--max-steps", "2"),
               tmp_path / name)
        for name in ("binary.png", "no-text")
    }  # fmt: skip
    results = run_many(jobs, parallel=2, timeout=120)
    for name, res in results.items():
        fragment = CASES[name][0]
        assert res.returncode == 2, (name, res.stderr)
        assert_one_error_line(res.stderr, fragment)
        runs = tmp_path / name / "runs"
        assert not runs.exists() or not any(runs.iterdir()), f"{name} left a run behind"
