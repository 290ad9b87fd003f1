"""Training throughput in fp32 and bf16, side by side: tokens/s, MFU and where the time goes.

    python benchmarks/train_throughput.py [--shapes seed,default] [--steps 4] [--reps 5]

Two shapes:
- ``seed``: the seed's dimensions (d_model 256, 6 layers, 8 heads, d_ff 1024, seq 128),
  batch 32, char tokens, the masked process; beside a plain fp32 PyTorch loop of the same
  shape written here (pre-norm blocks, SDPA, AdamW, no tricks), once with learned positions
  and once with RoPE written the textbook way (the engine's model has RoPE).
- ``default``: the ``default`` preset exactly as ``ldlm train`` runs it after its ar phase
  (shifted blocks: two copies of every window, so each step runs the network over 256
  positions a window; a fifth of the steps denoise whole windows).

For each shape the engine's own step (``Trainer.train_step``, the call its loop makes) runs
in fp32, in bf16, and in bf16 with PyTorch's fused attention kernel (SDPA, the path before
bf16 attention became two matmuls); at the seed's shape also in fp32 scoring every position
(the path before the masked process ran its last block at the masked positions only), all
built once and then timed in interleaved rounds of
``--steps`` steps, so drift and other load hit every variant alike; figures are medians over
``--reps`` rounds; the ratios ("× fp32", "× ref") are medians over rounds of the ratio to
the engine's fp32 or the plain loop's rate in the same round (neighbours in time see the
same load). MFU is the step's matmul FLOPs (counted by ``torch.utils.flop_counter``)
per second against the best matmul rate this CPU reaches in that precision, measured here.
The breakdown is ``torch.profiler``'s self CPU time of a few extra steps, by kind of op.

``--cpu-isa avx2`` reruns the script as a CPU without AVX-512 or bf16 units runs PyTorch
(its AVX2 kernels; oneDNN and MKL held to AVX2, so bf16 is emulated): what such a CPU trains
with, fp32, measured on any newer one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torch.utils.flop_counter as fc
from common import default_corpus, machine, matmul_peak
from torch import nn
from torch.profiler import ProfilerActivity, profile

import ldlm_engine.model as engine_model
import ldlm_engine.processes as engine_processes
from ldlm_engine import ModelConfig, Trainer, build_tokenizer, get_preset, load_corpus
from ldlm_engine.config import ProcessConfig, adapt_process
from ldlm_engine.runtime import cpu_bf16_is_faster, cpu_has_fast_bf16

# What --cpu-isa avx2 sets before torch starts: each library's own switch for its kernels.
AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}

SEED_SHAPE = {"d_model": 256, "n_heads": 8, "n_layers": 6, "d_ff": 1024, "seq_len": 128}
BATCH = 32


def textbook_rope(x, cos, sin):
    """Rotate channel pairs (i, i + d/2), as most code writes it, autograd doing the rest."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class RefBlock(nn.Module):
    def __init__(self, d, h, ff):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, ff, bias=False), nn.Linear(ff, d, bias=False)

    def forward(self, x, rope=None):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (z.view(b, n, self.h, -1).transpose(1, 2) for z in (q, k, v))
        if rope is not None:
            q, k = textbook_rope(q, *rope), textbook_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class RefModel(nn.Module):
    """The plain reference: learned positions (or textbook RoPE), tied head, nothing clever."""

    def __init__(self, vocab, d, h, layers, ff, seq, rope=False):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(RefBlock(d, h, ff) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.rope = None
        if rope:
            hd = d // h
            inv = 1.0 / 10_000 ** (torch.arange(0, hd, 2).float() / hd)
            angles = torch.outer(torch.arange(seq).float(), inv)
            self.rope = (angles.cos(), angles.sin())

    def forward(self, x):
        h = self.emb(x)
        if self.rope is None:
            h = h + self.pos(torch.arange(x.shape[1], device=x.device))
        for blk in self.blocks:
            h = blk(h, self.rope)
        return self.ln(h) @ self.emb.weight.T


class Reference:
    """A plain fp32 masked-diffusion step of the seed's shape, data included."""

    precision = "fp32"

    def __init__(self, ids: torch.Tensor, vocab: int, mask_id: int, device: str, rope=False):
        torch.manual_seed(0)
        self.name = "reference fp32" + (" + RoPE" if rope else "")
        s = SEED_SHAPE
        self.model = RefModel(
            vocab, s["d_model"], s["n_heads"], s["n_layers"], s["d_ff"], s["seq_len"], rope
        ).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.ids, self.mask_id, self.device = ids, mask_id, device

    def step(self) -> None:
        seq = SEED_SHAPE["seq_len"]
        ix = torch.randint(0, len(self.ids) - seq, (BATCH,))
        x0 = torch.stack([self.ids[i : i + seq] for i in ix]).long().to(self.device)
        t = torch.rand(BATCH, 1, device=self.device).clamp_min(1e-3)
        mask = torch.rand(x0.shape, device=self.device) < t
        logits = self.model(x0.masked_fill(mask, self.mask_id))
        ce = F.cross_entropy(logits.flatten(0, 1), x0.flatten(), reduction="none")
        loss = (ce.view(x0.shape) * mask / t).sum() / x0.numel()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


class Engine:
    """The engine's step (``Trainer.train_step``) for one shape and precision.

    ``fused`` sends bf16 attention through SDPA's kernel, as before the explicit bf16 path
    existed, and ``every_position`` scores the masked process through the whole pass, as
    before ``masked_ce``, so that each change is measured side by side."""

    def __init__(
        self, shape: str, precision: str, data: str, device: str, fused=False, every_position=False
    ):
        self.name = f"engine {precision}" + (" (SDPA attention)" if fused else "")
        self.name += " (every position)" if every_position else ""
        self.precision, self.fused, self.every_position = precision, fused, every_position
        cfg = get_preset("default")
        if shape == "seed":
            cfg.model = ModelConfig(**SEED_SHAPE)
            cfg.process = ProcessConfig(kind="mask")
            adapt_process(cfg, "mask")  # (the preset's sampler needs its block process)
        cfg.data.source = data
        cfg.train.batch_size = BATCH
        cfg.train.precision, cfg.train.device = precision, device
        cfg.train.max_steps = 10**6  # a flat stretch of the schedule: lr is set per step
        self.trainer = Trainer(cfg, handle_signals=False)
        self.trainer.setup()
        self.trainer.model.train()
        # Past the preset's ar phase (its first steps are plain ar passes, cheaper): the steps
        # that train both objectives, as every step after the first half does.
        self.trainer.step = int(cfg.process.ar_phase * self.trainer.total_steps)
        self.tokens_per_step = BATCH * cfg.model.seq_len

    def step(self) -> None:
        cap = engine_model._EXPLICIT_SCORES_MAX
        if self.fused:
            engine_model._EXPLICIT_SCORES_MAX = 0
        engine_processes._MASKED_ROWS_ONLY = not self.every_position
        try:
            self.trainer.train_step(1e-3)
        finally:
            engine_model._EXPLICIT_SCORES_MAX = cap
            engine_processes._MASKED_ROWS_ONLY = True


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _sdpa_cpu(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_flop_count(q, k, v)


def _sdpa_cpu_backward(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return 2 * fc.sdpa_flop_count(q, k, v)  # model FLOPs: twice the forward, no recompute


# torch counts no FLOPs for SDPA's CPU kernel; these make it count what two matmuls would.
SDPA_CPU = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


def step_flops(variant) -> float:
    """Matmul FLOPs of one training step (forward and backward), counted, not estimated:
    the same for every precision and attention path of one shape."""
    with fc.FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as counter:
        variant.step()
    return float(counter.get_total_flops())


# Self CPU time by kind of op. Data and optimizer are whole phases of train_step (labelled
# with record_function); inside forward and backward the op's name decides.
KINDS = {
    "matmuls": ("aten::mm", "aten::addmm", "aten::linear"),
    "attention": ("aten::bmm", "softmax", "scaled_dot_product", "aten::baddbmm"),
    "norms": ("layer_norm",),
    "casts": ("aten::copy_", "aten::_to_copy", "aten::to"),
    "activations": ("gelu",),
}


def _kind(event, phase: str | None) -> str:
    if phase in ("ldlm.data", "ldlm.optimizer"):
        return phase.removeprefix("ldlm.")
    name = event.name
    for kind, keys in KINDS.items():
        if any(k in name for k in keys):
            return kind
    return "other elementwise"


def breakdown(variant, steps: int) -> dict[str, float]:
    """Share of the step's self CPU time by kind of op (profiled, so not timed)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            variant.step()
    totals: dict[str, float] = {}
    for ev in prof.events():
        if ev.name.startswith("ldlm.") or ev.self_cpu_time_total <= 0:
            continue
        phase, up = None, ev.cpu_parent
        while up is not None:
            if up.name in ("ldlm.data", "ldlm.optimizer"):
                phase = up.name
                break
            up = up.cpu_parent
        kind = _kind(ev, phase)
        totals[kind] = totals.get(kind, 0.0) + ev.self_cpu_time_total
    total = sum(totals.values()) or 1.0
    return {k: round(v / total, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def measure(variants, steps: int, reps: int, device: str, tokens: dict) -> dict[str, list]:
    rates: dict[str, list[float]] = {v.name: [] for v in variants}
    for v in variants:  # warm-up: first calls allocate and pick kernels
        for _ in range(2):
            v.step()
    for _ in range(reps):
        for v in variants:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                v.step()
            _sync(device)
            rates[v.name].append(steps * tokens[v.name] / (time.perf_counter() - t0))
    return rates


def paired(rates: list[float], base: list[float]) -> float:
    """Median over rounds of rate / base rate in the same round."""
    return round(statistics.median(a / b for a, b in zip(rates, base, strict=True)), 2)


def run_shape(shape: str, args, bf16: bool, peaks: dict) -> dict:
    variants: list = []
    if shape == "seed":
        text = load_corpus(args.data).text
        tok = build_tokenizer("char", text)
        ids = torch.tensor(tok.encode_array(text[:500_000]).astype("int64"))
        variants.append(Reference(ids, tok.vocab_size, tok.mask_id, args.device))
        variants.append(Reference(ids, tok.vocab_size, tok.mask_id, args.device, rope=True))
    variants.append(Engine(shape, "fp32", args.data, args.device))
    if shape == "seed" and args.device == "cpu":
        variants.append(Engine(shape, "fp32", args.data, args.device, every_position=True))
    if bf16:
        variants.append(Engine(shape, "bf16", args.data, args.device))
        if args.device == "cpu":
            variants.append(Engine(shape, "bf16", args.data, args.device, fused=True))
    tokens = {
        v.name: BATCH * SEED_SHAPE["seq_len"] if isinstance(v, Reference) else v.tokens_per_step
        for v in variants
    }
    rates = measure(variants, args.steps, args.reps, args.device, tokens)
    fp32 = rates["engine fp32"]
    ref = rates["reference fp32"] if shape == "seed" else None
    rows = []
    # Matmul FLOPs per step, counted once per kind of step: precision and attention path
    # change none, scoring every position adds the last block's unread rows.
    counted: dict[tuple, float] = {}
    kind = {v.name: (type(v), getattr(v, "every_position", False)) for v in variants}
    for v in variants:
        if kind[v.name] not in counted:
            counted[kind[v.name]] = step_flops(v)
    for v in variants:
        tps = statistics.median(rates[v.name])
        flops = counted[kind[v.name]] * tps / tokens[v.name]
        rows.append(
            {
                "variant": v.name,
                "tokens_per_s": round(tps),
                "vs_engine_fp32": paired(rates[v.name], fp32),
                "vs_reference": paired(rates[v.name], ref) if ref else None,
                "mfu": round(flops / peaks[v.precision], 3),
                "all": [round(x) for x in rates[v.name]],
                "breakdown": breakdown(v, args.profile_steps) if args.profile_steps else {},
            }
        )
    return {"shape": shape, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="seed,default", help="seed, default or both")
    ap.add_argument("--steps", type=int, default=4, help="steps per timed round")
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--profile-steps", type=int, default=3, help="0 = no breakdown")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=default_corpus())
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's choice)")
    ap.add_argument(
        "--bf16",
        choices=["auto", "yes", "no"],
        default="auto",
        help="measure bf16 (auto: only where the hardware has bf16 units)",
    )
    ap.add_argument("--cpu-isa", choices=["native", "avx2"], default="native")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    emulated = args.cpu_isa == "avx2"
    if emulated and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})
    if args.threads:
        torch.set_num_threads(args.threads)
    has_units = args.device == "cuda" or (cpu_has_fast_bf16() and not emulated)
    bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and has_units)
    peaks = {"fp32": matmul_peak(torch.float32, args.device)}
    peaks["bf16"] = matmul_peak(torch.bfloat16, args.device) if bf16 else float("nan")
    shapes = [run_shape(s, args, bf16, peaks) for s in args.shapes.split(",")]
    auto = "bf16" if args.device == "cuda" or cpu_bf16_is_faster() else "fp32"
    out = {
        "machine": f"{machine()}, {torch.backends.cpu.get_cpu_capability()} kernels",
        "peaks_gflops": {k: round(v / 1e9) if v == v else None for k, v in peaks.items()},
    }
    out.update({"bf16_units": has_units, "auto_picks": auto, "shapes": shapes})
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"machine: {out['machine']}")
    print(f"bf16 units: {'yes' if has_units else 'no'}; --precision auto picks {auto} here")
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f}")
    for s in shapes:
        print(f"\n{s['shape']} shape (batch {BATCH}); medians of {args.reps} interleaved rounds")
        print(f"{'variant':30} {'tokens/s':>9} {'× fp32':>7} {'× ref':>6} {'MFU':>6}   rounds")
        for r in s["rows"]:
            vs_ref = f"{r['vs_reference']:.2f}" if r["vs_reference"] else "-"
            print(
                f"{r['variant']:30} {r['tokens_per_s']:>9,} {r['vs_engine_fp32']:>7.2f} "
                f"{vs_ref:>6} {r['mfu']:>6.1%}   {r['all']}"
            )
        for r in s["rows"]:
            if r["breakdown"]:
                parts = ", ".join(f"{k} {v:.0%}" for k, v in r["breakdown"].items())
                print(f"  {r['variant']}: {parts}")


if __name__ == "__main__":
    main()
