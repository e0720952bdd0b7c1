"""The outputs of a few meta-device ops, found without PyTorch's Python kernels.

On the meta device PyTorch runs many ops through Python reference kernels (torch._refs,
torch._decomp). Their type-promotion wrappers are wrapped in `torch._disable_dynamo`, which
imports torch._dynamo (and sympy) the first time one of them runs: 1.2-1.5 s, ten times what
the whole 7B inspection costs after it. The inspector's dispatch mode asks `meta_output` for
the output of every op it prices; for the ops below, the ones a llama- or GPT-style transformer
and its loss run, the answer is made here: an empty meta tensor of the shape, strides, dtype and
storage size PyTorch's kernel gives, by the rules that kernel follows (broadcasting, type
promotion, the stride order of TensorIterator), written for concrete sizes. An input a rule
does not cover (mixed 0-dim operands, `alpha=`, channels-last concatenation, ...) gets None
and PyTorch's kernel runs, as for every other op.

tests/test_meta_rules.py holds each rule to PyTorch's kernel over many layouts, and every zoo
spec's inspection to the one without these rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import torch

aten = torch.ops.aten
_FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# Python kernels compute low-precision floats in fp32 and cast the result back.
_COMPUTED_IN = {torch.bfloat16: torch.float32, torch.float16: torch.float32}

_ENABLED = True   # private switch: False runs PyTorch's kernel for every op (tests compare)
_CHECK = False    # private switch: also run PyTorch's kernel and fail where the two differ


def meta_output(func: Any, args: tuple, kwargs: dict) -> Any:
    """The op's output: made by its rule where one covers these inputs, else by PyTorch."""
    rule = _RULES.get(func) if _ENABLED else None
    out = None
    if rule is not None:
        with torch._C.DisableTorchFunction():  # plain tensor ops, outside any function mode
            out = rule(*args, **kwargs)
    if out is None:
        return func(*args, **kwargs)
    if _CHECK:
        _same_layout(func, out, func(*args, **kwargs))
    return out


def _same_layout(func: Any, got: Any, want: Any) -> None:
    def layout(t: Any) -> Any:
        if isinstance(t, torch.Tensor):
            return (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, t.device.type,
                    t.untyped_storage().nbytes())
        return tuple(layout(x) for x in t) if isinstance(t, tuple | list) else t

    if layout(got) != layout(want):
        raise AssertionError(f"meta rule for {func}: expected {layout(want)} as PyTorch's kernel gives. "
                             f"Received: {layout(got)}")


# ----------------------------------------------------- TensorIterator's stride order

