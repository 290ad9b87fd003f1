"""From text to training batches: compact token streams, a held-out tail, shuffled windows.

The token stream stays in its compact dtype (uint16/int32); only each batch is widened to
int64, so memory is proportional to the corpus, not 4x it. The :class:`Batcher` derives every
epoch's shuffle from ``(seed, epoch)`` alone, which makes its position two integers: a
checkpoint can resume mid-epoch exactly, and data-parallel ranks agree on the global batch
without communicating.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .tokenizers import _CUT, Tokenizer


def encode_corpus(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """Tokenize a whole corpus into a 1-D tensor sharing the compact numpy buffer."""
    return torch.from_numpy(tokenizer.encode_array(text))


@dataclass
class TokenSplits:
    """Train/validation token streams plus the size of validation in characters.

    ``val_chars`` is the split's proportional share of the corpus's characters: a size for
    display only. Figures per character divide by the exact characters of the tokens they
    were measured on (:func:`count_chars`); the share can be several percent off.
    """

    train: torch.Tensor
    val: torch.Tensor
    val_chars: int
    val_tokens: int


def _min_tokens(val_fraction: float, seq_len: int) -> int:
    """Smallest stream length that :func:`split_train_val` accepts (both parts grow with n)."""
    f, L = val_fraction, seq_len
    n = max(2 * L + 1, math.floor((L - 1) / f) - 2, math.floor((L + 1) / (1 - f)) - 2)
    while True:
        n_train = int(n * (1.0 - val_fraction))
        if n_train >= seq_len + 1 and n - n_train >= seq_len:
            return n
        n += 1


def split_train_val(
    ids: torch.Tensor, text_len_chars: int, val_fraction: float, seq_len: int
) -> TokenSplits:
    """Hold out the contiguous last ``val_fraction`` of the stream (as nanoGPT does).

    A contiguous tail, rather than random windows, keeps validation text unseen in training
    even across window boundaries, and is the same on every run.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = int(ids.numel())
    n_train = int(n * (1.0 - val_fraction))
    n_val = n - n_train
    if n_train < seq_len + 1 or n_val < seq_len:
        need = _min_tokens(val_fraction, seq_len)
        raise DataError(f"corpus too short: {n} tokens, need at least {need} for seq_len {seq_len}")
    train, val = ids[:n_train], ids[n_train:]
    val_chars = round(n_val * text_len_chars / n) if n else 0
    return TokenSplits(train=train, val=val, val_chars=int(val_chars), val_tokens=n_val)


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"ldlm-batcher:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Batcher:
    """Random packed windows of ``seq_len`` tokens, epoch by epoch, resumable exactly.

    An epoch covers ``n_windows = (len(train) - 1) // seq_len`` disjoint windows starting at
    a random offset (so window edges move between epochs) in a random order; both come from a
    generator seeded by ``(seed, epoch)``. Each step consumes ``batch_size * world_size``
    windows of that order (a step may straddle two epochs); rank ``r`` gets rows
    ``[r * batch_size, (r + 1) * batch_size)`` of that global batch.
    """

    def __init__(
        self,
        train: torch.Tensor,
        seq_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if train.dim() != 1:
            raise ValueError("train must be a 1-D token tensor")
        if seq_len < 1 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError("invalid seq_len, batch_size, rank or world_size")
        n = int(train.numel())
        if n < seq_len + 1:
            raise DataError(f"corpus too short: {n} training tokens, need {seq_len + 1}")
        self._tokens = train.cpu().numpy()  # a view, no copy; numpy indexes uint16 freely
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.n_windows = (n - 1) // seq_len
        # Largest start offset such that all n_windows windows still fit.
        self._max_offset = min(seq_len - 1, n - self.n_windows * seq_len)
        self._epoch = 0
        self._index = 0
        self._cached_epoch = -1
        self._offset = 0
        self._perm: np.ndarray = np.zeros(0, dtype=np.int64)
        self._ar = np.arange(seq_len, dtype=np.int64)

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self._epoch

    @property
    def epoch_progress(self) -> float:
        """Epochs done as a real number (1.25 = a quarter into the second epoch)."""
        return self._epoch + self._index / self.n_windows

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        """Steps to cover one epoch's windows (rounded up; steps may straddle epochs)."""
        return max(1, math.ceil(self.n_windows / self.global_batch_size))

    def _order(self, epoch: int) -> tuple[int, np.ndarray]:
        if epoch != self._cached_epoch:
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            self._offset = int(torch.randint(0, self._max_offset + 1, (1,), generator=g))
            self._perm = torch.randperm(self.n_windows, generator=g).numpy()
            self._cached_epoch = epoch
        return self._offset, self._perm

    @property
    def windows_done(self) -> int:
        """Windows consumed so far, over all epochs and ranks."""
        return self._epoch * self.n_windows + self._index

    def next_batch(self, limit: int | None = None) -> torch.Tensor:
        """This rank's next ``[batch_size, seq_len]`` int64 batch.

        ``limit`` caps the global batch (a last, smaller batch that ends an epoch budget
        exactly); rows past it are not taken, so a rank may get fewer (single process only).
        """
        lo = self.rank * self.batch_size
        hi = lo + self.batch_size
        starts: list[np.ndarray] = []
        pos = 0  # position within the global batch
        need = (
            self.global_batch_size if limit is None else max(1, min(limit, self.global_batch_size))
        )
        while pos < need:
            take = min(need - pos, self.n_windows - self._index)
            a, b = max(lo, pos), min(hi, pos + take)
            if a < b:  # part of this stretch belongs to this rank
                offset, perm = self._order(self._epoch)
                i0 = self._index + (a - pos)
                starts.append(offset + perm[i0 : i0 + (b - a)] * self.seq_len)
            pos += take
            self._index += take
            if self._index == self.n_windows:
                self._epoch += 1
                self._index = 0
        idx = np.concatenate(starts)[:, None] + self._ar[None, :]
        return torch.from_numpy(self._tokens[idx].astype(np.int64))

    def state_dict(self) -> dict[str, Any]:
        """Position as plain ints (JSON-able); configuration is checked on load."""
        return {
            "epoch": self._epoch,
            "index": self._index,
            "seed": self.seed,
            "n_windows": self.n_windows,
            "global_batch_size": self.global_batch_size,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue exactly where the saved batcher stopped."""
        epoch, index = d.get("epoch"), d.get("index")
        if not isinstance(epoch, int) or not isinstance(index, int) or epoch < 0:
            raise DataError("data position in the checkpoint is damaged")
        if d.get("n_windows", self.n_windows) != self.n_windows:
            raise DataError(
                "the training data changed since the checkpoint "
                f"({d.get('n_windows')} windows then, {self.n_windows} now)"
            )
        if not 0 <= index < self.n_windows:
            raise DataError("data position in the checkpoint is out of range")
        self.seed = int(d.get("seed", self.seed))
        self._cached_epoch = -1
        self._epoch = epoch
        self._index = index


def eval_windows(val: torch.Tensor, seq_len: int, max_tokens: int) -> torch.Tensor:
    """Non-overlapping ``[n, seq_len]`` int64 windows from the start of ``val``.

    Always the same windows, so evaluations at different steps are comparable; at most
    ``max_tokens`` tokens but at least one window.
    """
    n_avail = int(val.numel()) // seq_len
    if n_avail < 1:
        raise DataError(f"validation set too short: {val.numel()} tokens for seq_len {seq_len}")
    n = max(1, min(n_avail, max_tokens // seq_len))
    return val[: n * seq_len].to(torch.int64).reshape(n, seq_len)


def _safe_cut(text: str, pos: int) -> int | None:
    """First token-safe cut at or after ``pos`` (both sides then encode as in the whole)."""
    m = _CUT.search(text, max(0, pos))
    return m.start() if m else None


def _region(
    tokenizer: Tokenizer, text: str, lo: int, hi: int, total: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids and spans of a stretch of ``text`` holding its tokens ``[lo, hi)`` (of ``total``).

    Re-tokenizes only from a token-safe cut near the stretch, at the end of the text nearer
    to it (a validation split is the tail). Returns (ids, spans, index of its first token).
    """
    n_chars = len(text)
    from_start = hi <= total - lo
    need = hi if from_start else total - lo
    guess = int(n_chars * need / max(1, total) * 1.05) + 256
    while True:
        if from_start:
            cut = _safe_cut(text, guess) if guess < n_chars else None
            cut = n_chars if cut is None else cut
            ids, spans = tokenizer.encode_with_spans(text[:cut])
            if len(ids) >= hi or cut == n_chars:
                return ids, spans, 0
        else:
            cut = _safe_cut(text, n_chars - guess) if guess < n_chars else 0
            if cut is not None:
                ids, spans = tokenizer.encode_with_spans(text[cut:])
                if len(ids) >= need or cut == 0:
                    return ids, spans + cut, total - len(ids)
        guess *= 2


def count_chars(
    tokenizer: Tokenizer, text: str, start: int, tokens: torch.Tensor, total: int
) -> int:
    """Characters of ``text`` that ``tokens`` stand for: its tokens ``start ..`` of ``total``.

    Each token owns its own characters and the whitespace before it, which a word tokenizer
    drops but the text has, so consecutive stretches add up to the text; an ``<unk>`` owns
    the word it replaced. Exact and cheap: one token per character for the char tokenizer,
    else a re-tokenization from a token-safe cut near the stretch (checked against
    ``tokens``; the whole text if that ever disagrees).
    """
    ids = tokens.reshape(-1).to(torch.int64).numpy()
    count = int(ids.size)
    if count == 0:
        return 0
    if tokenizer.kind == "char":
        return count  # one token per code point, unknown ones included
    end = start + count
    for attempt in range(2):
        if attempt == 0:
            r_ids, spans, first = _region(tokenizer, text, max(0, start - 1), end, total)
        else:
            r_ids, spans = tokenizer.encode_with_spans(text)
            first = 0
        a, b = start - first, end - first
        if (a >= 1 or a == start == 0) and b <= len(r_ids) and np.array_equal(r_ids[a:b], ids):
            before = int(spans[a - 1, 1]) if start > 0 else 0
            return int(spans[b - 1, 1]) - before
    raise DataError("the text does not encode to the evaluated tokens (did the corpus change?)")
