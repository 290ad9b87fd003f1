import pytest
import torch
from engine_helpers import tiny_model

from ldlm_engine import ConfigError, SampleConfig, generate
from ldlm_engine.sampling import parse_template, transfer_schedule


def run(model, proc, tok, prompt="", **kw):
    kw.setdefault("temperature", 0.0)  # greedy unless a test says otherwise (default is 0.8)
    return list(generate(model, proc, tok, SampleConfig(**kw), prompt, max_len=32))


@pytest.fixture(scope="module")
def masked():
    return tiny_model("mask")


def llada_reference(model, proc, prompt_ids, gen_length, steps, block_length):
    """LLaDA's generate() at temperature 0, re-derived from its description.

    Blocks of ``block_length`` positions after the prompt, ``steps // num_blocks`` steps per
    block, ``n // steps`` tokens per step (remainder to the first steps); at each step, among
    masked positions no later than the current block, reveal the top-k by the softmax
    probability of the argmax token. Returns the positions revealed at every step.
    """
    p = len(prompt_ids)
    x = torch.full((1, p + gen_length), proc.mask_id, dtype=torch.long)
    x[0, :p] = torch.tensor(prompt_ids)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    revealed = []
    for nb in range(num_blocks):
        block = x[0, p + nb * block_length : p + (nb + 1) * block_length]
        n = int((block == proc.mask_id).sum())
        base, rem = divmod(n, steps_per_block)
        counts = [base + (1 if i < rem else 0) for i in range(steps_per_block)]
        for i in range(steps_per_block):
            mask_index = x == proc.mask_id
            logits = proc.sampling_logits(model, x, None)
            x0 = logits.argmax(-1)
            probs = torch.softmax(logits.double(), dim=-1)
            x0_p = probs.gather(-1, x0[..., None]).squeeze(-1)
            x0_p[:, p + (nb + 1) * block_length :] = -float("inf")
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, x0_p, torch.tensor(-float("inf"), dtype=torch.float64))
            idx = torch.topk(conf[0], counts[i]).indices
            x[0, idx] = x0[0, idx]
            revealed.append(sorted(idx.tolist()))
    return x[0].tolist(), revealed


@pytest.mark.parametrize("steps,block", [(12, 12), (12, 4), (6, 6), (6, 4), (3, 4)])
def test_low_confidence_reveals_what_llada_would(masked, steps, block):
    model, proc, tok = masked
    prompt = tok.encode("the cat ")
    frames = run(model, proc, tok, "the cat ", length=12, steps=steps, block_length=block)
    want_tokens, want_steps = llada_reference(model, proc, prompt, 12, steps, block)
    assert frames[-1].tokens == want_tokens
    assert [f.changed for f in frames[1:]] == want_steps
    assert frames[-1].nfe == steps


def test_temperature_zero_is_deterministic_and_temperature_samples(masked):
    model, proc, tok = masked
    a = run(model, proc, tok, "the ", length=16, seed=1)
    b = run(model, proc, tok, "the ", length=16, seed=2)
    assert a[-1].tokens == b[-1].tokens
    hot = {
        tuple(run(model, proc, tok, "the ", length=16, temperature=1.0, seed=s)[-1].tokens)
        for s in range(4)
    }
    assert len(hot) > 1


@pytest.mark.parametrize("sampler", ["low_confidence", "random", "threshold", "left_to_right"])
def test_masked_samplers_keep_prompt_and_fill_everything(masked, sampler):
    model, proc, tok = masked
    prompt = tok.encode("the dog ")
    frames = run(model, proc, tok, "the dog ", length=20, sampler=sampler, temperature=0.5)
    for f in frames:
        assert f.tokens[: len(prompt)] == prompt
        assert f.fixed[: len(prompt)] == [True] * len(prompt)
    last = frames[-1]
    assert last.done and not any(last.masked) and len(last.tokens) == len(prompt) + 20
    assert proc.mask_id not in last.tokens
    revealed = sorted(i for f in frames for i in f.changed)
    assert revealed == list(range(len(prompt), len(prompt) + 20))  # each position once


@pytest.mark.parametrize("steps", [0, 4])
def test_left_to_right_fills_a_gap_in_order_and_sees_the_right_context(masked, steps):
    model, proc, tok = masked
    template = "the [MASK*8] sat on the mat."
    fixed = parse_template(tok, template, length=0).fixed
    gap = [i for i, fx in enumerate(fixed) if not fx]
    frames = run(model, proc, tok, template, sampler="left_to_right", steps=steps)
    per_call = 1 if steps == 0 else 2
    assert [f.changed for f in frames[1:]] == [
        gap[i : i + per_call] for i in range(0, len(gap), per_call)
    ]
    # Each call sees the whole window: other right-hand context gives other logits.
    a = torch.tensor([parse_template(tok, template, length=0).ids])
    b = torch.tensor([parse_template(tok, "the [MASK*8] ran to the sea", length=0).ids])
    with torch.no_grad():
        la, lb = proc.sampling_logits(model, a, None), proc.sampling_logits(model, b, None)
    assert not torch.allclose(la[0, gap[0]], lb[0, gap[0]])


def test_threshold_uses_fewer_model_calls(masked):
    model, proc, tok = masked
    one_per_step = run(model, proc, tok, "", length=24, sampler="low_confidence")
    fast = run(model, proc, tok, "", length=24, sampler="threshold", threshold=0.05)
    assert fast[-1].nfe < one_per_step[-1].nfe == 24
    assert not any(fast[-1].masked)


@pytest.mark.parametrize("process", ["mask", "uniform"])
def test_infill_never_changes_fixed_positions(process):
    model, proc, tok = tiny_model(process)
    template = "the [MASK*4] sat on [MASK*3] mat."
    ids, fixed = parse_template(tok, template, length=0)
    frames = run(model, proc, tok, template, steps=10 if process == "uniform" else 0)
    for f in frames:
        kept = [t for t, fx in zip(f.tokens, fixed, strict=True) if fx]
        assert kept == [t for t, fx in zip(ids, fixed, strict=True) if fx]
        assert not any(fixed[i] for i in f.changed)
    assert len(frames[-1].tokens) == len(ids) and sum(not x for x in fixed) == 7


def test_uniform_sampler_stride_and_frames():
    model, proc, tok = tiny_model("uniform")
    frames = run(model, proc, tok, "the ", length=10, steps=25)
    assert frames[-1].nfe == 25 and frames[-1].done and len(frames) == 26
    assert frames[-1].tokens[:4] == tok.encode("the ")


def test_ar_continues_left_to_right_and_refuses_infill():
    model, proc, tok = tiny_model("ar")
    frames = run(model, proc, tok, "the ", length=8)
    assert [f.changed for f in frames[1:]] == [[4 + i] for i in range(8)]
    with pytest.raises(ConfigError):
        run(model, proc, tok, "a[MASK]b")


def test_bad_requests_are_user_errors(masked):
    model, proc, tok = masked
    with pytest.raises(ConfigError, match="seq_len"):
        run(model, proc, tok, "the cat", length=40)
    with pytest.raises(ConfigError, match="sampler"):
        run(model, proc, tok, "", length=4, sampler="uniform")


def test_transfer_schedule_matches_llada():
    assert transfer_schedule(10, 4) == [3, 3, 2, 2]
    assert sum(transfer_schedule(17, 5)) == 17
