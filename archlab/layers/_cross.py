"""Layers that read an encoder's output ("memory") inside a seq2seq decoder.

The encoder-decoder network (archlab/seq2seq.py) sets `memory` (B, S, Dm) and
`memory_mask` (B, S), True where a source position is real (not padding), on these
modules before it runs the decoder, and clears them after.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import SpecError
from ._attention import (
    PRICED_DEVICE,
    AdditiveAttention,
    SelfAttention,
    attention_dims,
    attention_kernel,
)
from ._basic import MLP, make_norm
from ._registry import BuildContext, Built, TensorType, positive, probability, register_layer


class MemoryUser(nn.Module):
    """A module that attends to the encoder's output, set from outside per batch."""

    memory: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None

    def _memory(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.memory is None:
            raise RuntimeError(f"{type(self).__name__} ran without encoder memory; run it inside a Seq2SeqNetwork")
        return self.memory, self.memory_mask


def _need_memory(ctx: BuildContext, name: str) -> TensorType:
    if ctx.memory is None:
        raise SpecError(f"{name} attends to another sequence: name it with memory: NODE (a sequence named "
                        f"earlier with name:), or use it in a spec's `decoder:` section, next to an `encoder:`")
    if ctx.memory.rank != 2:
        raise SpecError(f"{name} attends to a sequence (S, D), and its memory is {ctx.memory.describe()} from "
                        f"{ctx.memory.source} (use returns: sequence on recurrent layers, or name a sequence)")
    return ctx.memory


def cross_attention_kernel(device: str, dtype: torch.dtype, head_dim: int, masked: bool) -> str:
    """The kernel F.scaled_dot_product_attention runs (torch 2.13) for cross-attention: no
    dropout, no causal mask, and a padding mask where the source has padding (`masked`).
    On CPU the fused (flash) kernel takes a mask; on CUDA flash takes none, so a masked
    cross-attention runs the memory-efficient kernel. The fused kernels save q, k, v, the
    output, a log-sum-exp and the mask (as an additive float mask); math saves the T x S matrix.

    >>> cross_attention_kernel("cpu", torch.float32, 32, True), cross_attention_kernel("cuda", torch.bfloat16, 32, True)
    ('flash', 'efficient')
    """
    if device == "cpu" or not masked:
        return attention_kernel(device, dtype, 0.0, head_dim)
    return "efficient" if head_dim <= 512 else "math"


class CrossAttention(MemoryUser):
    """Multi-head scaled dot-product attention from the decoder (queries) to the memory."""

    def __init__(self, dim: int, memory_dim: int, heads: int, head_dim: int, bias: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=bias)
        self.kv = nn.Linear(memory_dim, 2 * heads * head_dim, bias=bias)
        self.proj = nn.Linear(heads * head_dim, dim, bias=bias)
        # What the inspector last priced (kernel, masked); set only on the meta device.
        self.priced: tuple[str, bool] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        memory, mask = self._memory()
        b, t, _ = x.shape
        s = memory.shape[1]
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k, v = self.kv(memory).view(b, s, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, S, hd) each
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, S)
        y = self._attend(q, k, v, attn_mask)  # (B, H, T, hd)
        return self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T / sqrt(d) + mask) v. On the meta device (the inspector) PyTorch has no
        kernel to choose and runs the math path, which saves the T x S matrices: this runs the
        op training on PRICED_DEVICE would run instead, so it saves what a real step saves."""
        if q.device.type != "meta":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        kernel = cross_attention_kernel(PRICED_DEVICE.get(), q.dtype, q.shape[-1], mask is not None)
        self.priced = kernel, mask is not None
        if mask is not None and mask.dtype == torch.bool:  # as PyTorch turns it into an additive mask
            mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill_(mask.logical_not(), float("-inf"))
        if kernel == "math":
            return torch.ops.aten._scaled_dot_product_attention_math(q, k, v, mask, 0.0, False)[0]
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask)[0]


@register_layer("cross_attention")
def cross_attention(x: TensorType, ctx: BuildContext, heads: int, head_dim: int | None = None,
                    bias: bool = True) -> Built:
    """Multi-head attention from a (T, D) decoder sequence to the encoder's (S, Dm) output."""
    t, d = x.expect(rank=2, what="a sequence (T, D)")
    memory = _need_memory(ctx, "cross_attention")
    _, hd = attention_dims(d, heads, None, head_dim)
    return CrossAttention(d, memory.shape[1], heads, hd, bias), x.derive((t, d), layout="sequence")


