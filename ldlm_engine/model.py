"""The DiffusionTransformer: one bidirectional (or causal) transformer for every process.

It maps a sequence of (possibly corrupted) tokens, and optionally the noise level t, to logits
over the vocabulary at every position; the processes decide what those logits mean (the clean
token x0 for diffusion, the next token for ``ar``). Kept in one readable file on purpose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sin/cos features of (possibly fractional) positions: [..., dim]."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10_000.0)
        * torch.arange(half, dtype=torch.float32, device=positions.device)
        / half
    )
    angles = positions.float()[..., None] * freqs
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _rotate_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) with full-width tables (``cos`` is
    (cos, cos), ``sin`` is (-sin, sin)): one copy (the swapped halves) and two in-place
    kernels on it, so no temporaries: in fp32 on a CPU half the time of
    ``x * cos + swap(x) * sin`` (which equals it up to rounding: the multiply-add may be
    fused), itself a quarter of the textbook chunk/multiply/cat form's."""
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.cat((x2, x1), dim=-1).mul_(sin)
    return out.addcmul_(x, cos)


class _RotateHalves(torch.autograd.Function):
    """Rotate channel pairs (i, i + d/2) by position-dependent angles, with a hand-written
    backward (the inverse rotation), so autograd keeps no intermediate copies: on a CPU the
    generic version cost about a fifth of the whole training step."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate_halves(x, cos, sin)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate_halves(g, cos, -sin), None, None  # the inverse rotation


class Rotary(nn.Module):
    """Rotary position embedding (RoPE): rotates query/key channel pairs by angles that grow
    with position, so relative position enters every attention score directly. That is what
    lets a small bidirectional model leave the unigram plateau quickly (see docs/design.md)."""

    def __init__(self, head_dim: int, max_len: int):
        super().__init__()
        inv_freq = 1.0 / (10_000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._build(max_len)

    def _build(self, length: int) -> None:
        t = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        angles = torch.outer(t, self.inv_freq)  # [L, head_dim/2]
        cos, sin = angles.cos(), angles.sin()
        self.register_buffer("cos", torch.cat((cos, cos), -1), persistent=False)
        self.register_buffer("sin", torch.cat((-sin, sin), -1), persistent=False)

    def tables(
        self, length: int, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin [L, 1, 1, head_dim] (see ``_rotate_halves``) for one forward
        pass, shared by every layer (a cached decoding call is mostly per-call overhead, so
        they are looked up once).

        ``positions`` [L] (absolute, any non-negative ints) defaults to 0..L-1; only their
        differences reach the attention scores, which is what lets a cached sampler run past
        the trained length with a sliding window.
        """
        top = length if positions is None else int(positions.max()) + 1
        if top > self.cos.shape[0]:
            self._build(max(top, 2 * self.cos.shape[0]))
        if positions is None:
            cos, sin = self.cos[:length], self.sin[:length]
        else:
            cos, sin = self.cos[positions], self.sin[positions]
        return cos[:, None, None, :], sin[:, None, None, :]


