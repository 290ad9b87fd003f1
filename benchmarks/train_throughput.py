"""Training throughput: the engine's step against a plain PyTorch loop of the same shape.

    python benchmarks/train_throughput.py [--steps 20] [--reps 3] [--device cpu]

Prints tokens/s for: a plain fp32 reference loop written here (pre-norm blocks with
scaled_dot_product_attention, AdamW, no tricks), the engine in fp32 and in bf16, their ratios
to the reference, and model FLOPs utilisation against a matmul peak measured in the same run.
Shape: the seed's dimensions (d_model 256, 6 layers, 8 heads, seq 128), batch 32, char
tokens, masked process. Medians of ``--reps`` repetitions, interleaved so drift hits all alike.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from common import default_corpus, machine, matmul_peak, median, model_flops_per_token
from torch import nn

from ldlm_engine import ModelConfig, Trainer, get_preset, load_corpus

# The seed's dimensions, shared by the reference loop, the engine run and the FLOP count.
D_MODEL, N_HEADS, N_LAYERS, D_FF, SEQ_LEN = 256, 8, 6, 1024, 128


class RefBlock(nn.Module):
    def __init__(self, d, h, ff):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, ff, bias=False), nn.Linear(ff, d, bias=False)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (z.view(b, n, self.h, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class RefModel(nn.Module):
    """The plain reference: learned positions, tied head, nothing clever."""

    def __init__(self, vocab, d=D_MODEL, h=N_HEADS, layers=N_LAYERS, ff=D_FF, seq=SEQ_LEN):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(RefBlock(d, h, ff) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, x):
        h = self.emb(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for blk in self.blocks:
            h = blk(h)
        return self.ln(h) @ self.emb.weight.T


def reference_tokens_per_s(ids, vocab, mask_id, steps, batch, seq, device) -> float:
    torch.manual_seed(0)
    model = RefModel(vocab, seq=seq).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for step in range(steps + 3):
        t0 = time.perf_counter()  # the whole step, data included, as the engine reports it
        ix = torch.randint(0, len(ids) - seq, (batch,))
        x0 = torch.stack([ids[i : i + seq] for i in ix]).long().to(device)
        t = torch.rand(batch, 1, device=device).clamp_min(1e-3)
        mask = torch.rand(x0.shape, device=device) < t
        xt = x0.masked_fill(mask, mask_id)
        logits = model(xt)
        ce = F.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none")
        loss = (ce.view(x0.shape) * mask / t).sum() / x0.numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    return batch * seq / median(times)


def engine_tokens_per_s(corpus, precision, steps, batch, device, compile_=False):
    cfg = get_preset("default")  # its optimiser and loss, at the seed's dimensions
    cfg.model = ModelConfig(
        d_model=D_MODEL, n_heads=N_HEADS, n_layers=N_LAYERS, d_ff=D_FF, seq_len=SEQ_LEN
    )
    cfg.data.source = corpus
    cfg.train.batch_size = batch
    cfg.train.precision = precision
    cfg.train.device = device
    cfg.train.compile = compile_
    cfg.train.max_steps = steps + 5
    cfg.train.log_every = 1
    cfg.train.eval_every = cfg.train.sample_every = cfg.train.checkpoint_every = 0
    rates = []

    def sink(e):
        if e.event == "step" and e.step > 5:
            rates.append(e.tokens_per_s)

    tr = Trainer(cfg, sinks=[sink], handle_signals=False)
    tr.run()
    n = sum(p.numel() for n_, p in tr.model.named_parameters() if "tok_emb" not in n_)
    return median(rates), n, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=default_corpus())
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument(
        "--bf16",
        choices=["auto", "yes", "no"],
        default="auto",
        help="measure bf16 (auto: only where the hardware runs it fast)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ldlm_engine import build_tokenizer

    text = load_corpus(args.data).text
    tok = build_tokenizer("char", text)
    ids = torch.tensor(tok.encode_array(text[:500_000]).astype("int64"))
    seq = SEQ_LEN
    from ldlm_engine.runtime import cpu_has_fast_bf16

    fast_bf16 = args.device == "cuda" or cpu_has_fast_bf16()
    bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and fast_bf16)
    variants = ["reference fp32", "engine fp32"] + (["engine bf16"] if bf16 else [])
    if args.compile:
        variants += ["engine bf16 compiled" if bf16 else "engine fp32 compiled"]
    results: dict[str, list[float]] = {v: [] for v in variants}
    n_params = 0
    for _ in range(args.reps):
        for v in variants:
            if v == "reference fp32":
                r = reference_tokens_per_s(
                    ids, tok.vocab_size, tok.mask_id, args.steps, args.batch, seq, args.device
                )
            else:
                prec = "bf16" if "bf16" in v else "fp32"
                r, n_params, _ = engine_tokens_per_s(
                    args.data, prec, args.steps, args.batch, args.device, "compiled" in v
                )
            results[v].append(r)
    peak32 = matmul_peak(torch.float32, args.device)
    peak16 = matmul_peak(torch.bfloat16, args.device) if bf16 else float("nan")
    fpt = model_flops_per_token(n_params, N_LAYERS, D_MODEL, seq)
    ref = median(results["reference fp32"])
    rows = []
    for v in variants:
        tps = median(results[v])
        peak = peak16 if "bf16" in v else peak32
        rows.append(
            {
                "variant": v,
                "tokens_per_s": round(tps),
                "vs_reference_fp32": round(tps / ref, 2),
                "mfu": round(tps * fpt / peak, 3),
                "all": [round(x) for x in results[v]],
            }
        )
    if args.json:
        print(json.dumps({"machine": machine(), "rows": rows}, indent=2))
        return
    print(f"machine: {machine()}")
    if not bf16:
        print("bf16: not measured (this CPU has no AMX/AVX-512-BF16; bf16 would be emulated)")
    print(f"matmul peak: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s")
    print(f"bf16 measured: {'yes' if bf16 else 'no'}")
    print(f"model: {n_params / 1e6:.2f}M non-embedding params, {fpt / 1e6:.1f} MFLOP/token")
    print(f"{'variant':24} {'tokens/s':>10} {'× ref':>7} {'MFU':>6}   reps")
    for r in rows:
        print(
            f"{r['variant']:24} {r['tokens_per_s']:>10,} {r['vs_reference_fp32']:>7.2f} "
            f"{r['mfu']:>6.1%}   {r['all']}"
        )
    assert all(math.isfinite(r["tokens_per_s"]) for r in rows)


if __name__ == "__main__":
    main()
