"""Where training text comes from: a file, a folder of .txt files, or a named corpus.

``builtin`` needs no network (CPython ships its reference docs as ``pydoc_data``), so a fresh
install can train immediately. Named corpora are downloaded once into the user cache and
checked against a pinned sha256 on every load, so a truncated download or a changed upstream
file can never silently change what a run trains on. Every user-caused problem is a one-line
:class:`DataError` naming the path or corpus.

Text is normalised the same way from every source (UTF-8, BOM stripped, CRLF/CR -> LF) so a
corpus gives the same tokens on every platform.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .fileio import atomic_write_bytes, read_bounded
from .layout import expand_user

# A NUL byte among the first bytes is the cheapest reliable sign of a binary file.
_SNIFF_BYTES = 8192
# Cap downloads so a wrong URL override cannot fill the disk.
_MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
MAX_CORPUS_MB = 1024  # default data.max_corpus_mb: a corpus takes several times its size in RAM


@dataclass
class Corpus:
    """A loaded corpus: display ``name``, normalised ``text``, and where it came from."""

    name: str
    text: str
    source: str


@dataclass(frozen=True)
class NamedCorpus:
    """A downloadable corpus pinned by checksum."""

    url: str
    sha256: str
    description: str


NAMED_CORPORA: dict[str, NamedCorpus] = {
    "shakespeare": NamedCorpus(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        description="tiny Shakespeare (1.1 MB, downloaded once)",
    ),
}

BUILTIN_NAME = "builtin (Python reference docs)"


def cache_dir() -> Path:
    """The download cache: ``$LDLM_CACHE_DIR`` or the platform's user cache dir."""
    env = os.environ.get("LDLM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ldlm"))


def corpus_cache_path(name: str) -> Path:
    return cache_dir() / "corpora" / f"{name}.txt"


def corpus_url(name: str) -> str:
    """The download URL, overridable by ``$LDLM_CORPUS_URL_<NAME>`` (mirrors, tests)."""
    return os.environ.get(f"LDLM_CORPUS_URL_{name.upper()}") or NAMED_CORPORA[name].url


def list_corpora() -> list[tuple[str, str]]:
    """``(name, description)`` of the corpora usable by name, for pickers and help text."""
    out = [("builtin", "Python reference docs shipped with CPython (465 KB, offline)")]
    for name, nc in NAMED_CORPORA.items():
        cached = corpus_cache_path(name).is_file()
        out.append((name, nc.description + (" - cached" if cached else " - not downloaded")))
    return out


def load_corpus(spec: str, *, offline: bool = False, max_mb: int = MAX_CORPUS_MB) -> Corpus:
    """Resolve ``spec`` (``builtin``, a named corpus, a file or a folder) to normalised text.

    Names win over same-named paths; write ``./shakespeare`` to mean a local file. A file or
    folder larger than ``max_mb`` MiB (``data.max_corpus_mb``, ``--max-corpus-mb``) is
    refused from its size before anything is read: a sparse 10 GB file costs one line.
    """
    limit = int(max_mb) << 20
    if spec == "builtin":
        return _load_builtin()
    if spec in NAMED_CORPORA:
        return _load_named(spec, offline=offline)
    path = expand_user(spec)  # ~nouser: one line
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as e:
        raise DataError(f"cannot read {spec}: {e.strerror}") from None
    if not exists:
        names = ", ".join(["builtin", *NAMED_CORPORA])
        raise DataError(f"no such file, folder or corpus: {spec} (named corpora: {names})")
    if is_dir:
        return _load_folder(path, limit)
    text = _read_text_file(path, limit)
    _check_not_empty(text, path)
    return Corpus(name=path.name, text=text, source=str(path.resolve()))


def _load_builtin() -> Corpus:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise DataError(
            "the builtin corpus needs CPython's pydoc_data module, which this Python lacks; "
            "pass a text file with --data"
        ) from None
    text = "\n\n".join(topics[k] for k in sorted(topics))
    return Corpus(name=BUILTIN_NAME, text=_normalise_newlines(text), source="pydoc_data.topics")