def rotate(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries and keys together (``qk`` [B, L, 2, H, head_dim]) by :meth:`Rotary.tables`.

    Training goes through the hand-written backward; without gradients the same arithmetic
    runs directly, skipping the autograd Function's per-call cost.
    """
    if cos.dtype != qk.dtype:  # autocast: rotate in the dtype the projections produced
        cos, sin = cos.to(qk.dtype), sin.to(qk.dtype)
    if torch.is_grad_enabled() and qk.requires_grad:
        return _RotateHalves.apply(qk, cos, sin)
    return _rotate_halves(qk, cos, sin)


# Scores per attention call up to which bf16 on a CPU runs attention as two matmuls (64 MiB
# in bf16); longer calls keep SDPA's kernel, which never holds all the scores at once.
_EXPLICIT_SCORES_MAX = 1 << 25


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention [B, H, Lq, hd], as SDPA computes it.

    In bf16 on a CPU, PyTorch's fused attention kernel is slow: at the seed's dimensions its
    backward took a third of a bf16 training step (3x its fp32 time), while bf16 matmuls run
    at twice fp32's rate. There the scores are two bf16 matmuls around a softmax: the whole
    step ran 1.5x as fast as with SDPA in bf16 at the seed's dimensions and 1.3x at the
    default preset's (benchmarks/train_throughput.py, interleaved). Elsewhere (fp32, CUDA,
    very long windows) SDPA is the fast path.
    """
    lq, lk = q.shape[2], k.shape[2]
    if (
        q.device.type != "cpu"
        or q.dtype != torch.bfloat16
        or q.shape[0] * q.shape[1] * lq * lk > _EXPLICIT_SCORES_MAX
    ):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=causal, dropout_p=dropout
        )
    # bf16 scores and softmax, as bf16 eager attention elsewhere (the softmax kernel
    # accumulates in fp32); an fp32 softmax cost ~10% of the step and was no closer to fp32
    # attention: the difference comes from rounding the scores, not the softmax.
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if causal:
        attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
    if attn_mask is not None:  # an additive bias: its backward is free, masked_fill's is not
        bias = torch.zeros(attn_mask.shape, dtype=scores.dtype, device=q.device)
        scores = scores + bias.masked_fill_(~attn_mask, float("-inf"))
    probs = scores.softmax(-1)
    if dropout > 0:
        probs = F.dropout(probs, dropout)
    return probs @ v


class KVCache:
    """Keys and values of positions already written, per layer, for cached decoding.

    A forward pass given a cache attends to the cached keys/values plus its own tokens; with
    ``store=True`` it appends its own keys/values (a committed block). ``trim(n)`` keeps the
    newest ``n`` positions: a sliding window that keeps every attended distance within what
    the model saw in training.
    """

    def __init__(self, n_layers: int) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    def __len__(self) -> int:
        return 0 if self.k[0] is None else int(self.k[0].shape[2])

    def trim(self, keep: int) -> None:
        if len(self) <= keep:
            return
        for i in range(len(self.k)):
            self.k[i] = self.k[i][:, :, -keep:] if keep > 0 else None  # type: ignore[index]
            self.v[i] = self.v[i][:, :, -keep:] if keep > 0 else None  # type: ignore[index]


