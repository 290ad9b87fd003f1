import pytest
import torch

from ldlm_engine import ModelConfig
from ldlm_engine.model import DiffusionTransformer


def make(**kw):
    cfg = ModelConfig(vocab_size=20, d_model=32, n_heads=4, n_layers=2, d_ff=64, seq_len=16)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return DiffusionTransformer(cfg, causal=kw.pop("causal", False))


@pytest.mark.parametrize("positions", ["rope", "sincos"])
def test_shapes_and_tied_weights(positions):
    m = make(positions=positions)
    x = torch.randint(0, 20, (3, 16))
    assert m(x).shape == (3, 16, 20)
    assert m.head.weight is m.tok_emb.weight


def test_bidirectional_sees_the_future_and_causal_does_not():
    torch.manual_seed(0)
    x = torch.randint(0, 20, (1, 16))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 20
    bi = make()
    assert not torch.allclose(bi(x)[0, 0], bi(y)[0, 0])
    causal = DiffusionTransformer(bi.cfg, causal=True)
    assert torch.allclose(causal(x)[0, :-1], causal(y)[0, :-1], atol=1e-6)


def test_positions_matter():
    """Without positions a bidirectional model could not tell 'ab' from 'ba'."""
    for positions in ("rope", "sincos"):
        m = make(positions=positions)
        x = torch.tensor([[1, 2] + [3] * 14])
        y = torch.tensor([[2, 1] + [3] * 14])
        assert not torch.allclose(m(x)[0, 5], m(y)[0, 5])


def test_time_embedding_changes_output_and_is_required():
    m = make(time_embedding=True)
    x = torch.randint(0, 20, (2, 16))
    a = m(x, torch.tensor([0.1, 0.1]))
    b = m(x, torch.tensor([0.9, 0.9]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError):
        m(x)


def test_bf16_autocast_runs_on_cpu():
    m = make()
    x = torch.randint(0, 20, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()


def _qkv(b=2, h=3, lq=24, lk=24, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for n in (lq, lk, lk))
    return q, k, v


def _masks(lq, lk):
    g = torch.Generator().manual_seed(1)
    random = torch.rand(lq, lk, generator=g) < 0.5
    random[:, 0] = True  # every query sees a key
    return {"none": None, "random": random}


@pytest.mark.parametrize("lq,lk", [(24, 24), (5, 24), (1, 24)])
@pytest.mark.parametrize("mask", ["none", "random", "causal"])
def test_bf16_attention_matches_fp32_sdpa(lq, lk, mask):
    """The explicit bf16 path (two matmuls around a softmax) computes SDPA's function, the
    gradients included, to bf16's precision; causal with fewer queries than keys is the
    cached decoding case (each query sees every cached key)."""
    from torch.nn import functional as F

    from ldlm_engine.model import attention

    q, k, v = _qkv(lq=lq, lk=lk)
    causal = mask == "causal"
    m = None if causal else _masks(lq, lk)[mask]
    if causal:
        want_mask = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    else:
        want_mask = m
    leaves = [z.clone().requires_grad_() for z in (q, k, v)]
    want = F.scaled_dot_product_attention(*leaves, attn_mask=want_mask)
    want.square().sum().backward()
    low = [z.bfloat16().requires_grad_() for z in (q, k, v)]
    got = attention(*low, attn_mask=m, causal=causal)
    assert got.dtype == torch.bfloat16
    got.float().square().sum().backward()
    err = (got.float() - want).norm() / want.norm()
    assert err < 0.03, err
    for a, b in zip(low, leaves, strict=True):
        assert (a.grad.float() - b.grad).norm() / b.grad.norm() < 0.05


def test_fp32_attention_is_sdpa_exactly():
    from torch.nn import functional as F

    from ldlm_engine.model import attention

    q, k, v = _qkv()
    mask = _masks(24, 24)["random"]
    assert torch.equal(attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask))


def test_long_bf16_attention_keeps_sdpa():
    """Past the cap the scores are never all held at once: SDPA's kernel runs, bit for bit."""
    from torch.nn import functional as F

    from ldlm_engine.model import _EXPLICIT_SCORES_MAX, attention

    lk = 8192
    lq = _EXPLICIT_SCORES_MAX // lk + 1
    q, k, v = (z.bfloat16() for z in _qkv(b=1, h=1, lq=lq, lk=lk, d=8))
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_bf16_training_learns_like_fp32():
    """Forty bf16 steps of a shifted block model (masked, causal and plain attention all
    run) track fp32's losses from the same start."""
    from engine_helpers import TEXT, tiny_config

    from ldlm_engine import Trainer

    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_config("block", precision=precision)
        tr = Trainer(cfg, text=TEXT, handle_signals=False)
        tr.setup()
        losses[precision] = [float(tr.train_step(3e-3)[0].detach()) for _ in range(40)]
    a, b = losses["fp32"], losses["bf16"]
    assert all(torch.isfinite(torch.tensor(b)))
    assert sum(b[-10:]) / 10 < 0.8 * sum(b[:5]) / 5, b  # it learns
    assert abs(sum(a[-10:]) - sum(b[-10:])) / sum(a[-10:]) < 0.05, (a, b)


def test_auto_precision_follows_the_measurement():
    """ "auto" trains in bf16 on a CPU exactly where bf16 matmuls measured faster, never on
    one that only emulates bf16; explicit choices are honoured."""
    from ldlm_engine.runtime import autocast_dtype, cpu_bf16_is_faster, cpu_has_fast_bf16

    cpu = torch.device("cpu")
    faster = cpu_bf16_is_faster()
    assert isinstance(faster, bool)
    assert not faster or cpu_has_fast_bf16()
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if faster else None)
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16