def _load_named(name: str, *, offline: bool) -> Corpus:
    nc = NAMED_CORPORA[name]
    path = corpus_cache_path(name)
    raw: bytes | None = None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise DataError(f"cannot read cached corpus {path}: {e.strerror}") from None
    if raw is not None and hashlib.sha256(raw).hexdigest() != nc.sha256:
        raw = None  # damaged or stale cache: fetch a fresh copy
    if raw is None:
        url = corpus_url(name)
        raw = _download(name, url, offline=offline)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != nc.sha256:
            raise DataError(
                f"corpus {name!r} from {url} has sha256 {digest[:12]}…, expected "
                f"{nc.sha256[:12]}…; nothing was cached"
            )
        with contextlib.suppress(OSError):  # an unwritable cache only costs a re-download
            atomic_write_bytes(path, raw)
    text = _decode(raw, path)
    del raw
    return Corpus(name=name, text=text, source=str(path))


def _download(name: str, url: str, *, offline: bool) -> bytes:
    def fail(reason: str) -> DataError:
        return DataError(
            f"cannot download corpus {name!r} ({reason}); download it yourself from {url} "
            "and pass the file path with --data"
        )

    if offline:
        raise fail("offline mode")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = resp.read(_MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise fail(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:
        reason = e.reason.strerror if isinstance(e.reason, OSError) else e.reason
        raise fail(str(reason or "network error")) from None
    except (OSError, ValueError) as e:
        raise fail(str(e) or type(e).__name__) from None
    if len(data) > _MAX_DOWNLOAD_BYTES:
        raise fail("file is too large")
    return data


def _load_folder(folder: Path, limit: int) -> Corpus:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        files += [Path(root) / n for n in names if n.endswith(".txt")]
    files = sorted(f for f in files if f.is_file())
    if not files:
        raise DataError(f"folder {folder} has no .txt files")
    total = 0
    for f in files:  # the sizes first: nothing is read from a folder over the limit
        with contextlib.suppress(OSError):
            total += f.stat().st_size
    if total > limit:
        raise _too_large(folder, total, limit)
    texts = [_read_text_file(f, limit) for f in files]
    text = "\n\n".join(texts)
    del texts
    _check_not_empty(text, folder)
    return Corpus(name=folder.name or str(folder), text=text, source=str(folder.resolve()))


def _too_large(path: Path, size: int, limit: int) -> DataError:
    return DataError(
        f"{path} is {size / (1 << 20):,.0f} MiB, more than the corpus limit of "
        f"{limit >> 20:,} MiB; raise it with --max-corpus-mb (data.max_corpus_mb)"
    )


def _read_text_file(path: Path, limit: int) -> str:
    # A FIFO or a device (/dev/zero) would block or never end: only regular files, and the
    # size is checked before reading (the user's own link to a file is followed).
    try:
        if path.is_dir():
            raise DataError(f"{path} is a folder, expected a text file")
        raw = read_bounded(path.resolve(), limit)
    except RuntimeError:  # a symlink loop
        raise DataError(f"cannot read {path}: too many levels of symbolic links") from None
    except OSError as e:
        raise _read_error(path, e, limit) from None
    return _decode(raw, path)


def _read_error(path: Path, e: OSError, limit: int) -> DataError:
    if e.errno == errno.EFBIG:
        try:
            size = path.stat().st_size
        except OSError:
            size = limit + 1
        return _too_large(path, size, limit)
    reasons = {
        errno.EINVAL: f"{path} is not a regular file, expected a text file",
        errno.ENOENT: f"no such file: {path}",
        errno.EACCES: f"cannot read {path}: permission denied",
        errno.EISDIR: f"{path} is a folder, expected a text file",
    }
    return DataError(reasons.get(e.errno or 0, f"cannot read {path}: {e.strerror}"))


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8 (BOM allowed) to text with LF newlines; at most ~2 copies of the data alive."""
    nul = raw.find(b"\0", 0, _SNIFF_BYTES)
    if nul >= 0:
        raise DataError(f"{path} is not UTF-8 text (byte {nul} is NUL; binary file?)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    return _normalise_newlines(text)


def _normalise_newlines(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _check_not_empty(text: str, path: Path) -> None:
    if not text or text.isspace():
        raise DataError(f"{path} is empty (no text to train on)")
