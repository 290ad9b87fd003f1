"""Cached decoding (ar, block), generation past the model's window, and offset frames.

The uncached paths recompute the whole window every call: the references the cached ones
must match token for token, at temperature 0 and with the same random draws.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_helpers import TEXT, tiny_config, tiny_model

from ldlm_engine import ConfigError, SampleConfig, build_tokenizer, generate
from ldlm_engine.model import DiffusionTransformer
from ldlm_engine.processes import BlockProcess, make_process
from ldlm_engine.sampling import Frame, Transcript, final_frame

SEQ = 32  # the window of every model here
BLOCK = 8


def random_model(kind: str, positions: str = "rope", seed: int = 0):
    """Two layers, so that a cached key really depends on the context it was computed in,
    and weights large enough that the context moves the argmax."""
    torch.manual_seed(seed)
    cfg = tiny_config(kind)
    cfg.model.n_layers, cfg.model.positions = 2, positions
    cfg.process.block_size = BLOCK
    tok = build_tokenizer("char", TEXT)
    cfg.model.vocab_size = tok.vocab_size
    model = DiffusionTransformer(cfg.validate().model, causal=kind == "ar").eval()
    with torch.no_grad():  # sharper than the 0.02 init: a wrong key or position shows
        for p in model.parameters():
            p.mul_(4.0)
    return model, make_process(cfg.process, tok), tok


@pytest.fixture(scope="module")
def block_model():
    m = random_model("block")
    assert isinstance(m[1], BlockProcess) and m[1].block_size == BLOCK
    return m


@pytest.fixture(scope="module")
def ar_model():
    return random_model("ar")


class Watch:
    """Records how many tokens each model call reads and the longest KV cache it held."""

    def __init__(self, model) -> None:
        self.lengths: list[int] = []
        self.caches: list = []
        self.longest_cache = 0
        model.tok_emb.register_forward_hook(
            lambda _m, inp, _o: self.lengths.append(inp[0].shape[1])
        )
        new_cache = model.new_cache

        def tracked():
            cache = new_cache()
            self.caches.append(cache)
            return cache

        model.new_cache = tracked

    def frames(self, it):
        for frame in it:
            self.longest_cache = max([self.longest_cache, *(len(c) for c in self.caches)])
            yield frame


def run(model, proc, tok, prompt="", **kw) -> list[Frame]:
    return list(generate(model, proc, tok, SampleConfig(**kw), prompt))


def full(frames: list[Frame]) -> list[int]:
    t = Transcript()
    for f in frames:
        t.apply(f)
    return t.tokens


PROMPTS = {
    "none": "",
    "aligned": "the cat sat on a",  # 16 = 2 blocks
    "unaligned": "the dog sat ",  # 12: a partial block of 4 fixed tokens
    "longer than the window": TEXT[:45],
}


@pytest.mark.parametrize("sampler", ["low_confidence", "threshold", "random"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_block_cached_matches_recomputing(block_model, sampler, prompt, temperature):
    model, proc, tok = block_model
    kw = dict(sampler=sampler, length=70, temperature=temperature, seed=5, threshold=0.05)
    cached = run(model, proc, tok, PROMPTS[prompt], **kw)
    recomputed = run(model, proc, tok, PROMPTS[prompt], cache=False, **kw)
    assert full(cached) == full(recomputed)
    assert [f.changed for f in cached] == [f.changed for f in recomputed]
    assert cached[-1].nfe == recomputed[-1].nfe  # a block's store rides along with a call


@pytest.mark.parametrize("steps", [0, 35])
def test_block_low_confidence_reveals_k_per_call(block_model, steps):
    model, proc, tok = block_model
    frames = run(model, proc, tok, "the dog sat ", length=70, steps=steps)
    counts = [len(f.changed) for f in frames[1:]]
    assert sum(counts) == 70 and min(counts) >= 1
    assert frames[-1].nfe == (70 if steps == 0 else 35) and set(counts) == {70 // (steps or 70)}


@pytest.mark.parametrize("prompt", ["", "the cat ", TEXT[:45]])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_ar_cached_matches_recomputing(ar_model, prompt, temperature):
    model, proc, tok = ar_model
    kw = dict(length=80, temperature=temperature, seed=2)
    assert full(run(model, proc, tok, prompt, **kw)) == full(
        run(model, proc, tok, prompt, cache=False, **kw)
    )


@pytest.mark.parametrize("kind", ["ar", "block"])
def test_sincos_models_run_past_their_window(kind):
    """Additive positions cannot go past seq_len: re-anchored windows never ask them to."""
    model, proc, tok = random_model(kind, positions="sincos")
    kw = dict(length=3 * SEQ, temperature=1.0)
    frames = run(model, proc, tok, "the cat ", **kw)
    assert full(frames) == full(run(model, proc, tok, "the cat ", cache=False, **kw))
    assert len(full(frames)) == 8 + 3 * SEQ


def test_cached_calls_read_only_new_tokens_and_the_cache_stays_in_the_window():
    for kind in ("ar", "block"):
        model, proc, tok = random_model(kind)
        watch = Watch(model)
        n = 4 * SEQ
        frames = list(watch.frames(generate(model, proc, tok, SampleConfig(length=n), "the ")))
        tokens = full(frames)
        assert len(tokens) == 4 + n and proc.mask_id not in tokens
        assert watch.longest_cache <= SEQ
        new_per_call = 1 if kind == "ar" else BLOCK
        # Every call reads only its new tokens, except the first of each window (prefill)
        # and, for block, a block's first call (which also stores the block before it).
        assert sum(n_read <= new_per_call for n_read in watch.lengths) >= 0.75 * len(watch.lengths)
        assert max(watch.lengths) <= SEQ
        read_cached = sum(watch.lengths)
        recompute = Watch(model)
        list(generate(model, proc, tok, SampleConfig(length=n, cache=False), "the "))
        assert sum(recompute.lengths) > (8 if kind == "ar" else 2) * read_cached


@pytest.mark.parametrize("kind", ["ar", "block", "mask", "uniform"])
def test_generation_past_the_window_keeps_the_prompt(kind):
    model, proc, tok = random_model(kind) if kind != "uniform" else tiny_model("uniform")
    watch = Watch(model)
    prompt = "the cat sat on the mat. "
    n = 3 * SEQ + 5
    frames = list(
        watch.frames(generate(model, proc, tok, SampleConfig(length=n, steps=20), prompt))
    )
    tokens = full(frames)
    p = tok.encode(prompt)
    assert len(tokens) == len(p) + n and tokens[: len(p)] == p
    assert proc.mask_id not in tokens and frames[-1].done and sum(f.done for f in frames) == 1
    # Memory is bounded: a window, plus BOS for a shifted block model (positions 0..SEQ, as
    # in training, where BOS precedes the window)
    limit = SEQ + int(getattr(proc, "shift", False))
    assert max(watch.lengths) <= limit and watch.longest_cache <= limit
    if kind != "uniform":  # every generated position is decided exactly once
        assert sorted(i for f in frames for i in f.changed) == list(range(len(p), len(p) + n))
    assert all(f.prompt_unseen == 0 for f in frames)


@pytest.mark.parametrize("kind", ["ar", "block", "mask"])
def test_a_prompt_longer_than_the_window_conditions_by_its_tail(kind):
    model, proc, tok = random_model(kind)
    prompt = TEXT[:100]
    frames = run(model, proc, tok, prompt, length=10)
    tokens = full(frames)
    assert tokens[:100] == tok.encode(prompt) and len(tokens) == 110
    assert 100 - SEQ < frames[-1].prompt_unseen < 100


def test_threshold_reveals_several_tokens_per_call_when_confident():
    """A block model trained a few dozen steps on a text it can predict with certainty."""
    torch.manual_seed(0)
    text = "a" * 2000
    cfg = tiny_config("block")
    tok = build_tokenizer("char", text)
    cfg.model.vocab_size = tok.vocab_size
    model = DiffusionTransformer(cfg.model)
    proc = make_process(cfg.process, tok)
    data = torch.tensor(tok.encode(text))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        starts = torch.randint(0, len(data) - SEQ, (8,), generator=gen).tolist()
        loss = proc.loss(model, torch.stack([data[s : s + SEQ] for s in starts]), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames = run(model, proc, tok, "aaa", sampler="threshold", threshold=0.9, length=60)
    counts = [len(f.changed) for f in frames[1:]]
    assert min(counts) >= 1 and sum(counts) == 60
    assert frames[-1].nfe < 60 / 2  # several tokens per call
    assert tok.decode(full(frames)) == "a" * 63
    # An untrained model is never that sure: one token per call, never zero.
    model2, proc2, tok2 = random_model("block")
    weak = run(model2, proc2, tok2, "", sampler="threshold", threshold=0.9, length=20)
    assert [len(f.changed) for f in weak[1:]] == [1] * 20


@pytest.mark.parametrize("sampler", ["low_confidence", "random", "threshold"])
def test_full_sequence_frames_stay_whole_within_the_window(sampler):
    model, proc, tok = tiny_model("mask")
    frames = run(model, proc, tok, "the ", length=20, sampler=sampler, temperature=1.0)
    t = Transcript()
    for f in frames:
        assert f.offset == 0 and len(f.tokens) == 24
        t.apply(f)
        assert (t.tokens, t.masked, t.fixed, t.confidence) == (
            f.tokens,
            f.masked,
            f.fixed,
            f.confidence,
        )
    last = final_frame(
        model, proc, tok, SampleConfig(length=20, sampler=sampler, temperature=1.0), "the "
    )
    assert (last.tokens, last.nfe, last.done, last.offset) == (
        frames[-1].tokens,
        frames[-1].nfe,
        True,
        0,
    )


@pytest.mark.parametrize("kind", ["ar", "block", "mask"])
def test_offset_frames_rebuild_the_sequence(kind):
    """Positions before a frame's offset never change again; the transcript of the frames
    is what final_frame returns, and each frame's lists agree with it where they overlap."""
    model, proc, tok = random_model(kind)
    frames = run(model, proc, tok, "the ", length=2 * SEQ, temperature=1.0, steps=40)
    assert frames[0].offset == 0 and len(frames[0].tokens) == 4 + 2 * SEQ
    assert all(len(f.tokens) <= SEQ for f in frames[1:])  # O(window) per frame, not O(N)
    t = Transcript()
    snapshots = []
    for f in frames:
        t.apply(f)
        assert t.tokens[f.offset : f.offset + len(f.tokens)] == f.tokens
        assert all(f.offset <= i < f.offset + len(f.tokens) for i in f.changed)
        snapshots.append((f.offset, list(t.tokens)))
    final = t.tokens
    for offset, tokens in snapshots:
        assert tokens[:offset] == final[:offset]
    last = final_frame(
        model, proc, tok, SampleConfig(length=2 * SEQ, temperature=1.0, steps=40), "the "
    )
    assert last.tokens == final and last.offset == 0 and not any(last.masked)


