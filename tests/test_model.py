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
