"""What autograd holds for backward once a forward (and its loss) exists: the inspector's
activation bytes.

A saved-tensor hook sees every tensor autograd saves, but not every saved tensor is still held
when the loss exists: a part of the graph that nothing downstream reads (a branch whose output
is never used, a temporary graph inside a layer) is freed mid-forward, with what it saved. So
a save is not counted when it is packed; `pack` wraps each saved tensor in a `Held`, which
autograd keeps in place of the tensor and which therefore lives exactly as long as the graph
node that saved it. `SavedLog.held_bytes` sums the storages of the holders still alive (found
by weak reference), each storage once.

Counting by storage id when packing is wrong twice over: a freed storage's id is handed to a
later storage, so two saves collide and one is lost (which one depends on the allocator: the
figure changed from run to run, and a batch-2 and batch-3 pair could give a negative slope);
and the freed storage was counted although a real step no longer holds it. Storages of live
holders are alive together, so their ids are distinct.
"""

from __future__ import annotations

import weakref

import torch


class Held:
    """What one graph node keeps for backward: a saved tensor (from `pack`), or the storages
    and bytes a cached leaf's ops would have saved (the inspector's replay)."""

    __slots__ = ("__weakref__", "extra", "storages", "tensor")

    def __init__(self, tensor: torch.Tensor | None = None, storages: tuple[torch.UntypedStorage, ...] = (),
                 extra: int = 0) -> None:
        self.tensor = tensor
        self.storages = storages
        self.extra = extra  # bytes saved in storages that exist nowhere else (not deduplicated)

    def all_storages(self) -> tuple[torch.UntypedStorage, ...]:
        return self.storages if self.tensor is None else (self.tensor.untyped_storage(), *self.storages)


def unpack(held: Held) -> torch.Tensor:
    assert held.tensor is not None  # only `pack`'s holders reach autograd's unpack
    return held.tensor


class SavedLog:
    """The holders of one forward pass (or of one part of it), by weak reference."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude  # storage ids never counted: the weights and buffers, alive throughout
        self.refs: list[weakref.ref[Held]] = []

    def pack(self, t: torch.Tensor) -> Held:
        # A detached alias, same storage: an op that saves its own output hands it over with
        # its grad_fn, and holding that would make a cycle (output -> node -> holder -> output)
        # that only ends with the process, so a dead branch's graph would never be freed.
        return self.add(Held(t.detach()))

    def add(self, held: Held) -> Held:
        self.refs.append(weakref.ref(held))
        return held

    def held(self) -> tuple[dict[int, int], int]:
        """The storages live holders keep (id -> bytes, each once) and their extra bytes."""
        storages: dict[int, int] = {}
        extra = 0
        for ref in self.refs:
            held = ref()
            if held is None:  # its graph node is gone: a real step holds none of it either
                continue
            extra += held.extra
            for s in held.all_storages():
                if s._cdata not in self.exclude:
                    storages[s._cdata] = s.nbytes()
        return storages, extra

    def held_bytes(self) -> int:
        storages, extra = self.held()
        return sum(storages.values()) + extra


class Replayed(torch.autograd.Function):
    """A cached leaf's output made without running the leaf (the inspector's replay), linked
    in the graph to the leaf's input as the leaf's own ops would be. Its node keeps a `Held`
    for what those ops saved, so that is held exactly as long as the leaf's graph would be.
    `anchor` is a trainable empty tensor: the output needs grad even where the input has none
    (a first layer's weights). The inspector's meta graph is never run backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, anchor: torch.Tensor, make, saves_input: bool,  # noqa: ANN001
                saves_output: bool, extra: int, log: SavedLog) -> torch.Tensor:
        del anchor
        y = make()
        storages = ((x.untyped_storage(),) if saves_input else ()) + ((y.untyped_storage(),) if saves_output else ())
        ctx.held = log.add(Held(storages=storages, extra=extra))
        return y

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> None:  # noqa: ANN001
        raise RuntimeError("the inspector's meta graph is never run backward")


def real_step_saved_bytes(net: torch.nn.Module, batch: int, autocast: object = None, seed: int = 0) -> int:
    """What one real training forward holds for backward once its loss exists, measured on real
    tensors: the network in training mode on `net.example_input(batch)` and the trainer's loss
    (cross-entropy on fp32 logits), under a saved-tensor hook; weights and buffers excluded.
    The quantity `inspect` prices on the meta device (tests and bench/memory_truth.py hold the
    two against each other).

    >>> from archlab import build
    >>> real_step_saved_bytes(build({"input": [4], "model": [{"linear": 8}, "relu", {"linear": 2}]}), 3) > 0
    True
    """
    import contextlib

    import torch.nn.functional as F

    net.train()
    log = SavedLog({t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]})
    torch.manual_seed(seed)
    x = net.example_input(batch)
    with torch.autograd.graph.saved_tensors_hooks(log.pack, unpack), autocast or contextlib.nullcontext():
        out = net(x).float()
        target = torch.zeros(out.shape[:-1].numel(), dtype=torch.long)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), target)
    held = log.held_bytes()
    del loss  # the graph lived until the sum above
    return held