def test_bad_requests_for_left_to_right_models(block_model, ar_model):
    b_model, b_proc, b_tok = block_model
    plain = make_process(dataclasses.replace(b_proc.cfg, full_blocks=0.0), b_tok)
    for model, proc, tok in ((b_model, plain, b_tok), ar_model):  # never trained on windows
        with pytest.raises(ConfigError, match="left to right"):
            run(model, proc, tok, "a[MASK*3]b")
        with pytest.raises(ConfigError, match="seq_len"):  # an explicit cap still holds
            list(generate(model, proc, tok, SampleConfig(length=40), "", max_len=SEQ))
    model, proc, tok = block_model
    with pytest.raises(ConfigError, match="block"):
        run(model, proc, tok, "", length=8, block_length=4)
    masked = tiny_model("mask")
    with pytest.raises(ConfigError, match="window"):
        run(*masked, "a[MASK*40]b")


@pytest.mark.parametrize(
    "kind,sampler",
    [
        ("mask", "low_confidence"),
        ("mask", "threshold"),
        ("uniform", "uniform"),
        ("ar", "ar"),
        ("block", "low_confidence"),
        ("block", "threshold"),
    ],
)
def test_samplers_never_write_special_tokens(kind, sampler):
    """A model that prefers <unk>, <start> and <end> everywhere still gets text: those ids
    decode to nothing, so a sample holding them would have silent holes."""
    model, proc, tok = random_model(kind)
    specials = [tok.unk_id, tok.bos_id, tok.eos_id]
    boost = torch.zeros(tok.vocab_size)
    boost[specials] = 30.0
    model.head.register_forward_hook(lambda _m, _i, out: out + boost.to(out.dtype))
    for seed in range(3):
        kw = {"sampler": sampler, "temperature": 1.0, "seed": seed}
        frames = run(model, proc, tok, "the ", length=40, **kw)
        tokens = full(frames)
        assert len(tokens) == 44 and not set(tokens[4:]) & set(specials)
    # The bound still scores the ids a corpus may contain: only sampling leaves them out.
    assert bool(proc.allowed[specials].all()) and not bool(proc.writable[specials].any())
