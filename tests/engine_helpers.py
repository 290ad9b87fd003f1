"""Small real models and texts shared by the engine tests."""

from __future__ import annotations

import torch

from ldlm_engine import RunConfig, build_tokenizer, get_preset
from ldlm_engine.model import DiffusionTransformer
from ldlm_engine.processes import make_process

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n"
    "the sun is up and the sky is blue. we sat in the sun and the cat sat with us.\n"
) * 40


def tiny_config(process: str = "mask", **train) -> RunConfig:
    """A model small enough to train for a few steps in a test, on the test text."""
    cfg = get_preset("tiny")
    cfg.data.tokenizer = "char"
    cfg.model.d_model, cfg.model.n_heads, cfg.model.n_layers, cfg.model.d_ff = 32, 2, 1, 64
    cfg.model.seq_len = 32
    cfg.process.kind = process
    cfg.model.time_embedding = process == "uniform"
    # The tests' models train without the preset's ar phase and sample as they always have.
    cfg.process.ar_phase = 0.0
    cfg.sample.sampler = "random" if process in ("mask", "block") else "auto"
    cfg.train.batch_size = 8
    # fp32 everywhere: "auto" picks bf16 on CPUs with AMX/AVX-512-BF16, and the figures these
    # tests pin must not depend on which CPU runs them.
    cfg.train.precision = "fp32"
    cfg.train.max_steps = 30
    cfg.train.warmup_steps = 5
    cfg.train.eval_tokens = 512
    cfg.train.log_every = 1
    cfg.train.eval_every = 0
    cfg.train.sample_every = 0
    cfg.train.checkpoint_every = 0
    cfg.train.sample_length = 16
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg.validate()


def tiny_model(process: str = "mask", seed: int = 0):
    """(model, process, tokenizer) for TEXT with random weights."""
    torch.manual_seed(seed)
    cfg = tiny_config(process)
    tok = build_tokenizer("char", TEXT)
    cfg.model.vocab_size = tok.vocab_size
    model = DiffusionTransformer(cfg.model, causal=process == "ar")
    return model, make_process(cfg.process, tok), tok
