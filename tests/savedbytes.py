"""What a real training step keeps for backward, measured: the quantity the inspector prices.

The step runs the forward pass and the trainer's loss (cross-entropy on fp32 logits) under a
saved-tensor hook and, once the loss exists, sums the storages autograd still holds (each
once, weights and buffers excluded).

Each save is wrapped in a holder that autograd keeps in place of the tensor, so the holder
lives exactly as long as the graph node that saved it: a branch whose output nothing reads is
freed mid-forward with what it saved, and so is its holder. Summing at pack time by storage id
instead counts those freed storages, and loses saves whose id a freed storage handed on (the
figure then changes from run to run). The holder keeps a detached alias: an op that saves its
own output hands it over with its grad_fn, and holding that would make a reference cycle that
keeps the graph alive for good.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import torch
import torch.nn.functional as F


class _Saved:
    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def real_saved_bytes(net: torch.nn.Module, batch: int, autocast: Any = None) -> int:
    net.train()
    weights = {t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]}
    packed: list[weakref.ref[_Saved]] = []

    def pack(t: torch.Tensor) -> _Saved:
        saved = _Saved(t.detach())
        packed.append(weakref.ref(saved))
        return saved

    torch.manual_seed(0)
    x = net.example_input(batch)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda s: s.tensor), autocast or contextlib.nullcontext():
        out = net(x).float()
        target = torch.zeros(out.shape[:-1].numel(), dtype=torch.long)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), target)
    held = {}  # the storages the live graph holds; alive together, so their ids are distinct
    for ref in packed:
        saved = ref()
        if saved is not None:
            storage = saved.tensor.untyped_storage()
            if storage._cdata not in weights:
                held[storage._cdata] = storage.nbytes()
    del loss  # the graph lived until the sum above
    return sum(held.values())
