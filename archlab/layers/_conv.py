"""Convolution and pooling over channel-first feature maps: (C, L) and (C, H, W)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..core import ShapeError, SpecError
from ._registry import Built, IntOrList, TensorType, pair, positive, register_layer


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool = False) -> int:
    span = dilation * (kernel - 1) + 1
    num = size + 2 * pad - span
    out = (-(-num // stride) if ceil else num // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:  # PyTorch: the last window must start in the input
        out -= 1
    return out


def _at_least(values: tuple[int, ...], low: int, name: str) -> tuple[int, ...]:
    """Kernel sizes, strides and dilations must be >= 1, paddings >= 0 (PyTorch's rules)."""
    if any(v < low for v in values):
        what = "positive" if low > 0 else "non-negative"
        raise SpecError(f"argument {name!r} must be {what}. Received: {list(values)}")
    return values


Groups = int | Literal["depthwise"]


def _conv(x: TensorType, n: int, out: int | None, kernel: IntOrList, stride: IntOrList,
          padding: IntOrList | str, dilation: IntOrList, groups: Groups, bias: bool) -> Built:
    what = "(C,L)" if n == 1 else "(C,H,W)"
    if x.layout == "sequence":
        raise ShapeError(f"expects {what} input, got a sequence {x.describe()} produced by "
                         f"{x.source}; conv{n}d wants channels first: add `permute: [1, 0]` before it")
    c, *spatial = x.expect(rank=n + 1, what=what)
    if groups == "depthwise":  # one filter group per input channel (MobileNet); `out` defaults to C
        groups = c
        out = c if out is None else out
    elif out is None:
        raise SpecError("missing required argument 'out' (the number of output channels); only "
                        "`groups: depthwise` may leave it out, keeping the channel count")
    positive(out, "out")
    k, s, d = pair(kernel, n, "kernel"), pair(stride, n, "stride"), pair(dilation, n, "dilation")
    for values, name in ((k, "kernel"), (s, "stride"), (d, "dilation")):
        _at_least(values, 1, name)
    if groups < 1 or c % groups or out % groups:
        raise SpecError(f"argument 'groups'={groups} must divide both in channels {c} and out {out}")
    if padding == "same":
        if any(si != 1 for si in s):
            raise SpecError(f"padding 'same' needs stride 1 (PyTorch's rule). Received: stride={list(s)}; "
                            f"use an explicit padding such as {(k[0] - 1) // 2}")
        p_arg: str | tuple[int, ...] = "same"
        out_spatial = spatial
    elif padding == "valid":
        p_arg, p = "valid", (0,) * n
        out_spatial = [_out_size(z, ki, si, 0, di) for z, ki, si, di in zip(spatial, k, s, d, strict=True)]
    elif isinstance(padding, str):
        raise SpecError(f"argument 'padding' expected an integer, 'same' or 'valid'. Received: {padding!r}")
    else:
        p = _at_least(pair(padding, n, "padding"), 0, "padding")
        p_arg = p
        out_spatial = [_out_size(z, ki, si, pi, di) for z, ki, si, pi, di in zip(spatial, k, s, p, d, strict=True)]
    if any(o <= 0 for o in out_spatial):
        raise ShapeError(f"kernel {list(k)} does not fit the input {x.describe()} produced by "
                         f"{x.source}; use padding: same or a smaller kernel")
    cls = nn.Conv1d if n == 1 else nn.Conv2d
    module = cls(c, out, k, stride=s, padding=p_arg, dilation=d, groups=groups, bias=bias)
    return module, x.derive((out, *out_spatial), layout="channels")


@register_layer("conv1d")
def conv1d(x: TensorType, out: int | None = None, kernel: IntOrList = 3, stride: IntOrList = 1,
           padding: IntOrList | Literal["same", "valid"] = 0, dilation: IntOrList = 1,
           groups: Groups = 1, bias: bool = True) -> Built:
    """1-D convolution over (C, L) -> (out, L'); `groups: depthwise` is one group per channel."""
    return _conv(x, 1, out, kernel, stride, padding, dilation, groups, bias)


@register_layer("conv2d", "conv")
def conv2d(x: TensorType, out: int | None = None, kernel: IntOrList = 3, stride: IntOrList = 1,
           padding: IntOrList | Literal["same", "valid"] = 0, dilation: IntOrList = 1,
           groups: Groups = 1, bias: bool = True) -> Built:
    """2-D convolution over (C, H, W) -> (out, H', W'); padding may be 'same'; `groups: depthwise`."""
    return _conv(x, 2, out, kernel, stride, padding, dilation, groups, bias)


def _pool(x: TensorType, n: int | None, kind: str, kernel: IntOrList, stride: IntOrList | None,
          padding: IntOrList, ceil: bool) -> Built:
    if n is None:  # pick 1d or 2d from the input rank
        x.expect(rank=(2, 3), what="(C,L) or (C,H,W)")
        n = x.rank - 1
    c, *spatial = x.expect(rank=n + 1, what="(C,L)" if n == 1 else "(C,H,W)")
    k = _at_least(pair(kernel, n, "kernel"), 1, "kernel")
    s = _at_least(pair(stride if stride is not None else kernel, n, "stride"), 1, "stride")
    p = _at_least(pair(padding, n, "padding"), 0, "padding")
    if any(pi * 2 > ki for pi, ki in zip(p, k, strict=True)):
        raise SpecError(f"padding {list(p)} must be at most half the kernel {list(k)} (PyTorch's rule)")
    out_spatial = [_out_size(z, ki, si, pi, 1, ceil) for z, ki, si, pi in zip(spatial, k, s, p, strict=True)]
    if any(o <= 0 for o in out_spatial):
        raise ShapeError(f"pool kernel {list(k)} is larger than the input {x.describe()} produced by "
                         f"{x.source}; remove a pooling layer or use a smaller kernel")
    table = {("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d,
             ("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d}
    module = table[(kind, n)](k, s, p, ceil_mode=ceil)
    return module, x.derive((c, *out_spatial), layout="channels")


def _register_pool(name: str, n: int | None, kind: str) -> None:
    def fn(x: TensorType, kernel: IntOrList = 2, stride: IntOrList | None = None,
           padding: IntOrList = 0, ceil: bool = False) -> Built:
        return _pool(x, n, kind, kernel, stride, padding, ceil)

    dims = {1: "(C, L)", 2: "(C, H, W)", None: "(C, L) or (C, H, W)"}[n]
    fn.__doc__ = f"{'Max' if kind == 'max' else 'Average'} pooling over {dims}; stride defaults to kernel."
    fn.__name__ = name
    register_layer(name)(fn)


_register_pool("maxpool", None, "max")
_register_pool("maxpool1d", 1, "max")
_register_pool("maxpool2d", 2, "max")
_register_pool("avgpool", None, "avg")
_register_pool("avgpool1d", 1, "avg")
_register_pool("avgpool2d", 2, "avg")


class GlobalPool(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, *spatial) -> (B, C)
        dims = tuple(range(2, x.dim()))
        return x.mean(dim=dims) if self.mode == "avg" else x.amax(dim=dims)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


@register_layer("global_avgpool")
def global_avgpool(x: TensorType) -> Built:
    """Averages each channel over all positions: (C, ...) -> (C,)."""
    return _global(x, "avg")


@register_layer("global_maxpool")
def global_maxpool(x: TensorType) -> Built:
    """Takes each channel's maximum over all positions: (C, ...) -> (C,)."""
    return _global(x, "max")


def _global(x: TensorType, mode: str) -> Built:
    if x.layout == "sequence":
        raise ShapeError(f"expects (C,L) or (C,H,W) input, got a sequence {x.describe()} produced "
                         f"by {x.source}; pool a sequence over time with `seq_pool: {mode.replace('avg', 'mean')}`")
    c, *_ = x.expect(rank=(2, 3), what="(C,L) or (C,H,W)")
    return GlobalPool(mode), x.derive((c,), layout="flat")


@register_layer("adaptive_avgpool")
def adaptive_avgpool(x: TensorType, size: IntOrList = 1) -> Built:
    """Average-pools (C, H, W) to a fixed (C, *size), whatever the input size."""
    c, *spatial = x.expect(rank=(2, 3), what="(C,L) or (C,H,W)")
    out = _at_least(pair(size, len(spatial), "size"), 1, "size")
    cls = nn.AdaptiveAvgPool1d if len(spatial) == 1 else nn.AdaptiveAvgPool2d
    return cls(out if len(out) > 1 else out[0]), x.derive((c, *out), layout="channels")
