"""Attention maps per layer and head, read through the layers' weights-returning path.

Training and inference run attention through PyTorch's fused kernel, which never forms the
(T, S) weight matrix. To read the weights, `recording` swaps each attention module's forward
for its `forward_with_weights` (the math path: softmax(q kᵀ/√d) v written out) while a batch
runs, and puts the fused forward back afterwards. Each call's math-path output is compared
with the fused kernel's on the same input, so a map is known to belong to the computation it
explains (the largest difference is reported with the maps).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..layers import AdditiveAttention, SelfAttention
from ..model import LeafInfo

ATTENTION_TYPES = (SelfAttention, AdditiveAttention)


@dataclass(frozen=True)
class AttentionMap:
    """One attention layer's weights over the explained samples.

    layer      the spec path of the leaf it belongs to (an encoder block's gets `.attn`)
    weights    (N, heads, T, S): row t is how query t spreads over the keys; rows sum to 1
    entropy    (heads,) mean over samples and queries of −Σ w log w, in nats
    uniform    the same mean for uniform weights over the keys each query may see (log S
               without a causal mask): the most an entropy can be
    difference max |math-path output − fused output| of the layer on the same input
    scale      max |fused output|: float32 rounds at about 1e-7 of it, so `difference`
               divided by it (`relative`) is what says the two paths agree
    """

    layer: str
    weights: np.ndarray
    entropy: np.ndarray
    uniform: float
    difference: float = 0.0
    scale: float = 1.0

    @property
    def relative(self) -> float:
        return self.difference / self.scale if self.scale > 0 else self.difference

    @property
    def heads(self) -> int:
        return self.weights.shape[1]


def attention_modules(net: nn.Module, layers: list[LeafInfo]) -> list[tuple[str, nn.Module]]:
    """(spec path, module) of every attention module in build order."""
    leaves = sorted(((leaf.module_name, leaf.path) for leaf in layers), key=lambda p: -len(p[0]))
    found = []
    for name, module in net.named_modules():
        if not isinstance(module, ATTENTION_TYPES):
            continue
        owner, path = next(((m, p) for m, p in leaves if name == m or name.startswith(m + ".")), (name, name))
        found.append((path + name[len(owner):], module))
    return found


@contextmanager
def recording(modules: list[tuple[str, nn.Module]], compare: bool = True
              ) -> Iterator[dict[str, list[tuple[torch.Tensor, float]]]]:
    """While inside, each module's forward is its `forward_with_weights`; every call appends
    (weights, max |math output − fused output|, max |fused output|) to the dict under its path
    (the fused forward runs on the same input for that comparison unless `compare` is False)."""
    seen: dict[str, list[tuple[torch.Tensor, float, float]]] = {path: [] for path, _ in modules}

    def wrap(path: str, module: nn.Module):  # noqa: ANN202
        def forward(x: torch.Tensor) -> torch.Tensor:
            out, weights = module.forward_with_weights(x)
            diff, scale = 0.0, 1.0
            if compare and out.numel():
                fused = type(module).forward(module, x)
                diff, scale = float((out - fused).abs().max()), float(fused.abs().max())
            seen[path].append((weights.detach(), diff, scale))
            return out
        return forward

    try:
        for path, module in modules:
            module.forward = wrap(path, module)   # an instance attribute shadows the class's forward
        yield seen
    finally:
        for _, module in modules:
            module.__dict__.pop("forward", None)


def head_entropy(weights: torch.Tensor) -> tuple[np.ndarray, float]:
    """Per head (heads,) the mean entropy of the rows in nats, and the uniform reference."""
    w = weights.double()
    rows = -torch.xlogy(w, w).sum(-1)                 # (N, H, T)
    allowed = (w > 0).sum(-1).clamp(min=1).double()   # keys each query sees (a causal mask hides some)
    return rows.mean((0, 2)).numpy(), float(torch.log(allowed).mean())


def attention_maps(net: nn.Module, layers: list[LeafInfo], x: torch.Tensor
                   ) -> tuple[list[AttentionMap], float]:
    """Every attention layer's maps on the batch x, and the largest relative difference between
    a layer's output through the math path and through its fused kernel (on the same input)."""
    modules = attention_modules(net, layers)
    with torch.no_grad(), recording(modules) as seen:
        net(x)
    maps = []
    for path, _ in modules:
        for call, (weights, diff, scale) in enumerate(seen[path]):  # a module run twice (shared) gives two maps
            entropy, uniform = head_entropy(weights)
            name = path if len(seen[path]) == 1 else f"{path} (call {call + 1})"
            maps.append(AttentionMap(name, weights.float().numpy(), entropy, uniform, diff, scale))
    return maps, max((a.relative for a in maps), default=0.0)
