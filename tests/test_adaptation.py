"""Diffusion that learns like ar: the shifted block process, --init-from, and infilling block
models (``process.block_shift``, ``train.init_from``, ``process.full_blocks``)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_ldlm
from engine_helpers import TEXT, tiny_config
from test_training import losses, train

from ldlm_engine import ProcessConfig, RunConfig, SampleConfig, build_tokenizer, generate
from ldlm_engine.checkpoint import load_checkpoint
from ldlm_engine.config import adapt_process, training_phase, training_phases
from ldlm_engine.errors import ConfigError
from ldlm_engine.model import DiffusionTransformer
from ldlm_engine.processes import (
    AutoregressiveProcess,
    BlockProcess,
    make_process,
    shift_attention_mask,
)
from ldlm_engine.sampling import Transcript

L = 16


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LDLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("char", TEXT)


def model_and_data(tok, seed: int = 0, batch: int = 4, seq: int = L):
    torch.manual_seed(seed)
    cfg = tiny_config("mask")
    cfg.model.n_layers, cfg.model.seq_len, cfg.model.vocab_size = 2, seq, tok.vocab_size
    model = DiffusionTransformer(cfg.model).eval()
    with torch.no_grad():  # sharper than the init, so a wrong key or position shows
        for p in model.parameters():
            p.mul_(3.0)
    ids = torch.tensor(tok.encode(TEXT[: batch * seq * 3]))
    return model, ids[: batch * seq].view(batch, seq)


def shifted(tok, size: int, **kw) -> BlockProcess:
    proc = make_process(ProcessConfig(kind="block", block_size=size, block_shift=True, **kw), tok)
    assert isinstance(proc, BlockProcess) and proc.shift
    return proc


def ar_of(model, tok):
    """The same weights as a causal ar model."""
    ar = DiffusionTransformer(model.cfg, causal=True).eval()
    ar.load_state_dict(model.state_dict())
    proc = make_process(ProcessConfig(kind="ar"), tok)
    assert isinstance(proc, AutoregressiveProcess)
    return ar, proc


def test_shift_mask_follows_the_rule_pair_by_pair():
    length, bs = 12, 4
    clean = length - bs + 1
    m = shift_attention_mask(length, bs)
    assert m.shape == (length + clean, length + clean)
    for q in range(length + clean):
        for k in range(length + clean):
            if q < length:  # noisy token q: its block's noisy tokens, clean BOS..x[block start-1]
                want = k // bs == q // bs if k < length else (k - length) <= (q // bs) * bs
            else:  # clean position q - length holds x[q - length - 1]: causal, clean only
                want = k >= length and k <= q
            assert bool(m[q, k]) == want, (q, k)


def test_blocks_of_one_are_exactly_the_ar_model(tok):
    """With the token shift, block 1 is the ar model: the same NLL from the same weights."""
    model, x0 = model_and_data(tok, seed=1)
    ar, ar_proc = ar_of(model, tok)
    proc = shifted(tok, 1)
    assert proc.exact
    want = ar_proc.nll_terms(ar, x0)
    got = proc.nll_terms(model, x0, torch.rand(4), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("bs", [2, 4, 8, L])
def test_each_block_starts_with_the_ar_prediction_and_ignores_later_blocks(tok, bs):
    model, x0 = model_and_data(tok, seed=2)
    ar, ar_proc = ar_of(model, tok)
    proc = shifted(tok, bs)
    xt = x0.masked_fill(torch.rand(x0.shape, generator=torch.Generator().manual_seed(1)) < 0.5,
                        proc.mask_id)  # fmt: skip
    with torch.no_grad():
        tokens, clean = proc.shifted_logits(model, xt, x0, bs)
        want = ar(ar_proc.shift_right(x0))
    starts = torch.arange(L) % bs == 0
    assert torch.allclose(tokens[:, starts], want[:, starts], atol=1e-4)
    with torch.no_grad():  # without the ar loss the head skips the other clean rows
        lean, none = proc.shifted_logits(model, xt, x0, bs, ar=False)
    assert none is None and torch.allclose(lean, tokens, atol=1e-5)
    assert torch.allclose(clean, want[:, : L - bs + 1], atol=1e-4)  # the free ar loss
    # Changing a later block (clean or noisy) changes nothing in block 0.
    if bs < L:
        x2, xt2 = x0.clone(), xt.clone()
        x2[:, bs:] = (x2[:, bs:] + 1) % (tok.vocab_size - 2)
        xt2[:, bs:] = proc.mask_id
        with torch.no_grad():
            again = proc.shifted_logits(model, xt2, x2, bs)[0]
        assert torch.allclose(again[:, :bs], tokens[:, :bs], atol=1e-5)


def test_training_with_blocks_of_one_is_training_ar():
    """The ar phase of a shifted block run is an ar run, step for step."""
    ar_cfg = tiny_config("ar", max_steps=8)
    blk = adapt_process(tiny_config("mask", max_steps=8), "block")
    blk.process.block_size, blk.process.block_shift, blk.process.ar_phase = 8, True, 0.99
    _, _, ev_ar, _ = train(ar_cfg, name="ar")
    _, _, ev_blk, _ = train(blk.validate(), name="blk")
    a, b = losses(ev_ar), losses(ev_blk)
    assert a.keys() == b.keys() and all(b[k] == pytest.approx(a[k], rel=1e-5) for k in a)
    assert {e.phase for e in ev_blk if e.event == "step"} == {"ar"}


def test_phases_are_named_for_both_front_ends():
    cfg = adapt_process(tiny_config("mask"), "block")
    cfg.process.block_size, cfg.process.block_shift, cfg.process.ar_phase = 8, True, 0.4
    assert training_phase(cfg, 0, 100) == "ar" and training_phase(cfg, 39, 100) == "ar"
    assert training_phase(cfg, 40, 100) == "block 8"
    assert training_phases(cfg, 100) == "ar to step 40, then block 8"
    cfg.process.block_shift = False
    with pytest.raises(ConfigError, match="block_shift"):
        cfg.validate()


@pytest.mark.parametrize("bs", [1, 2, 4])
def test_small_blocks_learn(bs):
    """Blocks of 1 and 2 learn (the old no-grad clean path barely did at block 1)."""
    cfg = adapt_process(tiny_config("mask", max_steps=60), "block")
    cfg.process.block_size, cfg.process.block_shift = bs, True
    cfg.train.lr = 1e-2
    cfg.train.eval_every = 60
    tr, _, events, state = train(cfg.validate(), name=f"b{bs}")
    assert state == "finished"
    evals = [e for e in events if e.event == "eval"]
    k = int(tr.process.allowed.sum())
    assert evals[-1].val_bits_per_char < 0.75 * torch.log2(torch.tensor(float(k))).item()
    assert evals[-1].exact == (bs == 1)


def test_ar_loss_adds_the_clean_streams_next_token_loss(tok):
    model, x0 = model_and_data(tok)

    def loss(proc):
        proc.progress = 1.0
        with torch.no_grad():
            return float(proc.loss(model, x0, torch.Generator().manual_seed(3)))

    ar, ar_proc = ar_of(model, tok)
    with torch.no_grad():
        ce = ar_proc._ce(ar, x0)[:, : L - 4 + 1].mean()
    assert loss(shifted(tok, 4, ar_loss=0.5)) == pytest.approx(
        loss(shifted(tok, 4)) + 0.5 * float(ce), rel=1e-5
    )


@pytest.mark.parametrize("prompt", ["", "the cat ", "the dog sat ", TEXT[:45]])
@pytest.mark.parametrize("sampler", ["low_confidence", "random"])
@pytest.mark.parametrize("wrap", [False, True])
def test_shifted_cached_sampling_matches_recomputing(tok, prompt, sampler, wrap):
    model, _ = model_and_data(tok, seq=32)
    proc = shifted(tok, 8, block_wrap=wrap)
    texts = []
    for cache in (True, False):
        cfg = SampleConfig(sampler=sampler, length=70, temperature=1.0, seed=4, cache=cache)
        t = Transcript()
        for f in generate(model, proc, tok, cfg, prompt):
            t.apply(f)
        texts.append(t.tokens)
    assert texts[0] == texts[1]


@pytest.mark.parametrize("wrap", [False, True])
def test_the_sampler_reads_the_logits_training_scored(tok, wrap):
    """The uncached sampler's logits for a block equal the training pass's for that block."""
    from ldlm_engine.decoding import _uncached_shifted_logits

    model, x0 = model_and_data(tok)
    proc = shifted(tok, 4, block_wrap=wrap)
    xt = x0.masked_fill(torch.rand(x0.shape) < 0.5, proc.mask_id)
    xt[0, 4:8] = proc.mask_id  # one block with nothing known (its first token: the ar one)
    with torch.no_grad():
        tokens = proc.shifted_logits(model, xt, x0, 4)[0].float()
        tokens = tokens.masked_fill(~proc.writable, float("-inf"))
        for b in range(L // 4):
            s = 4 * b
            ref = _uncached_shifted_logits(model, proc, x0[0], 0, s, xt[0, s : s + 4].clone())
            assert torch.allclose(ref, tokens[0, s : s + 4], atol=1e-4)


@pytest.mark.parametrize("bs", [2, 4, L])
def test_wrap_lets_a_blocks_first_token_see_its_block_once_any_is_known(tok, bs):
    model, x0 = model_and_data(tok, seed=3)
    ar, ar_proc = ar_of(model, tok)
    wrap, plain = shifted(tok, bs, block_wrap=True), shifted(tok, bs)
    xt = x0.masked_fill(torch.ones_like(x0, dtype=torch.bool), wrap.mask_id)
    xt[:, bs - 1] = x0[:, bs - 1]  # block 0 knows its last token; the other blocks nothing
    with torch.no_grad():
        got = wrap.shifted_logits(model, xt, x0, bs)[0]
        was = plain.shifted_logits(model, xt, x0, bs)[0]
        want = ar(ar_proc.shift_right(x0))
        xt2 = xt.clone()
        xt2[:, bs - 1] = (x0[:, bs - 1] + 1) % (tok.vocab_size - 2)
        moved = wrap.shifted_logits(model, xt2, x0, bs)[0]
    starts = torch.arange(L) % bs == 0
    # Blocks with nothing known still start with the ar prediction ...
    assert torch.allclose(got[:, starts][:, 1:], want[:, starts][:, 1:], atol=1e-4)
    # ... block 0's first token now depends on what its block shows, and only it changed.
    assert not torch.allclose(got[:, 0], want[:, 0], atol=1e-3)
    assert not torch.allclose(moved[:, 0], got[:, 0], atol=1e-3)
    assert torch.allclose(got[:, 1:], was[:, 1:], atol=1e-5)
    with pytest.raises(ConfigError, match="block_wrap"):
        RunConfig(process=ProcessConfig(kind="block", block_wrap=True)).validate()


def test_block_models_infill_when_trained_with_whole_windows(tok):
    model, _ = model_and_data(tok, seq=32)
    template = "the [MASK*5] sat on the [MASK*3]."
    with pytest.raises(ConfigError, match="full_blocks"):
        list(generate(model, shifted(tok, 8), tok, SampleConfig(), template))
    plain = make_process(ProcessConfig(kind="block", block_size=8, full_blocks=0.2), tok)
    for proc in (shifted(tok, 8, full_blocks=0.2), plain):
        t = Transcript()
        for f in generate(model, proc, tok, SampleConfig(), template):
            t.apply(f)
        text = tok.decode(t.tokens)
        assert text.startswith("the ") and text[9:21] == " sat on the " and text.endswith(".")
        assert len(text) == len("the ") + 5 + len(" sat on the ") + 3 + 1


def test_full_blocks_share_of_steps(tok):
    proc = shifted(tok, 4, full_blocks=0.25)
    proc.progress = 1.0
    gen = torch.Generator().manual_seed(0)
    sizes = [proc.training_block_size(L, gen) for _ in range(400)]
    assert set(sizes) == {4, L} and 0.18 < sizes.count(L) / 400 < 0.32


# ------------------------------------------------------------------------------ --init-from


def _config_json(home, name) -> dict:
    return json.loads((home / "runs" / name / "config.json").read_text())


@pytest.mark.slow
def test_init_from_an_ar_run_through_the_cli(home, corpus_file):
    common = ["--data", str(corpus_file), "--preset", "tiny", "--tokenizer", "char",
              "--eval-every", "0", "--sample-every", "0"]  # fmt: skip
    r = run_ldlm(
        "train", *common, "--process", "ar", "--max-steps", "40", "--name", "base", home=home
    )
    assert r.returncode == 0, r.stderr
    r = run_ldlm(
        "train", *common, "--init-from", "base", "--max-steps", "6", "--name", "adapt", home=home
    )
    assert r.returncode == 0, r.stderr
    cfg = _config_json(home, "adapt")
    assert cfg["train"]["init_from"] == str(home / "runs" / "base")
    assert cfg["train"]["init_step"] == 40
    assert cfg["process"]["kind"] == "block" and cfg["process"]["ar_phase"] == 0.0
    shown = run_ldlm("runs", "show", "adapt", home=home)
    assert "phase      block 4 · started from base at step 40" in shown.stdout, shown.stdout
    status = json.loads((home / "runs" / "adapt" / "status.json").read_text())
    assert status["state"] == "finished"
    metrics = (home / "runs" / "adapt" / "metrics.jsonl").read_text()
    assert "started from base at step 40" in metrics
    # Resumable like any run; it does not go back to the source.
    r = run_ldlm("train", "--resume", "adapt", "--max-steps", "8", home=home)
    assert r.returncode == 0, r.stderr
    # Incompatible: a shape that the weights cannot fill, or no such run: one line, exit 2.
    for extra, words in ((["--seq-len", "32"], "seq-len"), ([], "no run named")):
        ref = "nosuch" if not extra else "base"
        r = run_ldlm("train", *common, "--init-from", ref, *extra, "--name", "bad", home=home)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.splitlines()) == 1
        assert not (home / "runs" / "bad").exists()


def test_init_from_starts_from_the_source_weights(home):
    src = tiny_config("ar", max_steps=10, checkpoint_every=10)
    _, rd, _, _ = train(src, name="src")
    from ldlm_engine import RunChoices, plan_run

    corpus = home.parent / "corpus.txt"
    corpus.write_text(TEXT)
    cfg = tiny_config("mask")
    cfg.model.d_model = 48  # the preset differs: the source's shape wins
    choices = RunChoices(
        preset="tiny",
        process="block",
        settings={"data": {"source": str(corpus)}, "train": {"init_from": "src"}},
    )
    plan = plan_run(choices)
    assert plan.config.model.d_model == src.model.d_model
    assert plan.config.data.tokenizer == "char" and plan.config.train.init_step == 10
    tr = plan.trainer(None, handle_signals=False)
    tr.setup()
    want = load_checkpoint(rd.checkpoints_dir).model_state
    got = tr.model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert RunConfig.from_dict(plan.config.to_dict()).train.init_from == str(rd.path)


def test_the_train_pane_says_which_phase_a_run_is_in():
    """The phase of each logged step reaches the app's statistics as the trainer named it."""
    import io

    from rich.console import Console

    from ldlm_tui.messages import event_to_message
    from ldlm_tui.widgets.stats import TrainStats

    cfg = adapt_process(tiny_config("mask", max_steps=6, log_every=1), "block")
    cfg.process.block_size, cfg.process.block_shift, cfg.process.ar_phase = 8, True, 0.5
    _, _, events, _ = train(cfg.validate(), name="phases")
    steps = [e for e in events if e.event == "step"]
    assert [e.phase for e in steps] == ["ar"] * 3 + ["block 8"] * 3
    shown = []
    stats = TrainStats()
    for e in steps:
        msg = event_to_message(e.to_dict(), "phases")
        stats.update_step(
            msg.step, msg.total_steps, msg.loss, msg.lr, msg.tokens_per_s, msg.epoch,
            msg.elapsed_s, msg.peak_mem_mb, msg.phase,
        )  # fmt: skip
        console = Console(file=io.StringIO(), width=120, color_system=None)
        console.print(stats.render_stats())
        shown.append(console.file.getvalue().splitlines()[0])
    assert "phase ar" in shown[0] and "phase block 8" in shown[-1]


def test_a_shifted_checkpoint_is_not_read_as_a_plain_one():
    """Token shift changes what the weights mean: part of the checkpoint's fingerprint, but
    only when on, so checkpoints from before the setting existed still match their runs."""
    from ldlm_engine.checkpoint import check_compatible, checkpoint_meta
    from ldlm_engine.errors import CheckpointError

    cfg = adapt_process(tiny_config("mask"), "block")
    cfg.process.block_size, cfg.process.block_shift = 8, True
    shifted_cfg = cfg.validate().to_dict()
    plain_cfg = json.loads(json.dumps(shifted_cfg))
    plain_cfg["process"]["block_shift"] = False
    check_compatible(checkpoint_meta(shifted_cfg, step=1), shifted_cfg)
    with pytest.raises(CheckpointError, match="block_shift"):
        check_compatible(checkpoint_meta(shifted_cfg, step=1), plain_cfg)
    old = json.loads(json.dumps(plain_cfg))
    del old["process"]["block_shift"]  # a config.json written before the setting existed
    check_compatible(checkpoint_meta(old, step=1), plain_cfg)
