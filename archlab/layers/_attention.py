"""Attention: multi-head scaled dot-product self-attention (causal or not, grouped-query
heads, rotary positions) and additive (Bahdanau) attention pooling."""

from __future__ import annotations

import math
from contextvars import ContextVar
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core import SpecError
from ._registry import Built, TensorType, positive, probability, register_layer


def rope_tables(length: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (length, head_dim // 2) for rotary position embeddings."""
    if torch.empty(0).device.type == "meta":  # built for the inspector: shapes only (arange on the
        shape = (length, head_dim // 2)       # meta device imports torch's decompositions: seconds)
        return torch.empty(shape), torch.empty(shape)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of each head by position-dependent angles."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, hd/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# The device whose attention kernel the inspector prices on the meta device; set by
# archlab.model.inspect for the length of one inspection ("cpu" or "cuda").
PRICED_DEVICE: ContextVar[str] = ContextVar("archlab_priced_device", default="cpu")


def attention_kernel(device: str, dtype: torch.dtype, dropout: float, head_dim: int) -> str:
    """The kernel F.scaled_dot_product_attention runs (torch 2.13) for self-attention without
    a mask: "flash" and "efficient" save q, k, v, the output and a log-sum-exp for backward;
    "math" saves the T x T attention matrix (and, with dropout, its mask and dropped copy).

    >>> attention_kernel("cpu", torch.float32, 0.1, 64), attention_kernel("cpu", torch.float32, 0.0, 64)
    ('math', 'flash')
    >>> attention_kernel("cuda", torch.bfloat16, 0.1, 64), attention_kernel("cuda", torch.float32, 0.1, 64)
    ('flash', 'efficient')
    """
    if device == "cpu":  # the CPU flash kernel has no dropout: with it PyTorch falls back to math
        return "flash" if dropout == 0.0 else "math"
    if dtype in (torch.float16, torch.bfloat16) and head_dim <= 256:
        return "flash"
    return "efficient" if head_dim <= 512 else "math"  # memory-efficient attention takes fp32 too


def scaled_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float,
                       causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v through PyTorch's fused kernels; k, v may have fewer heads.

    On the meta device (the inspector) PyTorch has no kernel choice to make, so this runs the
    op of the kernel that training on PRICED_DEVICE would run (`attention_kernel`): the fused
    (flash) op saves only q, k, v, the output and a log-sum-exp; the math path saves the T x T
    matrices — what the real step keeps for backward.
    """
    if q.device.type != "meta":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal,
                                              enable_gqa=k.shape[1] != q.shape[1])
    if k.shape[1] != q.shape[1]:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if attention_kernel(PRICED_DEVICE.get(), q.dtype, dropout, q.shape[-1]) == "math":
        return torch.ops.aten._scaled_dot_product_attention_math(q, k, v, None, dropout, causal)[0]
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)[0]


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v written out, returning the weights too (no dropout).

    The unfused path explanations read attention maps from: it keeps the whole (T, S) matrix,
    which the fused kernel never forms. k, v may have fewer heads (grouped-query attention).
    Returns the output (B, H, T, hd) and the weights (B, H, T, S), each row summing to 1.
    """
    if k.shape[1] != q.shape[1]:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if causal:
        t, s = scores.shape[-2:]
        keep = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


class LayerCache:
    """Keys and values one attention layer has seen while decoding."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class SelfAttention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention.

    q has `heads` heads; k and v have `kv_heads` (grouped-query attention when fewer).
    """

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, causal: bool,
                 rope: bool, dropout: float, bias: bool, max_len: int, rope_base: float = 10000.0):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.causal, self.dropout = causal, dropout
        # One fused projection for q, k and v: one matmul instead of three.
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * head_dim, bias=bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=bias)
        self.rope = rope
        # Set by archlab.generate.KVCache during decoding: keys and values of earlier steps.
        self.cache: LayerCache | None = None
        if rope:
            cos, sin = rope_tables(max_len, head_dim, rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, D)
        q, k, v = self.qkv(x).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        start = self.cache.length if self.cache is not None else 0
        if self.rope:
            cos, sin = self.rope_cos[start:start + t], self.rope_sin[start:start + t]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.cache is not None and start > 0:
            k, v = self.cache.extend(k, v)  # (B, KV, start + T, hd)
            # One new token attends to everything cached; several need the causal offset mask.
            mask = None if (t == 1 or not self.causal) else torch.ones(
                t, start + t, dtype=torch.bool, device=q.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1])
        else:
            if self.cache is not None:
                self.cache.extend(k, v)
            y = scaled_dot_product(q, k, v, self.dropout if self.training else 0.0, self.causal)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))

    def forward_with_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` through `math_attention`: the same output (within float rounding) and the
        attention weights (B, heads, T, T). Eval only (no dropout), never while decoding."""
        if self.cache is not None:
            raise RuntimeError("forward_with_weights does not decode: clear the layer's KV cache first")
        b, t, _ = x.shape  # (B, T, D)
        q, k, v = self.qkv(x).split(
            [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], dim=-1)
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            q, k = apply_rope(q, self.rope_cos[:t], self.rope_sin[:t]), apply_rope(k, self.rope_cos[:t], self.rope_sin[:t])
        y, weights = math_attention(q, k, v, self.causal)  # (B, H, T, hd), (B, H, T, T)
        return self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)), weights

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
                f"causal={self.causal}, rope={self.rope}")


def attention_dims(d: int, heads: int, kv_heads: int | None, head_dim: int | None) -> tuple[int, int]:
    positive(heads, "heads")
    kv = positive(kv_heads or heads, "kv_heads")
    if heads % kv:
        raise SpecError(f"heads ({heads}) must be a multiple of kv_heads ({kv})")
    if head_dim is None:
        if d % heads:
            raise SpecError(f"model width {d} is not divisible by heads={heads}; "
                            f"change heads or set head_dim")
        head_dim = d // heads
    return kv, positive(head_dim, "head_dim")


@register_layer("attention")
def attention(x: TensorType, heads: int, kv_heads: int | None = None, head_dim: int | None = None,
              causal: bool = False, rope: bool = False, dropout: float = 0.0, bias: bool = True,
              rope_base: float = 10000.0) -> Built:
    """Multi-head scaled dot-product self-attention on (T, D) -> (T, D)."""
    t, d = x.expect(rank=2, what="a sequence (T, D)")
    kv, hd = attention_dims(d, heads, kv_heads, head_dim)
    if rope and hd % 2:
        raise SpecError(f"rope needs an even head_dim. Received: head_dim={hd}")
    if not rope_base > 0:
        raise SpecError(f"argument 'rope_base' must be positive. Received: {rope_base}")
    module = SelfAttention(d, heads, kv, hd, causal, rope, probability(dropout, "dropout"), bias, t, rope_base)
    return module, x.derive((t, d), layout="sequence")


class AdditiveAttention(nn.Module):
    """Bahdanau attention: e_t = v^T tanh(W_h h_t + W_s s + b); a = softmax(e); c = sum a_t h_t.

    `score` is reusable as cross-attention (s = a decoder state, h = encoder outputs).
    Used as a layer, it pools a (T, D) sequence to (D,) with the query s taken from a learned
    vector, the last step, or the mean of the sequence.
    """

    def __init__(self, dim: int, query_dim: int, units: int, query: str = "learned"):
        super().__init__()
        self.w_h = nn.Linear(dim, units, bias=False)
        self.w_s = nn.Linear(query_dim, units, bias=True)  # its bias is the b of the formula
        self.v = nn.Linear(units, 1, bias=False)
        self.query = query
        if query == "learned":
            self.query_vector = nn.Parameter(torch.zeros(query_dim))

    def score(self, s: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (B, T) of query s (B, Dq) over keys h (B, T, D)."""
        e = self.v(torch.tanh(self.w_h(h) + self.w_s(s).unsqueeze(1))).squeeze(-1)  # (B, T)
        if mask is not None:
            e = e.masked_fill(~mask, float("-inf"))
        return e.softmax(dim=-1)

    def _query(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, Dq)
        if self.query == "learned":
            return self.query_vector.expand(h.shape[0], -1)
        return h[:, -1] if self.query == "last" else h.mean(dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        return self.forward_with_weights(h)[0]

    def forward_with_weights(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` and its weights as one head with one query: (B, D), (B, 1, 1, T)."""
        a = self.score(self._query(h), h)  # (B, T)
        return torch.bmm(a.unsqueeze(1), h).squeeze(1), a[:, None, None, :]

    def extra_repr(self) -> str:
        return f"query={self.query}"


@register_layer("additive_attention", "bahdanau")
def additive_attention(x: TensorType, units: int | None = None,
                       query: Literal["learned", "last", "mean"] = "learned") -> Built:
    """Additive (Bahdanau) attention pooling: (T, D) -> (D,)."""
    _, d = x.expect(rank=2, what="a sequence (T, D)")
    units = positive(units or d, "units")
    return AdditiveAttention(d, d, units, query), x.derive((d,), layout="flat")
