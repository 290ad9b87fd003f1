"""The block process (BD3-LM): its attention mask, its loss and bound, training and resume."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_ldlm
from engine_helpers import TEXT, tiny_config
from test_training import losses, train

from ldlm_engine import ProcessConfig, RunDir, Trainer, adapt_process, build_tokenizer, get_preset
from ldlm_engine.checkpoint import load_checkpoint
from ldlm_engine.errors import ConfigError
from ldlm_engine.evaluation import estimate_nll
from ldlm_engine.model import DiffusionTransformer
from ldlm_engine.presets import PRESETS
from ldlm_engine.processes import BlockProcess, block_attention_mask, make_process

L = 16


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("char", TEXT)


def model_and_data(tok, seed: int = 0, batch: int = 4):
    """A random non-causal model (2 layers, so attention composes) and a batch of text."""
    torch.manual_seed(seed)
    cfg = tiny_config("mask")
    cfg.model.n_layers, cfg.model.seq_len, cfg.model.vocab_size = 2, L, tok.vocab_size
    model = DiffusionTransformer(cfg.model).eval()
    ids = torch.tensor(tok.encode(TEXT[: batch * L * 3]))
    x0 = ids[: batch * L].view(batch, L)
    return model, x0


def block(tok, size: int, **kw) -> BlockProcess:
    proc = make_process(ProcessConfig(kind="block", block_size=size, **kw), tok)
    assert isinstance(proc, BlockProcess) and proc.kind == "block" and proc.block_size == size
    return proc


def test_block_mask_follows_the_rule_pair_by_pair():
    length, bs = 12, 4
    clean = length - bs
    m = block_attention_mask(length, bs)
    assert m.shape == (length + clean, length + clean) and m.dtype == torch.bool
    for q in range(length + clean):
        for k in range(length + clean):
            q_noisy, k_noisy = q < length, k < length
            bq, bk = (q if q_noisy else q - length) // bs, (k if k_noisy else k - length) // bs
            if q_noisy:
                want = bq == bk if k_noisy else bk < bq
            else:
                want = (not k_noisy) and bk <= bq
            assert bool(m[q, k]) == want, (q, k)
    assert not m[length:, :length].any()  # a clean token never sees a noisy one


@pytest.mark.parametrize("clean_grad", [True, False])
def test_logits_ignore_later_blocks_and_other_noisy_blocks(tok, clean_grad):
    model, x0 = model_and_data(tok)
    proc = block(tok, 4, block_clean_grad=clean_grad)
    mask = torch.rand(x0.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    xt = x0.masked_fill(mask, tok.mask_id)
    with torch.no_grad():
        base = proc.noisy_logits(model, xt, x0)
        other = torch.full_like(x0, tok.encode("z")[0])
        # Clean (and noisy) tokens of blocks 2 and 3 change nothing in blocks 0 and 1.
        late = torch.cat([x0[:, :8], other[:, 8:]], 1)
        got = proc.noisy_logits(model, torch.cat([xt[:, :8], other[:, 8:]], 1), late)
        assert torch.allclose(got[:, :8], base[:, :8], atol=1e-5)
        # Noisy block 0 is invisible to blocks 1..3: they see block 0's clean copy instead.
        got = proc.noisy_logits(model, torch.cat([other[:, :4], xt[:, 4:]], 1), x0)
        assert torch.allclose(got[:, 4:], base[:, 4:], atol=1e-5)
        assert not torch.allclose(got[:, :4], base[:, :4], atol=1e-3)
        # ... and that clean copy does reach them (the test above can fail).
        got = proc.noisy_logits(model, xt, torch.cat([other[:, :4], x0[:, 4:]], 1))
        assert not torch.allclose(got[:, 4:8], base[:, 4:8], atol=1e-3)
        # Behind the scenes, the clean half's outputs never depend on noisy tokens.
        pos = torch.arange(L)
        full_mask = block_attention_mask(L, 4)
        both = torch.cat([xt, x0[:, :12]], 1)
        out = model(both, None, positions=torch.cat([pos, pos[:12]]), attn_mask=full_mask)
        both[:, :L] = other
        out2 = model(both, None, positions=torch.cat([pos, pos[:12]]), attn_mask=full_mask)
        assert torch.allclose(out[:, L:], out2[:, L:], atol=1e-5)
    assert torch.allclose(
        base, block(tok, 4, block_clean_grad=not clean_grad).noisy_logits(model, xt, x0), atol=1e-5
    )


def test_one_block_reproduces_the_masked_process(tok):
    model, x0 = model_and_data(tok)
    masked = make_process(ProcessConfig(kind="mask"), tok)
    one = block(tok, L, block_masking="bernoulli")
    for seed in range(3):
        a = masked.loss(model, x0, torch.Generator().manual_seed(seed))
        b = one.loss(model, x0, torch.Generator().manual_seed(seed))
        assert torch.allclose(a, b, rtol=1e-5), (a, b)
    u = torch.tensor([0.05, 0.3, 0.61, 0.97])
    a = masked.nll_terms(model, x0, u, generator=torch.Generator().manual_seed(4))
    b = one.nll_terms(model, x0, u, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(a, b, rtol=1e-5)
    ea = estimate_nll(model, masked, x0, samples=3)
    eb = estimate_nll(model, one, x0, samples=3)
    assert ea.nats_per_token == pytest.approx(eb.nats_per_token, rel=1e-5)
    assert ea.stderr_nats_per_token == pytest.approx(eb.stderr_nats_per_token, rel=1e-4)
    assert eb.stderr_nats_per_token > 0 and not eb.exact


def chain_rule_nll(model, proc, x0: torch.Tensor) -> torch.Tensor:
    """-log p(x0) left to right, one position at a time through the KV cache: the masked
    token at i sees the clean tokens before it; the clean token is then committed."""
    total = torch.zeros(x0.shape[0])
    cache = model.new_cache()
    mask_tok = torch.full_like(x0[:, :1], proc.mask_id)
    for i in range(x0.shape[1]):
        pos = torch.tensor([i])
        logits = model(mask_tok, None, positions=pos, cache=cache)[:, 0].float()
        logits = logits.masked_fill(~proc.allowed, float("-inf"))
        total -= torch.log_softmax(logits, -1).gather(1, x0[:, i : i + 1]).squeeze(1)
        model(x0[:, i : i + 1], None, positions=pos, cache=cache, store=True)
    return total


@torch.no_grad()
def test_block_size_one_is_the_exact_left_to_right_nll(tok):
    model, x0 = model_and_data(tok, seed=1)
    proc = block(tok, 1)
    assert proc.exact
    want = chain_rule_nll(model, proc, x0)
    for u in (torch.zeros(4), torch.full((4,), 0.99)):  # no noise level to draw
        got = proc.nll_terms(model, x0, u, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(got, want, rtol=1e-5)
    est = estimate_nll(model, proc, x0, samples=4)
    assert est.exact and est.stderr_nats_per_token == 0.0
    assert est.nats_per_token == pytest.approx(float(want.sum()) / x0.numel(), rel=1e-5)
    # A larger block is a bound with noise: it carries a standard error.
    est4 = estimate_nll(model, block(tok, 4), x0, samples=4)
    assert not est4.exact and est4.stderr_nats_per_token > 0


def test_block_warmup_trains_one_block_first(tok):
    model, x0 = model_and_data(tok)
    warm = block(tok, 4, block_warmup=0.5)

    def loss(proc, progress=1.0):
        proc.progress = progress
        return proc.loss(model, x0, torch.Generator().manual_seed(3))

    assert torch.equal(loss(warm, 0.2), loss(block(tok, L)))
    assert torch.equal(loss(warm, 0.5), loss(block(tok, 4)))
    assert not torch.equal(loss(block(tok, L)), loss(block(tok, 4)))


def test_config_accepts_block_from_every_preset_and_rejects_bad_sizes():
    for name in PRESETS:
        cfg = adapt_process(get_preset(name), "block").validate()
        assert cfg.process.kind == "block" and not cfg.model.time_embedding
        assert cfg.model.seq_len % cfg.process.block_size == 0
    cfg = get_preset("tiny")
    cfg.model.seq_len, cfg.process.block_size = 60, 8
    with pytest.raises(ConfigError, match=r"block_size \(8\) must divide"):  # never rewritten
        adapt_process(cfg, "block").validate()
    for size, seq in ((0, 64), (65, 64), (7, 64)):
        cfg = adapt_process(get_preset("tiny"), "block")
        cfg.process.block_size, cfg.model.seq_len = size, seq
        with pytest.raises(ConfigError, match="block_size"):
            cfg.validate()


def block_config(**train):
    cfg = adapt_process(tiny_config("mask", **train), "block")
    cfg.process.block_size = 8
    return cfg.validate()


@pytest.mark.parametrize("clean_grad", [True, False])
def test_tiny_block_model_trains(clean_grad):
    cfg = block_config(max_steps=60, eval_every=30)
    cfg.train.lr = 1e-2
    cfg.process.block_clean_grad = clean_grad
    tr, _, events, state = train(cfg, name=f"block-{clean_grad}")
    assert state == "finished"
    curve = losses(events)
    first = sum(curve[s] for s in range(1, 6)) / 5
    last = sum(curve[s] for s in range(56, 61)) / 5
    assert last < 0.9 * first
    evals = [e for e in events if e.event == "eval"]
    assert len(evals) == 2 and not evals[0].exact
    assert evals[-1].val_bits_per_char < evals[0].val_bits_per_char
    k = int(tr.process.allowed.sum())  # well below a uniform guess over the K possible tokens
    assert evals[-1].val_bits_per_char < 0.85 * torch.log2(torch.tensor(float(k))).item()


def test_exact_resume_of_a_block_run():
    cfg = block_config(max_steps=12)
    cfg.model.dropout = 0.1
    cfg.process.block_warmup = 0.5  # one block for steps 1-6, then blocks of 8
    _, rd_a, ev_a, _ = train(cfg, name="straight")
    holder = {}

    def stop_at_5(event):
        if event.event == "step" and event.step == 5:
            holder["trainer"].request_stop("test")

    rd_b = RunDir.create(cfg.to_dict(), name="interrupted")
    ev_b1: list = []
    holder["trainer"] = Trainer(cfg, run_dir=rd_b, sinks=[ev_b1.append, stop_at_5], text=TEXT)
    assert holder["trainer"].run() == "stopped"
    _, _, ev_b2, state = train(cfg, name="interrupted", resume=True)
    assert state == "finished" and min(losses(ev_b2)) == 6
    assert {**losses(ev_b1), **losses(ev_b2)} == losses(ev_a)
    wa = load_checkpoint(rd_a.checkpoints_dir).model_state
    wb = load_checkpoint(rd_b.checkpoints_dir).model_state
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ldlm_train_and_eval_a_block_run(tmp_path, corpus_file):
    """Through the CLI: ``--process block`` (the block size from a config file), then
    ``ldlm eval --json`` reports its bound."""
    conf = tmp_path / "block.toml"
    conf.write_text("[process]\nblock_size = 4\n")
    home = tmp_path / "cli-home"
    res = run_ldlm(
        "train", "--data", corpus_file, "--preset", "tiny", "--tokenizer", "char",
        "--process", "block", "--config", conf, "--seq-len", "32", "--batch-size", "4",
        "--max-steps", "20", "--eval-every", "0", "--sample-every", "0",
        "--checkpoint-every", "20", "--name", "blk", home=home,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    saved = json.loads((home / "runs" / "blk" / "config.json").read_text())
    assert saved["process"]["kind"] == "block" and saved["process"]["block_size"] == 4
    res = run_ldlm("eval", "blk", "--json", home=home)
    assert res.returncode == 0, res.stderr + res.stdout
    d = json.loads(res.stdout)
    assert d["process"] == "block" and d["bound"] == "upper" and not d["exact"]
    assert 0 < d["val_bits_per_char"] < 8 and d["stderr_bits_per_char"] > 0
