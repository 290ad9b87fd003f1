import math

import pytest
import torch
from engine_helpers import TEXT, tiny_config

from ldlm_engine import ProcessConfig, build_tokenizer
from ldlm_engine.evaluation import estimate_nll
from ldlm_engine.processes import alpha_bar_schedule, make_process, stratified_uniform


class ConstantLogits(torch.nn.Module):
    """A 'model' that predicts the same distribution everywhere: its NLL is known exactly."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x, t=None, keep=None):
        out = self.logits.expand(*x.shape, -1).clone()
        return out if keep is None else out[keep]


class Oracle(torch.nn.Module):
    """A 'model' that always knows the clean text."""

    def __init__(self, x0: torch.Tensor, vocab: int):
        super().__init__()
        self.x0, self.vocab = x0, vocab

    def forward(self, x, t=None, keep=None):
        out = torch.full((*x.shape, self.vocab), -50.0)
        out = out.scatter(-1, self.x0[: x.shape[0], :, None], 50.0)
        return out if keep is None else out[keep]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("char", TEXT)


def test_mask_corruption_rate_matches_t(tok):
    proc = make_process(ProcessConfig(kind="mask"), tok)
    x0 = torch.randint(5, tok.vocab_size, (400, 64))
    for t in (0.1, 0.5, 0.9):
        xt, mask = proc.corrupt(x0, torch.full((400,), t), torch.Generator().manual_seed(1))
        assert abs(mask.float().mean().item() - t) < 0.01
        assert (xt[mask] == tok.mask_id).all() and (xt[~mask] == x0[~mask]).all()


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_uniform_corruption_rate_matches_schedule(tok, schedule):
    proc = make_process(ProcessConfig(kind="uniform", schedule=schedule), tok)
    x0 = torch.randint(5, tok.vocab_size, (400, 64))
    for step in (100, 500, 900):
        p = 1.0 - float(proc.alpha_bar[step])
        if schedule == "linear":
            assert p == pytest.approx(step / 1000)
        i = torch.full((400,), step)
        xt, replaced = proc.corrupt(x0, i, torch.Generator().manual_seed(2))
        assert abs(replaced.float().mean().item() - p) < 0.01
        # A replacement is a uniformly random allowed token, so it sometimes equals x0.
        changed = (xt != x0).float().mean().item()
        assert abs(changed - p * (1 - 1 / proc.K)) < 0.01
        assert not (xt == tok.mask_id).any()


def test_schedule_endpoints_and_the_seeds_example():
    for name in ("cosine", "linear"):
        ab = alpha_bar_schedule(1000, name)
        assert ab[0] == 1.0 and ab[-1] == 0.0
        assert (ab[1:] <= ab[:-1]).all()
    # The seed's worked example (t=234 -> 23% corrupted) is the linear schedule; cosine
    # corrupts less early on.
    assert 1 - alpha_bar_schedule(1000, "linear")[234] == pytest.approx(0.234)
    assert 1 - alpha_bar_schedule(1000, "cosine")[234] < 0.2


def test_masked_loss_matches_its_definition_by_hand(tok):
    """Loss = sum over masked positions of CE / t, divided by the number of positions."""
    proc = make_process(ProcessConfig(kind="mask", antithetic=False), tok)
    logits = torch.zeros(tok.vocab_size)
    logits[7] = 2.0
    model = ConstantLogits(logits)
    x0 = torch.tensor([[7, 8, 7, 9] * 8, [8, 8, 7, 7] * 8])
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    loss = proc.loss(model, x0, gen)
    gen.set_state(state)
    u = torch.rand(2, generator=gen)
    t = proc.t_from_u(u)
    _, mask = proc.corrupt(x0, t, gen)
    allowed = proc.allowed
    log_z = torch.logsumexp(torch.where(allowed, logits, -math.inf), 0)
    ce = log_z - logits[x0]
    expected = (ce * mask / t[:, None]).sum() / x0.numel()
    assert mask.any()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("kind", ["mask", "uniform"])
def test_bound_of_a_uniform_model_is_log_k(tok, kind):
    """A model that ignores its input has NLL exactly log K; the bound must agree."""
    proc = make_process(ProcessConfig(kind=kind), tok)
    model = ConstantLogits(torch.zeros(tok.vocab_size))
    x0 = torch.randint(5, tok.vocab_size, (256, 16))
    est = estimate_nll(model, proc, x0, samples=8, batch_size=256, seed=0)
    k = int(proc.allowed.sum())
    if kind == "mask":  # L/k weighting with exactly k masks: no variance at all here
        assert est.nats_per_token == pytest.approx(math.log(k), rel=1e-5)
    else:
        assert est.stderr_nats_per_token > 0
        assert est.nats_per_token == pytest.approx(math.log(k), abs=4 * est.stderr_nats_per_token)


def test_bound_is_zero_for_a_perfect_model(tok):
    x0 = torch.randint(5, tok.vocab_size, (8, 16))

    oracle = Oracle(x0, tok.vocab_size)
    for kind in ("mask", "uniform"):
        proc = make_process(ProcessConfig(kind=kind), tok)
        est = estimate_nll(oracle, proc, x0, samples=4, batch_size=8, seed=1)
        assert est.nats_per_token < 1e-6


def test_two_seeds_agree_within_standard_error(tok):
    from engine_helpers import tiny_model

    model, proc, _ = tiny_model("mask")
    data = torch.tensor(tok.encode(TEXT[: 32 * 64])).view(64, 32)
    a = estimate_nll(model, proc, data, samples=4, seed=1)
    b = estimate_nll(model, proc, data, samples=4, seed=2)
    se = math.hypot(a.stderr_nats_per_token, b.stderr_nats_per_token)
    assert 0 < se < 0.2
    assert abs(a.nats_per_token - b.nats_per_token) < 4 * se


def test_ar_is_exact_and_deterministic(tok):
    from engine_helpers import tiny_model

    model, proc, _ = tiny_model("ar")
    data = torch.tensor(tok.encode(TEXT[: 32 * 8])).view(8, 32)
    a = estimate_nll(model, proc, data, seed=1)
    b = estimate_nll(model, proc, data, seed=2)
    assert a.exact and a.nats_per_token == b.nats_per_token and a.stderr_nats_per_token == 0


def test_stratified_uniform_covers_every_stratum():
    u = stratified_uniform(10, torch.Generator().manual_seed(0))
    assert sorted((u * 10).floor().long().tolist()) == list(range(10))


def test_configs_validate():
    cfg = tiny_config("uniform")
    assert cfg.model.time_embedding


def test_masked_loss_of_a_real_model_is_the_full_pass_formula(tok):
    """On a CPU the masked process runs the last block at the masked positions only; its loss
    and bound terms still equal the full pass's CE at the masked positions (the same draw)."""
    from engine_helpers import tiny_model

    model, proc, _ = tiny_model("mask")
    x0 = torch.tensor(tok.encode(TEXT[: 8 * 32])).view(8, 32)
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    loss = proc.loss(model, x0, gen)
    gen.set_state(state)
    t = proc.t_from_u(proc.draw_u(8, gen, x0.device))
    xt, mask = proc.corrupt(x0, t, gen)
    logits = model(xt).masked_fill(~proc.allowed, float("-inf"))
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none")
    expected = (ce.view(x0.shape) * mask / t[:, None]).sum() / x0.numel()
    assert 0 < mask.sum() < mask.numel()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)
    u = torch.rand(8, generator=gen)
    state = gen.get_state()
    terms = proc.nll_terms(model, x0, u, gen)
    gen.set_state(state)
    k = (u * 32).long().clamp(0, 31) + 1
    mask = torch.rand(x0.shape, generator=gen).argsort(1).argsort(1) < k[:, None]
    logits = model(x0.masked_fill(mask, proc.mask_id)).masked_fill(~proc.allowed, float("-inf"))
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none")
    torch.testing.assert_close(terms, (ce.view(x0.shape) * mask).sum(1) * 32 / k)