def test_rotary_is_the_textbook_rotation_and_its_backward_the_inverse():
    """Pair (i, i + hd/2) at position p turns by p * 10000^(-2i/hd); the hand-written
    backward must be the rotation back, which is the gradient of a rotation."""
    from ldlm_engine.model import Rotary, rotate

    torch.manual_seed(0)
    hd, n = 8, 16
    qk = torch.randn(2, n, 2, 3, hd, requires_grad=True)
    out = rotate(qk, *Rotary(hd, n).tables(n))
    p = torch.arange(n, dtype=torch.float64)[:, None]
    angles = p * 10_000 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    c, s = angles.cos()[:, None, None], angles.sin()[:, None, None]
    x1, x2 = qk.detach().double().chunk(2, -1)
    assert torch.allclose(
        out.double(), torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1), atol=1e-5
    )
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, qk, g)
    g1, g2 = g.double().chunk(2, -1)
    assert torch.allclose(
        grad.double(), torch.cat((g1 * c + g2 * s, g2 * c - g1 * s), -1), atol=1e-5
    )
    # (and autograd's own derivative of the same arithmetic agrees)
    x64 = qk.detach().double().requires_grad_()
    cos, sin = (t.double() for t in Rotary(hd, n).tables(n))
    assert torch.autograd.gradcheck(lambda x: rotate(x, cos, sin), (x64,))


@pytest.mark.parametrize("activation, approximate", [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_activation_setting_picks_the_mlps_gelu(activation, approximate):
    torch.manual_seed(0)
    blk = make(activation=activation).blocks[0]
    with torch.no_grad():  # the block's MLP half alone, its output large enough to compare
        blk.proj.weight.zero_()
        blk.fc.weight.normal_()
        blk.fc_out.weight.normal_()
    x = torch.randn(2, 16, 32)
    h = blk.fc(blk.ln2(x))
    got = blk(x) - x
    for kind in ("none", "tanh"):
        want = blk.fc_out(torch.nn.functional.gelu(h, approximate=kind))
        gap = (got - want).abs().max().item()
        assert gap < 1e-4 if kind == approximate else gap > 1e-3


@pytest.mark.parametrize("positions", ["rope", "sincos"])
def test_keep_computes_the_kept_positions_only_and_exactly(positions):
    """``keep`` gives the full pass's logits at the kept positions, the same gradients for a
    loss read there, and the last block's MLP really runs on those rows alone."""
    torch.manual_seed(0)
    full_model = make(positions=positions)
    kept_model = make(positions=positions)
    kept_model.load_state_dict(full_model.state_dict())
    x = torch.randint(0, 20, (3, 16))
    keep = torch.rand(3, 16) < 0.4
    rows_seen = []
    kept_model.blocks[-1].fc.register_forward_hook(lambda m, i, o: rows_seen.append(i[0].shape))
    full = full_model(x)
    part = kept_model(x, keep=keep)
    assert part.shape == (int(keep.sum()), 20)
    assert rows_seen == [(int(keep.sum()), 32)]
    torch.testing.assert_close(part, full[keep], atol=1e-6, rtol=1e-5)
    target = torch.randint(0, 20, (int(keep.sum()),))
    torch.nn.functional.cross_entropy(full[keep], target).backward()
    torch.nn.functional.cross_entropy(part, target).backward()
    for (name, a), b in zip(full_model.named_parameters(), kept_model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-4, msg=name)
