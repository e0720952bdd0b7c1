"""Unstructured magnitude pruning, for comparison with structured pruning.

It zeroes the smallest weights of every convolution and linear layer (`scope="global"`: one
threshold over all of them; `"layer"`: the same fraction of each) and leaves the network's
shape alone. The tensors stay dense, so a CPU does exactly the same work: MACs and latency
do not change, only the share of zeros does (`measure` shows it). The final output layer
is pruned like the others; biases, norms and embeddings are not.

    >>> from archlab import build
    >>> net, report = magnitude_prune(build("zoo:mlp"), 0.5)
    >>> round(report.sparsity, 2)
    0.5
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..core import SpecError
from ._prune import check_ratio

SCOPES = ("global", "layer")
_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class Sparsity:
    """The share of zeros among the prunable weights, in all and per layer (module name)."""

    ratio: float
    scope: str
    sparsity: float
    zeros: int
    total: int
    layers: tuple[tuple[str, float], ...]

    def summary(self) -> str:
        return (f"{self.sparsity:.1%} of {self.total:,} conv/linear weights are zero ({self.scope} magnitude "
                f"pruning); the tensors stay dense, so MACs and CPU latency do not change")


def _weights(net: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, m.weight) for name, m in net.named_modules() if isinstance(m, _PRUNABLE)]


def sparsity_of(net: nn.Module, ratio: float = 0.0, scope: str = "global") -> Sparsity:
    """How many conv/linear weights of `net` are exactly zero."""
    layers, zeros, total = [], 0, 0
    for name, w in _weights(net):
        z = int((w == 0).sum())
        layers.append((name, z / w.numel()))
        zeros, total = zeros + z, total + w.numel()
    return Sparsity(ratio, scope, zeros / total if total else 0.0, zeros, total, tuple(layers))


def magnitude_prune(net: nn.Module, ratio: float, *, scope: str = "global",
                    inplace: bool = False) -> tuple[nn.Module, Sparsity]:
    """Zero the `ratio` smallest-magnitude conv/linear weights of (a copy of) `net`."""
    ratio = check_ratio(ratio, "--prune")
    if scope not in SCOPES:
        raise SpecError(f"scope: expected one of {', '.join(SCOPES)}. Received: {scope!r}")
    net = net if inplace else copy.deepcopy(net)
    weights = _weights(net)
    if not weights:
        raise SpecError(f"--unstructured: {type(net).__name__} has no convolution or linear weights to prune")
    with torch.no_grad():
        if scope == "global":
            flat = torch.cat([w.detach().abs().flatten() for _, w in weights])
            k = int(ratio * flat.numel())
            if k:
                threshold = flat.kthvalue(k).values
                for _, w in weights:
                    w.masked_fill_(w.abs() <= threshold, 0.0)
        else:
            for _, w in weights:
                k = int(ratio * w.numel())
                if k:
                    order = w.abs().flatten().argsort()[:k]
                    w.view(-1)[order] = 0.0
    return net, sparsity_of(net, ratio, scope)