def _is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """torch._prims_common.is_contiguous for concrete sizes (size-1 dims have any stride)."""
    if math.prod(shape) < 2:
        return True
    expected = 1
    for size, stride in zip(reversed(shape), reversed(strides), strict=True):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _is_channels_last(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """torch._prims_common.is_channels_last_contiguous_2d for concrete sizes."""
    if len(shape) != 4:
        return False
    expected = 1
    for d in (1, 3, 2, 0):
        if shape[d] == 1:
            continue
        if strides[d] != expected:
            return False
        expected *= shape[d]
    return True


def _output_order(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """The order, outermost first, in which an elementwise op lays out the dims of its output
    from operands of one `shape` and these `strides`: torch._prims_common's
    compute_elementwise_output_logical_to_physical_perm for concrete sizes."""
    ndim = len(shape)
    if ndim < 2:
        return list(range(ndim))
    contiguous = all(_is_contiguous(shape, s) for s in strides)
    channels_last = all(_is_channels_last(shape, s) for s in strides)
    if contiguous and not channels_last:
        return list(range(ndim))
    if channels_last and not contiguous:
        return [0, *range(2, ndim), 1]

    def ge(a: int, b: int) -> bool:
        return True if b == 0 else False if a == 0 else a >= b or a % b == 0

    def should_swap(a: int, b: int) -> int:
        for s in strides:
            if s[a] == 0 or s[b] == 0:  # a broadcast dim says nothing about the order
                continue
            if s[a] == s[b]:
                if ge(shape[b], shape[a]):
                    continue
                return 1
            if ge(s[b], s[a]):
                return -1
            if ge(s[a], s[b]):
                return 1
        return 0

    perm = list(reversed(range(ndim)))  # sorted innermost first, by insertion, as PyTorch does
    for i in range(1, ndim):
        dim1 = i
        for dim0 in reversed(range(i)):
            swap = should_swap(perm[dim0], perm[dim1])
            if swap > 0:
                perm[dim0], perm[dim1] = perm[dim1], perm[dim0]
                dim1 = dim0
            elif swap < 0:
                break
    return list(reversed(perm))


def _strides_like_channels_last(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """torch._prims_common.are_strides_like_channels_last_or_false for concrete sizes."""
    if len(shape) == 4:
        order = (1, 3, 2, 0)
    elif len(shape) == 5:
        order = (1, 4, 3, 2, 0)
    else:
        return False
    if strides[1] == 0:
        return False
    low = 0
    for d in order:
        if shape[d] == 0 or strides[d] < low:
            return False
        if d == 0 and low == strides[1]:
            return False
        low = strides[d] * shape[d]
    return True


# ------------------------------------------------------------------------ the rules

def _plain(t: Any) -> bool:
    return (isinstance(t, torch.Tensor) and t.device.type == "meta" and t.layout == torch.strided
            and t.dtype in _FLOATS)


def _broadcast(shapes: Sequence[Sequence[int]]) -> tuple[int, ...] | None:
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for s in shapes:
        for i, size in enumerate(s, ndim - len(s)):
            if size != out[i]:
                if out[i] != 1 and size != 1:
                    return None  # not broadcastable: PyTorch's kernel raises its own error
                out[i] = size if out[i] == 1 else out[i]
    return tuple(out)


def _pointwise(*tensors: torch.Tensor) -> torch.Tensor | None:
    """An elementwise op on floating tensors (and Python numbers, left out of `tensors`), as
    torch._refs computes it: promote, cast to the compute dtype, broadcast, lay the output
    out in TensorIterator's order, cast back."""
    if not all(map(_plain, tensors)):
        return None
    if len(tensors) > 1 and any(t.ndim == 0 for t in tensors):
        return None  # a 0-dim operand counts for less in type promotion: not modelled
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    compute = _COMPUTED_IN.get(dtype, dtype)
    # The cast to the compute dtype comes first and lays out a strided input densely.
    cast = [t if t.dtype == compute else t.to(compute) for t in tensors]
    shape = _broadcast([t.shape for t in cast])
    if shape is None:
        return None
    operands = [t if tuple(t.shape) == shape else t.expand(shape) for t in cast]
    order = _output_order(shape, [t.stride() for t in operands])
    # The cast back to `dtype` keeps the dense layout, so the output is made in it at once.
    return torch.empty_permuted(shape, order, dtype=dtype, device="meta")


def _binary(a: Any, b: Any, **alpha: Any) -> torch.Tensor | None:  # add, sub, mul, div
    # With alpha= PyTorch's kernel scales the broadcast b first: another layout, not modelled.
    return _pointwise(a, b) if isinstance(b, torch.Tensor) and not alpha else None


def _pow_scalar(a: Any, exponent: Any) -> torch.Tensor | None:
    # PyTorch's kernel returns a.clone() for exponent 1 (a clone keeps the input's strides).
    if not isinstance(exponent, int | float) or isinstance(exponent, bool) or exponent == 1:
        return None
    return _pointwise(a)


def _unary(a: Any) -> torch.Tensor | None:
    return _pointwise(a)


def _dims(ndim: int, dim: Any) -> set[int] | None:
    if dim is None or (isinstance(dim, list | tuple) and len(dim) == 0):
        return set(range(ndim))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not all(isinstance(d, int) and -max(ndim, 1) <= d < max(ndim, 1) for d in dims):
        return None
    out = {d % max(ndim, 1) for d in dims}
    return out if len(out) == len(dims) and ndim > 0 else None


def _mean(a: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> torch.Tensor | None:
    # A reduction's output is contiguous; dividing it by the count keeps that layout, except
    # in 4 dims where a tensor can be both contiguous and channels-last (not modelled).
    if not _plain(a) or dtype is not None:
        return None
    dims = _dims(a.ndim, dim)
    if dims is None:
        return None
    shape = [1 if i in dims else n for i, n in enumerate(a.shape)] if keepdim else \
        [n for i, n in enumerate(a.shape) if i not in dims]
    if len(shape) == 4:
        return None
    return torch.empty(shape, dtype=a.dtype, device="meta")


def _cat(tensors: Any, dim: int = 0) -> torch.Tensor | None:
    # PyTorch's kernel concatenates into a contiguous tensor and clones it channels-last only
    # where every input is laid out so (not modelled).
    if not isinstance(tensors, list | tuple) or not tensors or not all(map(_plain, tensors)):
        return None
    first = tensors[0]
    if any(t.dtype != first.dtype or t.ndim != first.ndim or t.numel() == 0 for t in tensors) or first.ndim == 0:
        return None
    if not -first.ndim <= dim < first.ndim:
        return None
    dim %= first.ndim
    if any(tuple(t.shape[:dim]) + tuple(t.shape[dim + 1:]) != tuple(first.shape[:dim]) + tuple(first.shape[dim + 1:])
           for t in tensors):
        return None
    if all(_strides_like_channels_last(t.shape, t.stride()) for t in tensors):
        return None
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=first.dtype, device="meta")


def _log_softmax(x: Any, dim: int, half_to_float: bool) -> torch.Tensor | None:
    # Logits as the loss sees them, (N, classes) over the classes: the output is contiguous.
    if not _plain(x) or half_to_float or x.ndim != 2 or dim not in (1, -1) or x.shape[1] < 2 or x.shape[0] < 1:
        return None
    return torch.empty(tuple(x.shape), dtype=x.dtype, device="meta")


def _nll_loss(x: Any, target: Any, weight: Any, reduction: int, ignore_index: int) -> tuple | None:
    # Mean or sum over (N, classes) without class weights: the loss and the count of targets
    # not ignored, each a scalar of the input's dtype.
    if (not _plain(x) or weight is not None or reduction not in (1, 2) or x.ndim != 2
            or not isinstance(target, torch.Tensor) or target.device.type != "meta"
            or target.dtype != torch.long or tuple(target.shape) != (x.shape[0],)):
        return None
    return (torch.empty((), dtype=x.dtype, device="meta"), torch.empty((), dtype=x.dtype, device="meta"))


def _like(a: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """torch.empty_like(a) as torch._refs computes it on meta: dense, in a's stride order."""
    shape = tuple(a.shape)
    return torch.empty_permuted(shape, _output_order(shape, [a.stride()]), dtype=dtype or a.dtype, device="meta")


def _silu(a: Any) -> torch.Tensor | None:
    return _like(a) if _plain(a) else None


def _mm(a: Any, b: Any) -> torch.Tensor | None:
    if not (_plain(a) and _plain(b)) or a.dtype != b.dtype or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        return None
    return torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device="meta")


def _embedding(weight: Any, indices: Any, padding_idx: int = -1, scale_grad_by_freq: bool = False,
               sparse: bool = False) -> torch.Tensor | None:
    if (not _plain(weight) or weight.ndim != 2 or not isinstance(indices, torch.Tensor)
            or indices.device.type != "meta" or indices.dtype not in (torch.long, torch.int32)):
        return None
    return torch.empty((*indices.shape, weight.shape[1]), dtype=weight.dtype, device="meta")


def _flash_attention_cpu(q: Any, k: Any, v: Any, dropout_p: float = 0.0, is_causal: bool = False,
                         attn_mask: Any = None, scale: Any = None) -> tuple | None:
    # The output is laid out like the query; the log-sum-exp, fp32 for low-precision inputs,
    # is made (batch, query length, heads) and handed out as its (batch, heads, length) view.
    if not (_plain(q) and q.ndim == 4):
        return None
    b, h, t, _ = q.shape
    logsumexp = torch.empty((b, t, h), dtype=_COMPUTED_IN.get(q.dtype, q.dtype), device="meta").transpose(1, 2)
    return _like(q), logsumexp


def _add_scalar_(a: Any, other: Any, alpha: Any = 1) -> torch.Tensor | None:
    # In place: PyTorch's kernel checks that the result keeps a's dtype and returns a itself.
    ok = isinstance(other, int | float) and not isinstance(other, bool) and isinstance(alpha, int | float)
    return a if ok and _plain(a) else None


def _zeros(size: Any, *, dtype: Any = None, layout: Any = None, device: Any = None,
           pin_memory: Any = None) -> torch.Tensor | None:
    if device is None or torch.device(device).type != "meta" or layout not in (None, torch.strided) or pin_memory:
        return None
    return torch.empty(size, dtype=dtype or torch.get_default_dtype(), device="meta")


def _gelu(a: Any, approximate: str = "none") -> torch.Tensor | None:
    return _pointwise(a) if approximate in ("none", "tanh") else None


def _addmm(bias: Any, a: Any, b: Any, *, beta: Any = 1, alpha: Any = 1) -> torch.Tensor | None:
    # A linear layer's bias (out,) or a full (rows, out) term: PyTorch's kernel adds it to the
    # contiguous product, which sets the layout.
    if beta != 1 or alpha != 1 or _mm(a, b) is None or not _plain(bias) or bias.dtype != a.dtype:
        return None
    shape = (a.shape[0], b.shape[1])
    if tuple(bias.shape) not in (shape[1:], shape) or not _is_contiguous(bias.shape, bias.stride()):
        return None
    return torch.empty(shape, dtype=a.dtype, device="meta")


def _layer_norm(x: Any, normalized_shape: Any, weight: Any, bias: Any, eps: float) -> tuple | None:
    """torch._refs.native_layer_norm's outputs: (x - mean) * rstd [* weight] [+ bias] on x made
    contiguous, in x's dtype; the mean and 1/std it saves, contiguous, with the normalized dims
    kept as 1, in the compute dtype (fp32 for low precision; meta tensors are not cast back)."""
    n = len(normalized_shape)
    shape = tuple(x.shape) if isinstance(x, torch.Tensor) else ()
    if not _plain(x) or x.ndim == 4 or n < 1 or x.ndim < n or shape[x.ndim - n:] != tuple(normalized_shape):
        return None  # (in 4 dims a tensor can be both contiguous and channels-last: not modelled)
    for p in (weight, bias):
        if p is not None and (not _plain(p) or p.dtype != x.dtype or tuple(p.shape) != tuple(normalized_shape)):
            return None
    compute = _COMPUTED_IN.get(x.dtype, x.dtype)
    stats = torch.empty((*shape[:x.ndim - n], *[1] * n), dtype=compute, device="meta")

    def dense(t: torch.Tensor) -> torch.Tensor:  # torch._refs.contiguous: kept where it already is
        return t if _is_contiguous(t.shape, t.stride()) else torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")

    # Each step is an elementwise op: its output is laid out in the order of its operands.
    out = dense(x)
    for other in (stats, stats, weight, bias):  # - mean, * rstd, * weight, + bias
        if other is not None:
            operand = dense(other).expand(shape)
            out = torch.empty_permuted(shape, _output_order(shape, [out.stride(), operand.stride()]),
                                       dtype=x.dtype, device="meta")
    return out, stats, torch.empty(tuple(stats.shape), dtype=compute, device="meta")


_RULES: dict[Any, Callable[..., Any]] = {
    aten.add.Tensor: _binary, aten.sub.Tensor: _binary, aten.mul.Tensor: _binary, aten.div.Tensor: _binary,
    aten.pow.Tensor_Scalar: _pow_scalar, aten.rsqrt.default: _unary,
    aten.mean.dim: _mean, aten.cat.default: _cat,
    aten._log_softmax.default: _log_softmax, aten.nll_loss_forward.default: _nll_loss,
    # Kernels that do not import torch._dynamo, but torch.fx's symbolic shapes and sympy
    # (0.35 s): their checks (torch._check) and torch.empty_like's stride order live there.
    aten.silu.default: _silu, aten.mm.default: _mm, aten.embedding.default: _embedding,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _flash_attention_cpu,
    aten.add_.Scalar: _add_scalar_, aten.zeros.default: _zeros,
    # GPT-2 and ViT: layer norm, the biased linear layer, GELU.
    aten.native_layer_norm.default: _layer_norm, aten.addmm.default: _addmm, aten.gelu.default: _gelu,
}
