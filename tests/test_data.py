"""Token streams, the held-out split, and the resumable, DDP-consistent Batcher."""

from __future__ import annotations

import json

import pytest
import torch

from ldlm_engine.data import Batcher, encode_corpus, eval_windows, split_train_val
from ldlm_engine.errors import DataError
from ldlm_engine.tokenizers import build_tokenizer


def test_encode_corpus_compact_5mb():
    text = "the quick brown fox jumps over the lazy dog, then naps.\n" * 90_000
    assert len(text) > 5_000_000
    tok = build_tokenizer("char", text[:10_000])
    ids = encode_corpus(tok, text)
    assert ids.dtype == torch.uint16 and ids.dim() == 1 and ids.numel() == len(text)
    assert ids.element_size() == 2
    assert ids[:50].tolist() == tok.encode(text[:50])
    assert ids[-50:].tolist() == tok.encode(text[-50:])


def test_split_deterministic_tail():
    ids = torch.arange(1000, dtype=torch.int32)
    s = split_train_val(ids, text_len_chars=3000, val_fraction=0.1, seq_len=16)
    assert s.train.tolist() == list(range(900)) and s.val.tolist() == list(range(900, 1000))
    assert s.val_tokens == 100 and s.val_chars == 300
    s2 = split_train_val(ids, 3000, 0.1, 16)
    assert torch.equal(s.train, s2.train) and torch.equal(s.val, s2.val)
    assert s.train.dtype == torch.int32  # no widening of the whole corpus


def test_split_too_short():
    with pytest.raises(DataError) as e:
        split_train_val(torch.arange(100), 100, 0.1, 64)
    msg = str(e.value)
    assert msg.startswith("corpus too short: 100 tokens, need at least ")
    assert msg.endswith("for seq_len 64") and "\n" not in msg
    need = int(msg.split("need at least ")[1].split()[0])
    split_train_val(torch.arange(need), need, 0.1, 64)  # the stated minimum really works
    with pytest.raises(DataError):
        split_train_val(torch.arange(need - 1), need, 0.1, 64)


def _train(n: int = 1003) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int32)


def test_batch_shape_and_windows_contiguous():
    b = Batcher(_train(), seq_len=10, batch_size=4, seed=1)
    x = b.next_batch()
    assert x.dtype == torch.int64 and x.shape == (4, 10)
    assert torch.all(x[:, 1:] - x[:, :-1] == 1)  # each row is a contiguous window
    assert b.steps_per_epoch == 25 and b.n_windows == 100


def test_epoch_covers_disjoint_windows_and_reshuffles():
    b = Batcher(_train(), seq_len=10, batch_size=5, seed=3)
    epoch0 = torch.cat([b.next_batch() for _ in range(20)])
    assert b.epoch == 1 and b.epoch_progress == 1.0
    starts = sorted(epoch0[:, 0].tolist())
    offset = starts[0]
    assert starts == [offset + 10 * i for i in range(100)]
    epoch1 = torch.cat([b.next_batch() for _ in range(20)])
    assert not torch.equal(epoch0, epoch1)
    assert b.epoch == 2


def test_batch_straddles_epochs():
    b = Batcher(_train(), seq_len=10, batch_size=7, seed=0)
    for _ in range(14):
        b.next_batch()
    assert b.epoch == 0 and b.state_dict()["index"] == 98
    b.next_batch()
    assert b.epoch == 1 and b.state_dict()["index"] == 5
    assert b.epoch_progress == pytest.approx(1.05)


def test_same_seed_same_batches_other_seed_differs():
    a, b, c = (Batcher(_train(), 10, 4, seed=s) for s in (7, 7, 8))
    xa, xb, xc = a.next_batch(), b.next_batch(), c.next_batch()
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)


def test_resume_exact():
    ref = Batcher(_train(), 10, 6, seed=11)
    for _ in range(23):  # into the second epoch
        ref.next_batch()
    state = json.loads(json.dumps(ref.state_dict()))  # JSON-able plain ints
    expected = [ref.next_batch() for _ in range(30)]
    resumed = Batcher(_train(), 10, 6, seed=999)
    resumed.load_state_dict(state)
    for want in expected:
        assert torch.equal(resumed.next_batch(), want)
    assert resumed.epoch_progress == ref.epoch_progress


def test_resume_rejects_changed_data():
    state = Batcher(_train(), 10, 4, seed=0).state_dict()
    with pytest.raises(DataError, match="changed"):
        Batcher(_train(2003), 10, 4, seed=0).load_state_dict(state)
    with pytest.raises(DataError):
        Batcher(_train(), 10, 4, seed=0).load_state_dict({"epoch": "x", "index": 0})


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_union_equals_single_process(world):
    single = Batcher(_train(), 10, 4 * world, seed=5)
    ranks = [Batcher(_train(), 10, 4, seed=5, rank=r, world_size=world) for r in range(world)]
    for _ in range(12):  # crosses epoch boundaries too
        full = single.next_batch()
        parts = [b.next_batch() for b in ranks]
        assert torch.equal(torch.cat(parts), full)
        assert all(not torch.equal(parts[0], p) for p in parts[1:])
    assert all(b.epoch_progress == single.epoch_progress for b in ranks)


def test_batches_never_contain_val_tokens():
    n = 2000
    ids = torch.arange(n, dtype=torch.int32)
    s = split_train_val(ids, n, 0.2, 16)
    b = Batcher(s.train, 16, 8, seed=2)
    seen = torch.cat([b.next_batch().flatten() for _ in range(60)])
    assert int(seen.max()) < len(s.train) and int(seen.min()) >= 0


def test_uint16_stream_batches():
    tok = build_tokenizer("char", "abcdefgh")
    ids = encode_corpus(tok, "abcdefgh" * 50)
    b = Batcher(ids, 8, 3, seed=0)
    x = b.next_batch()
    assert x.dtype == torch.int64
    assert tok.decode(x[0].tolist()) in "abcdefgh" * 3


def test_eval_windows():
    val = torch.arange(105, dtype=torch.int32).to(torch.uint16)
    w = eval_windows(val, 10, 45)
    assert w.shape == (4, 10) and w.dtype == torch.int64
    assert w.flatten().tolist() == list(range(40))
    assert eval_windows(val, 10, 1).shape == (1, 10)  # at least one window
    assert eval_windows(val, 10, 10**9).shape == (10, 10)
    with pytest.raises(DataError):
        eval_windows(val[:5], 10, 100)