class CrossDecoderBlock(nn.Module):
    """Pre-norm transformer decoder block: causal self-attention, cross-attention, MLP."""

    def __init__(self, dim: int, memory_dim: int, heads: int, hidden: int, norm: str, dropout: float,
                 max_len: int, bias: bool = True):
        super().__init__()
        hd = dim // heads
        self.norm1 = make_norm(norm, dim)
        self.attn = SelfAttention(dim, heads, heads, hd, True, False, dropout, bias, max_len)
        self.norm2 = make_norm(norm, dim)
        self.cross = CrossAttention(dim, memory_dim, heads, hd, bias)
        self.norm3 = make_norm(norm, dim)
        self.mlp = MLP(dim, hidden, "gelu", bias, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        x = x + self.drop(self.attn(self.norm1(x)))
        x = x + self.drop(self.cross(self.norm2(x)))
        return x + self.mlp(self.norm3(x))


@register_layer("cross_decoder_block")
def cross_decoder_block(x: TensorType, ctx: BuildContext, heads: int, hidden: int | None = None,
                        mlp_ratio: float = 4.0, norm: str = "layernorm", dropout: float = 0.0,
                        bias: bool = True) -> Built:
    """Transformer decoder block with cross-attention to the encoder (seq2seq), on (T, D)."""
    t, d = x.expect(rank=2, what="a sequence (T, D)")
    memory = _need_memory(ctx, "cross_decoder_block")
    attention_dims(d, heads, None, None)
    hidden = positive(hidden or int(round(d * mlp_ratio)), "hidden")
    block = CrossDecoderBlock(d, memory.shape[1], heads, hidden, norm, probability(dropout, "dropout"), t, bias)
    return block, x.derive((t, d), layout="sequence")


class AdditiveDecoder(MemoryUser):
    """GRU decoder with Bahdanau attention (Bahdanau et al. 2015), one step at a time:

        c_t = sum_s a_ts h_s,  a_t = softmax_s(v^T tanh(W_h h_s + W_s s_{t-1} + b))
        s_t = GRU([y_t; c_t], s_{t-1});   output_t = [s_t; c_t]

    s_0 is a learned projection of the mean of the memory (padding excluded).
    """

    def __init__(self, dim: int, memory_dim: int, hidden: int, units: int):
        super().__init__()
        self.attention = AdditiveAttention(memory_dim, hidden, units, query="given")
        self.cell = nn.GRUCell(dim + memory_dim, hidden)
        self.init = nn.Linear(memory_dim, hidden)

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # (B, T, E) -> (B, T, hidden + Dm)
        memory, mask = self._memory()
        if mask is None:
            pooled = memory.mean(dim=1)
        else:
            m = mask.unsqueeze(-1).to(memory.dtype)
            pooled = (memory * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        s = torch.tanh(self.init(pooled))  # (B, H)
        outputs = []
        for t in range(y.shape[1]):
            a = self.attention.score(s, memory, mask)  # (B, S)
            c = torch.bmm(a.unsqueeze(1), memory).squeeze(1)  # (B, Dm)
            s = self.cell(torch.cat([y[:, t], c], dim=-1), s)
            outputs.append(torch.cat([s, c], dim=-1))
        return torch.stack(outputs, dim=1)


@register_layer("additive_decoder")
def additive_decoder(x: TensorType, ctx: BuildContext, hidden: int, units: int | None = None) -> Built:
    """GRU decoder with additive (Bahdanau) attention over the encoder: (T, E) -> (T, hidden + Dm)."""
    t, e = x.expect(rank=2, what="embedded targets (T, E)")
    memory = _need_memory(ctx, "additive_decoder")
    dm = memory.shape[1]
    positive(hidden, "hidden")
    module = AdditiveDecoder(e, dm, hidden, positive(units or hidden, "units"))
    return module, x.derive((t, hidden + dm), layout="sequence")
