"""Corpora: files, folders, builtin, and checksum-pinned downloads (served from loopback)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from pathlib import Path

import pytest

import ldlm_engine.corpora as corpora
from ldlm_engine.corpora import NAMED_CORPORA, NamedCorpus, list_corpora, load_corpus
from ldlm_engine.errors import DataError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("no_proxy", "NO_PROXY"):  # loopback test servers must never go via a proxy
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_builtin_loads_offline():
    c = load_corpus("builtin", offline=True)
    assert c.name == "builtin (Python reference docs)"
    assert len(c.text.encode("utf-8")) > 100_000
    assert "\r" not in c.text
    assert load_corpus("builtin").text == c.text  # deterministic order


def test_file_bom_and_newlines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\xef\xbb\xbfline one\r\nline two\rline three\n caf\xc3\xa9")
    c = load_corpus(str(p))
    assert c.text == "line one\nline two\nline three\n café"
    assert c.name == "a.txt"


def test_folder_sorted_recursive(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("B")
    (tmp_path / "d" / "a.txt").write_text("A")
    (tmp_path / "d" / "sub" / "c.txt").write_text("C")
    (tmp_path / "d" / "ignored.bin").write_bytes(b"\0\0\0")
    assert load_corpus(str(tmp_path / "d")).text == "A\n\nB\n\nC"


@pytest.mark.parametrize(
    "setup, needle",
    [
        (lambda d: d / "missing.txt", "no such file, folder or corpus"),
        (lambda d: (d / "empty_dir").mkdir() or d / "empty_dir", "no .txt files"),
        (lambda d: _write(d / "e.txt", b""), "empty"),
        (lambda d: _write(d / "w.txt", b"  \n\t\r\n "), "empty"),
        (lambda d: _write(d / "bin.txt", b"abc\x00def"), "not UTF-8 text (byte 3"),
        (lambda d: _write(d / "latin.txt", b"caf\xe9 au lait"), "not UTF-8 text (byte 3)"),
    ],
)
def test_file_errors_name_the_path(tmp_path, setup, needle):
    path = setup(tmp_path)
    with pytest.raises(DataError) as e:
        load_corpus(str(path))
    msg = _one_line(e)
    assert needle in msg and str(path) in msg


def test_folder_with_bad_file_names_that_file(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "good.txt").write_text("fine")
    bad = _write(d / "z_bad.txt", b"\xff\xfe\x00h\x00i")
    with pytest.raises(DataError) as e:
        load_corpus(str(d))
    assert str(bad) in _one_line(e)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_permission_denied(tmp_path):
    p = _write(tmp_path / "secret.txt", b"hidden")
    p.chmod(0)
    try:
        with pytest.raises(DataError, match="permission denied") as e:
            load_corpus(str(p))
        assert str(p) in _one_line(e)
    finally:
        p.chmod(0o600)


def test_unknown_spec_lists_named():
    with pytest.raises(DataError) as e:
        load_corpus("no-such-thing-xyz")
    assert "builtin, shakespeare" in _one_line(e)


def test_shakespeare_checksum_matches_shared_copy():
    shared = Path("/work/shared/data/tinyshakespeare.txt")
    if not shared.is_file():
        pytest.skip("no shared copy of tiny Shakespeare")
    digest = hashlib.sha256(shared.read_bytes()).hexdigest()
    assert NAMED_CORPORA["shakespeare"].sha256 == digest


# --------------------------------------------------------------------------- downloads

PAYLOAD = b"First Citizen:\r\nBefore we proceed any further, hear me speak.\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.hits = 0
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/input.txt"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tiny_named(monkeypatch):
    """Register a small named corpus pinned to PAYLOAD's checksum."""
    nc = NamedCorpus(
        url="http://127.0.0.1:9/unused",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        description="test corpus",
    )
    monkeypatch.setitem(NAMED_CORPORA, "tinytest", nc)
    return nc


def test_download_verifies_caches_and_reuses(server, tiny_named, monkeypatch, tmp_path):
    monkeypatch.setenv("LDLM_CORPUS_URL_TINYTEST", server)
    c = load_corpus("tinytest")
    assert c.text == PAYLOAD.decode().replace("\r\n", "\n")
    cached = tmp_path / "cache" / "corpora" / "tinytest.txt"
    assert cached.read_bytes() == PAYLOAD
    assert _Handler.hits == 1
    assert load_corpus("tinytest", offline=True).text == c.text  # from cache, no network
    assert _Handler.hits == 1
    cached.write_bytes(b"tampered")  # a damaged cache is detected and re-downloaded
    assert load_corpus("tinytest").text == c.text
    assert _Handler.hits == 2 and cached.read_bytes() == PAYLOAD
    assert ("tinytest", "test corpus - cached") in list_corpora()


def test_download_checksum_mismatch_caches_nothing(server, monkeypatch, tmp_path):
    monkeypatch.setenv("LDLM_CORPUS_URL_SHAKESPEARE", server)  # serves the wrong bytes
    with pytest.raises(DataError) as e:
        load_corpus("shakespeare")
    msg = _one_line(e)
    assert "sha256" in msg and "nothing was cached" in msg
    assert not (tmp_path / "cache" / "corpora" / "shakespeare.txt").exists()
    names = dict(list_corpora())
    assert "builtin" in names and "not downloaded" in names["shakespeare"]


def test_offline_and_unreachable(monkeypatch):
    with pytest.raises(DataError, match="offline") as e:
        load_corpus("shakespeare", offline=True)
    assert "--data" in _one_line(e)
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LDLM_CORPUS_URL_SHAKESPEARE", f"http://127.0.0.1:{port}/x.txt")
    with pytest.raises(DataError, match="cannot download corpus 'shakespeare'") as e:
        load_corpus("shakespeare")
    assert "--data" in _one_line(e)


def test_large_file_memory_is_bounded(tmp_path):
    """A ~5 MB file loads with at most a few copies of itself (checked with tracemalloc)."""
    import tracemalloc

    p = tmp_path / "big.txt"
    p.write_bytes(b"to be or not to be\r\n" * 250_000)
    size = p.stat().st_size
    tracemalloc.start()
    try:
        text = load_corpus(str(p)).text
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(text) == size - 250_000
    assert peak < 4 * size
    assert corpora._normalise_newlines("a\r\nb\rc") == "a\nb\nc"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