class Block(nn.Module):
    """Pre-norm transformer block: attention then MLP, each with a residual connection."""

    def __init__(self, cfg: ModelConfig, causal: bool):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.causal = causal
        self.dropout = cfg.dropout
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.fc_out = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.gelu = "tanh" if cfg.activation == "gelu_tanh" else "none"

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        store: bool = False,
        causal: bool = False,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The block's output [B, L, d], or [R, d] at the positions where ``keep`` [B, L] is
        True (in ``x[keep]`` order): past attention every position is on its own, so a last
        block whose other outputs nobody reads skips them (see ``DiffusionTransformer``)."""
        b, n, d = x.shape
        hd = d // self.n_heads
        # split, not slicing: a slice's backward zero-fills a gradient of qkv's whole size
        qk, v = self.qkv(self.ln1(x)).split((2 * d, d), dim=-1)
        qk = qk.view(b, n, 2, self.n_heads, hd)
        if rope is not None:
            qk = rotate(qk, *rope)
        q, k = (z.transpose(1, 2) for z in qk.unbind(2))
        v = v.view(b, n, self.n_heads, hd).transpose(1, 2)
        if cache is not None and cache.k[layer] is not None:
            k_all = torch.cat([cache.k[layer], k], dim=2)  # type: ignore[list-item]
            v_all = torch.cat([cache.v[layer], v], dim=2)  # type: ignore[list-item]
        else:
            k_all, v_all = k, v
        if store and cache is not None:
            cache.k[layer], cache.v[layer] = k_all, v_all
        # A cached pass sees every cached key; among its own tokens it is causal only for
        # the causal (ar) model, unless an explicit mask says otherwise. A single token (cached
        # decoding) may see every key: no mask at all, since SDPA's masked path is slower.
        causal = (self.causal or causal) and attn_mask is None and n > 1
        if causal and k_all.shape[2] != n:
            visible = torch.ones(n, k_all.shape[2], dtype=torch.bool, device=x.device)
            attn_mask = visible.tril(diagonal=k_all.shape[2] - n)
            causal = False
        y = attention(q, k_all, v_all, attn_mask, causal, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, n, d)
        if keep is not None:
            x, y = x[keep], y[keep]
        x = x + self.drop(self.proj(y))
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate=self.gelu)))
        return x


class DiffusionTransformer(nn.Module):
    """Token embedding, positions, optional time embedding, pre-norm blocks, vocabulary head."""

    def __init__(self, cfg: ModelConfig, causal: bool = False):
        super().__init__()
        if cfg.vocab_size < 2:
            raise ValueError("ModelConfig.vocab_size must be set from the tokenizer")
        self.cfg = cfg
        self.causal = causal
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        rotary = None  # its tables are looked up once per pass and handed to every block
        if cfg.positions == "rope":
            rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.seq_len)
        else:
            # one row past seq_len: a shifted block pass puts BOS at 0 and the window at 1..L
            pe = sinusoid(torch.arange(cfg.seq_len + 1), cfg.d_model)
            self.register_buffer("pos_emb", pe, persistent=False)
        self.time_mlp = None
        if cfg.time_embedding:
            self.time_mlp = nn.Sequential(
                nn.Linear(cfg.d_model, cfg.d_model), nn.SiLU(), nn.Linear(cfg.d_model, cfg.d_model)
            )
        self.drop = nn.Dropout(cfg.dropout)
        self.rotary = rotary
        self.blocks = nn.ModuleList(Block(cfg, causal) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2 style: keep the residual stream's variance in check
            for lin in (block.proj, block.fc_out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        tokens: torch.Tensor,
        t: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        store: bool = False,
        n_logits: int | None = None,
        rows: torch.Tensor | None = None,
        causal: bool = False,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, L, V] for tokens [B, L]; ``t`` [B] in [0, 1] is used if time-conditioned.

        ``positions`` [L] are the tokens' absolute positions (default 0..L-1; the block
        process gives a noisy and a clean copy of each token the same position);
        ``attn_mask`` is a boolean [L, L_keys] (True = may attend) for SDPA; ``cache`` adds
        the keys/values of earlier positions, and ``store`` appends this pass's to it.
        ``n_logits`` keeps only the first n positions' logits (0 for a pass that only fills the
        cache): the block process needs none for its clean copy, and skips the head there.
        ``rows`` [R] keeps only those positions' logits (the shifted block process reads each
        token's logits off the position before it). ``causal`` makes this pass causal like an
        ``ar`` model's (a shifted block model's clean stream is exactly one). ``keep`` [B, L]
        (bool; not with ``n_logits`` or ``rows``) returns logits [R, V] of those positions
        only, in ``tokens[keep]`` order: the last block's output projection and MLP, the
        final norm and the head run there alone (the masked process scores only its masked
        tokens).
        """
        n = tokens.shape[1]
        x = self.tok_emb(tokens)
        if self.cfg.positions == "sincos":
            top = n if positions is None else int(positions.max()) + 1
            if top > self.pos_emb.shape[0]:
                raise ValueError(
                    f"position {top - 1} is beyond seq_len {self.cfg.seq_len} "
                    "(additive positions cannot extrapolate)"
                )
            pe = self.pos_emb[:n] if positions is None else self.pos_emb[positions]
            x = x + pe.to(x.dtype)
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this model is conditioned on t; pass t")
            temb = self.time_mlp(sinusoid(t * 1000.0, self.cfg.d_model).to(x.dtype))
            x = x + temb[:, None, :]
        x = self.drop(x)
        rope = None if self.rotary is None else self.rotary.tables(n, positions)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, rope, attn_mask, cache, i, store, causal, keep if i == last else None)
        if n_logits is not None:
            x = x[:, :n_logits]
        if rows is not None:
            x = x[:, rows]
        return self.head(self.ln_f(x))

    def new_cache(self) -> KVCache:
        """An empty key/value cache for :meth:`forward`."""
        return KVCache(len(self.blocks))
