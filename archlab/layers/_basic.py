"""Dense, activation, normalisation, shape, embedding and pooling-over-sequence layers."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core import ShapeError, SpecError
from ._registry import BuildContext, Built, TensorType, positive, probability, register_layer

# ------------------------------------------------------------------------- dense


@register_layer("linear", "dense")
def linear(x: TensorType, out: int, bias: bool = True) -> Built:
    """Dense layer on the last dimension: (..., F) -> (..., out)."""
    *rest, features = x.expect(min_rank=1)
    positive(out, "out")
    layout = "flat" if not rest else x.layout
    return nn.Linear(features, out, bias=bias), x.derive((*rest, out), layout=layout)


# ------------------------------------------------------------------- activations


def _activation(name: str, module: type[nn.Module], doc: str) -> None:
    def fn(x: TensorType) -> Built:
        x.expect(min_rank=1)
        return module(), x.derive(x.shape)

    fn.__doc__ = doc
    fn.__name__ = name
    register_layer(name)(fn)


_activation("relu", nn.ReLU, "max(0, x), elementwise.")
_activation("silu", nn.SiLU, "x * sigmoid(x) (swish), elementwise.")
_activation("sigmoid", nn.Sigmoid, "1 / (1 + exp(-x)), elementwise.")
_activation("tanh", nn.Tanh, "Hyperbolic tangent, elementwise.")
_activation("identity", nn.Identity, "Passes its input through unchanged.")


@register_layer("gelu")
def gelu(x: TensorType, approximate: Literal["none", "tanh"] = "none") -> Built:
    """Gaussian error linear unit, elementwise (approximate: none | tanh)."""
    x.expect(min_rank=1)
    return nn.GELU(approximate=approximate), x.derive(x.shape)


@register_layer("leaky_relu")
def leaky_relu(x: TensorType, slope: float = 0.01) -> Built:
    """max(0, x) + slope * min(0, x), elementwise."""
    x.expect(min_rank=1)
    return nn.LeakyReLU(slope), x.derive(x.shape)


@register_layer("softmax")
def softmax(x: TensorType, dim: int = -1) -> Built:
    """Softmax over one per-sample dimension (default: the last)."""
    x.expect(min_rank=1)
    _check_dim(dim, x)
    # Per-sample dim d is tensor dim d+1 (the batch comes first); negative dims are the same.
    return nn.Softmax(dim=dim if dim < 0 else dim + 1), x.derive(x.shape)


def _check_dim(dim: int, x: TensorType) -> None:
    if not -x.rank <= dim < x.rank:
        raise SpecError(f"dim {dim} is out of range for a per-sample shape {x.describe()}")


@register_layer("dropout")
def dropout(x: TensorType, p: float = 0.5) -> Built:
    """Zeroes elements with probability p during training."""
    x.expect(min_rank=1)
    return nn.Dropout(probability(p, "p")), x.derive(x.shape)


# ------------------------------------------------------------------ normalisation


@register_layer("batchnorm")
def batchnorm(x: TensorType, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True) -> Built:
    """Batch normalisation over channels: (F,), (C, L) or (C, H, W)."""
    if x.layout == "sequence":
        raise ShapeError(f"expects (F,), (C,L) or (C,H,W) input, got a sequence {x.describe()} "
                         f"produced by {x.source}; use layernorm or rmsnorm on sequences")
    shape = x.expect(rank=(1, 2, 3), what="(F,), (C,L) or (C,H,W)")
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    return cls(shape[0], eps=eps, momentum=momentum, affine=affine), x.derive(shape)


@register_layer("layernorm")
def layernorm(x: TensorType, eps: float = 1e-5, bias: bool = True) -> Built:
    """Layer normalisation over the last dimension."""
    shape = x.expect(min_rank=1)
    return nn.LayerNorm(shape[-1], eps=eps, bias=bias), x.derive(shape)


@register_layer("rmsnorm")
def rmsnorm(x: TensorType, eps: float = 1e-6) -> Built:
    """Root-mean-square normalisation over the last dimension (no mean, no bias)."""
    shape = x.expect(min_rank=1)
    return nn.RMSNorm(shape[-1], eps=eps), x.derive(shape)


def make_norm(kind: str, dim: int, eps: float | None = None) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps or 1e-5)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps or 1e-6)
    raise SpecError(f"norm must be layernorm or rmsnorm. Received: {kind!r}")


# -------------------------------------------------------------------------- shape


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Permute(nn.Module):
    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, *(d + 1 for d in self.dims))

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


@register_layer("flatten")
def flatten(x: TensorType) -> Built:
    """Flattens the per-sample shape: (C, H, W) -> (C*H*W,)."""
    shape = x.expect(min_rank=1)
    return nn.Flatten(), x.derive((math.prod(shape),), layout="flat")


@register_layer("reshape")
def reshape(x: TensorType, shape: tuple[int, ...],
            layout: Literal["flat", "channels", "sequence"] | None = None) -> Built:
    """Reshapes per sample; one entry may be -1. Example: reshape: [1, 28, 28]."""
    total = math.prod(x.expect(min_rank=1, dtype=None))
    if not shape or shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
        raise SpecError(f"argument 'shape' takes positive sizes and at most one -1. Received: {list(shape)}")
    known = math.prod(d for d in shape if d != -1)
    if -1 in shape:
        if total % known:
            raise ShapeError(f"cannot reshape {x.describe()} ({total} values) to {list(shape)}: "
                             f"{total} is not divisible by {known}")
        shape = tuple(total // known if d == -1 else d for d in shape)
    elif known != total:
        raise ShapeError(f"cannot reshape {x.describe()} ({total} values) to {list(shape)} "
                         f"({known} values); input produced by {x.source}")
    out_layout = layout or ("flat" if len(shape) == 1 else "channels")
    return Reshape(shape), x.derive(shape, dtype=x.dtype, layout=out_layout)


@register_layer("permute")
def permute(x: TensorType, dims: tuple[int, ...],
            layout: Literal["flat", "channels", "sequence"] | None = None) -> Built:
    """Reorders per-sample dims, e.g. permute: [1, 0] turns (T, D) into (D, T) for conv1d."""
    shape = x.expect(min_rank=2, dtype=None)
    if sorted(dims) != list(range(len(shape))):
        raise SpecError(f"argument 'dims' must be a permutation of 0..{len(shape) - 1}. "
                        f"Received: {list(dims)}")
    new = tuple(shape[d] for d in dims)
    if layout is None:
        layout = {"sequence": "channels", "channels": "sequence"}.get(x.layout, x.layout)
    return Permute(dims), x.derive(new, dtype=x.dtype, layout=layout)


# ---------------------------------------------------------------------- embeddings


@register_layer("embedding")
def embedding(x: TensorType, vocab: int, dim: int, padding_idx: int | None = None,
              init_std: float = 0.02) -> Built:
    """Token ids (T,) -> vectors (T, dim), vocab x dim, init N(0, init_std): 0.02 as GPT-2, 1.0 as torch (small towers)."""
    shape = x.expect(rank=1, dtype="long", what="token ids (T,)")
    positive(vocab, "vocab")
    positive(dim, "dim")
    if padding_idx is not None and not -vocab <= padding_idx < vocab:
        raise SpecError(f"argument 'padding_idx' must be a token id below vocab {vocab}. "
                        f"Received: {padding_idx}")
    if not init_std > 0:
        raise SpecError(f"argument 'init_std' must be > 0. Received: {init_std}")
    module = nn.Embedding(vocab, dim, padding_idx=padding_idx)
    # PyTorch's N(0, 1) makes tied output logits of size ~dim (a loss of ~dim at the start);
    # 0.02 is GPT-2's choice and close to Keras's uniform(-0.05, 0.05).
    nn.init.normal_(module.weight, std=init_std)
    if padding_idx is not None:
        with torch.no_grad():
            module.weight[padding_idx].zero_()
    return module, x.derive((*shape, dim), layout="sequence")


class LearnedPositions(nn.Module):
    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)
        self.offset = 0  # position of x's first step; set while decoding with a KV cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return x + self.weight[self.offset:self.offset + x.shape[1]]


class SinusoidalPositions(nn.Module):
    """The fixed encodings of "Attention Is All You Need"; a buffer, not a parameter."""

    def __init__(self, max_len: int, dim: int, base: float = 10000.0):
        super().__init__()
        self.max_len, self.dim, self.base = max_len, dim, base
        self.register_buffer("table", self._table(), persistent=False)
        self.offset = 0  # position of x's first step; set while decoding with a KV cache

    def _table(self) -> torch.Tensor:
        if torch.empty(0).device.type == "meta":  # the inspector's build: shapes only (see rope_tables)
            return torch.empty(self.max_len, self.dim)
        pos = torch.arange(self.max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float32)
                         * (-math.log(self.base) / self.dim))
        table = torch.zeros(self.max_len, self.dim)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)[:, : self.dim // 2]
        return table

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return x + self.table[self.offset:self.offset + x.shape[1]].to(x.dtype)


class PrependTokens(nn.Module):
    """Learned vectors put before the sequence (ViT's and BERT's class token): (T, D) -> (n + T, D)."""

    def __init__(self, n: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return torch.cat([self.weight.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)


@register_layer("prepend")
def prepend(x: TensorType, tokens: int = 1) -> Built:
    """Puts `tokens` learned vectors before a (T, D) sequence (a class token); `seq_pool: first` reads it."""
    t, d = x.expect(rank=2, layout="sequence", what="a sequence (T, D)")
    return PrependTokens(positive(tokens, "tokens"), d), x.derive((tokens + t, d))


@register_layer("pos_embedding")
def pos_embedding(x: TensorType, max_len: int | None = None) -> Built:
    """Adds a learned position vector to each step of a (T, D) sequence."""
    t, d = x.expect(rank=2, layout="sequence", what="a sequence (T, D)")
    max_len = positive(max_len or t, "max_len")
    if max_len < t:
        raise ShapeError(f"max_len {max_len} is shorter than the sequence length {t} "
                         f"produced by {x.source}")
    return LearnedPositions(max_len, d), x.derive((t, d))


@register_layer("sinusoidal")
def sinusoidal(x: TensorType, max_len: int | None = None, base: float = 10000.0) -> Built:
    """Adds fixed sine/cosine position encodings to a (T, D) sequence."""
    t, d = x.expect(rank=2, layout="sequence", what="a sequence (T, D)")
    max_len = positive(max_len or t, "max_len")
    if max_len < t:
        raise ShapeError(f"max_len {max_len} is shorter than the sequence length {t}")
    if not base > 0:
        raise SpecError(f"argument 'base' must be positive. Received: {base}")
    return SinusoidalPositions(max_len, d, base), x.derive((t, d))


class TiedLinear(nn.Module):
    """Output projection that reuses an embedding's table (weight tying, as in GPT-2).

    The embedding is held in a tuple so it is not registered twice: its weight stays one
    parameter under its own state_dict key.
    """

    def __init__(self, embedding: nn.Embedding, tied_to: str, bias: bool = False):
        super().__init__()
        self._embedding = (embedding,)
        self.tied_to = tied_to
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._embedding[0].weight, self.bias)

    def extra_repr(self) -> str:
        return f"tied_to={self.tied_to}"


@register_layer("unembed")
def unembed(x: TensorType, ctx: BuildContext, bias: bool = False) -> Built:
    """(..., D) -> (..., vocab) through the transposed table of the latest embedding (tied)."""
    *rest, d = x.expect(min_rank=1)
    found = ctx.latest("embedding")
    if found is None:
        raise SpecError("unembed ties its weights to an earlier `embedding` layer, and there is none")
    path, emb = found
    assert isinstance(emb, nn.Embedding)
    if emb.embedding_dim != d:
        raise ShapeError(f"input has {d} features but {path} has dim {emb.embedding_dim}")
    return TiedLinear(emb, path, bias), x.derive((*rest, emb.num_embeddings))


# -------------------------------------------------------------------- sequence pooling


class SeqPool(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "max":
            return x.amax(dim=1)
        return x[:, 0] if self.mode == "first" else x[:, -1]

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


@register_layer("seq_pool")
def seq_pool(x: TensorType, mode: Literal["mean", "max", "first", "last"] = "mean") -> Built:
    """Pools a (T, D) sequence over time to (D,)."""
    _, d = x.expect(rank=2, what="a sequence (T, D)")
    return SeqPool(mode), x.derive((d,), layout="flat")


# ---------------------------------------------------------------------------- MLPs


class SwiGLU(nn.Module):
    """Gated MLP of PaLM/Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class MLP(nn.Module):
    """The transformer feed-forward block: proj(act(fc(x))). `gelu` is GPT-2's tanh approximation,
    `gelu_exact` the erf form of BERT and ViT."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", bias: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.act = {"gelu": nn.GELU(approximate="tanh"), "gelu_exact": nn.GELU(), "relu": nn.ReLU()}[activation]
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


@register_layer("swiglu")
def swiglu(x: TensorType, hidden: int, bias: bool = False) -> Built:
    """Gated MLP (SwiGLU) on the last dim: (..., D) -> (..., D) through `hidden` units."""
    shape = x.expect(min_rank=1)
    return SwiGLU(shape[-1], positive(hidden, "hidden"), bias), x.derive(shape)


@register_layer("mlp")
def mlp(x: TensorType, hidden: int, activation: Literal["gelu", "gelu_exact", "relu"] = "gelu",
        bias: bool = True, dropout: float = 0.0) -> Built:
    """Two-layer feed-forward block on the last dim: (..., D) -> (..., D)."""
    shape = x.expect(min_rank=1)
    return MLP(shape[-1], positive(hidden, "hidden"), activation, bias, probability(dropout, "dropout")), \
        x.derive(shape)
