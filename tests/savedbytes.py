"""What a real training step keeps for backward, measured: the quantity the inspector prices.

The step runs the forward pass and the trainer's loss (cross-entropy on fp32 logits) under a
saved-tensor hook and sums the storages autograd keeps (each once, weights and buffers excluded).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F


def real_saved_bytes(net: torch.nn.Module, batch: int, autocast: Any = None) -> int:
    net.train()
    weights = {t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in weights:
            saved[storage._cdata] = storage.nbytes()
        return t

    torch.manual_seed(0)
    x = net.example_input(batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast or contextlib.nullcontext():
        out = net(x).float()
        target = torch.zeros(out.shape[:-1].numel(), dtype=torch.long)
        F.cross_entropy(out.reshape(-1, out.shape[-1]), target)
    return sum(saved.values())
