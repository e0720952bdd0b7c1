"""Transformer blocks built from the attention and MLP layers: pre-norm (GPT-2, Llama, ViT) or
post-norm (the original Transformer, BERT)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..core import SpecError
from ._attention import SelfAttention, attention_dims
from ._basic import MLP, SwiGLU, make_norm
from ._registry import Built, TensorType, positive, probability, register_layer


class TransformerBlock(nn.Module):
    """Pre-norm, the GPT-2 / Llama / ViT layout: x = x + attn(norm1(x)); x = x + mlp(norm2(x)).
    Post-norm, the original Transformer's and BERT's: x = norm1(x + attn(x)); x = norm2(x + mlp(x))."""

    def __init__(self, dim: int, attn: SelfAttention, mlp: nn.Module, norm: str, eps: float | None,
                 dropout: float, post_norm: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, dim, eps)
        self.attn = attn
        self.norm2 = make_norm(norm, dim, eps)
        self.mlp = mlp
        self.drop = nn.Dropout(dropout)
        self.post_norm = post_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        if self.post_norm:
            x = self.norm1(x + self.drop(self.attn(x)))
            return self.norm2(x + self.drop(self.mlp(x)))
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return "post-norm" if self.post_norm else "pre-norm"


def _block(x: TensorType, heads: int, causal: bool, hidden: int | None, mlp_ratio: float,
           mlp: str, kv_heads: int | None, head_dim: int | None, norm: str, eps: float | None,
           rope: bool, dropout: float, bias: bool, norm_position: str = "pre") -> Built:
    t, d = x.expect(rank=2, what="a sequence (T, D)")
    kv, hd = attention_dims(d, heads, kv_heads, head_dim)
    if rope and hd % 2:
        raise SpecError(f"rope needs an even head_dim. Received: head_dim={hd}")
    probability(dropout, "dropout")
    if hidden is None and not (math.isfinite(mlp_ratio) and mlp_ratio > 0):
        raise SpecError(f"argument 'mlp_ratio' must be a positive number. Received: {mlp_ratio}")
    hidden = positive(hidden or int(round(d * mlp_ratio)), "hidden")
    attn = SelfAttention(d, heads, kv, hd, causal, rope, dropout, bias, t)
    # The block drops the MLP's output once (self.drop), as GPT-2 and BERT do: the MLP itself
    # gets none, or its output would be dropped twice (rate 1 - (1 - p)^2).
    ff: nn.Module = SwiGLU(d, hidden, bias) if mlp == "swiglu" else MLP(d, hidden, mlp, bias, 0.0)
    block = TransformerBlock(d, attn, ff, norm, eps, dropout, post_norm=norm_position == "post")
    return block, x.derive((t, d), layout="sequence")


def _register(name: str, causal: bool, doc: str) -> None:
    def fn(x: TensorType, heads: int, hidden: int | None = None, mlp_ratio: float = 4.0,
           mlp: Literal["gelu", "gelu_exact", "relu", "swiglu"] = "gelu", kv_heads: int | None = None,
           head_dim: int | None = None, norm: Literal["layernorm", "rmsnorm"] = "layernorm",
           eps: float | None = None, rope: bool = False, dropout: float = 0.0, bias: bool = True,
           causal: bool = causal, norm_position: Literal["pre", "post"] = "pre") -> Built:
        return _block(x, heads, causal, hidden, mlp_ratio, mlp, kv_heads, head_dim, norm, eps,
                      rope, dropout, bias, norm_position)

    fn.__doc__ = doc
    fn.__name__ = name
    register_layer(name)(fn)


_register("transformer_block", False, "Transformer block on (T, D): attention + MLP, each residual; pre- or post-norm.")
_register("encoder_block", False, "Transformer encoder block (bidirectional attention) on (T, D).")
_register("decoder_block", True, "Transformer decoder block (causal self-attention, GPT-style) on (T, D).")
