"""Benchmark: the inspector's training-step memory against a real step on this CPU.

For each model, one real training forward pass (real weights, the trainer's loss on fp32
logits) runs under a saved-tensor hook, and once the loss exists the storages autograd still
holds for backward are summed (each once, weights excluded: tests/savedbytes.py's method,
which says why not when packed); the inspector prices the same step on the meta device. The
headline is the ratio inspector / real (1.000 = exact). GPT-2 small runs at batch 1 under
CPU bf16 autocast (the figure autocast really holds, loss and logits included); the CUDA
pricing of the same step is printed beside it (no GPU here to measure it).

    .venv/bin/python bench/memory_truth.py
"""

from __future__ import annotations

import contextlib
import time
import weakref

import torch
import torch.nn.functional as F

from archlab import build, inspect


class _Saved:
    """What autograd keeps in place of a saved tensor: alive as long as the node that saved it.
    A detached alias, so that an op saving its own output makes no reference cycle."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def real_saved_bytes(spec: str, batch: int, vars: dict | None = None, bf16: bool = False) -> int:
    net = build(spec, seed=0, vars=vars).train()
    weights = {t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]}
    packed: list[weakref.ref[_Saved]] = []

    def pack(t: torch.Tensor) -> _Saved:
        saved = _Saved(t.detach())
        packed.append(weakref.ref(saved))
        return saved

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda s: s.tensor), autocast:
        out = net(net.example_input(batch)).float()
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), torch.zeros(out.shape[:-1].numel(), dtype=torch.long))
    held = {s.tensor.untyped_storage()._cdata: s.tensor.untyped_storage().nbytes()
            for s in (ref() for ref in packed) if s is not None}
    del loss  # the graph lived until the sum above
    return sum(n for c, n in held.items() if c not in weights)


def main() -> None:
    rows = [("zoo:cnn", 64, None, False), ("zoo:gpt-mini", 64, None, False),
            ("zoo:gpt-mini", 64, {"dropout": 0.0}, False), ("zoo:gpt-mini", 64, None, True),
            ("zoo:seq2seq-transformer", 64, None, False), ("zoo:seq2seq-transformer", 64, None, True),
            ("zoo:gpt2", 1, None, True)]
    print(f"{'model':32} {'batch':>5} {'dtype':>5} {'real MB':>10} {'inspector MB':>13} {'ratio':>7}  attention priced")
    for spec, batch, vars, bf16 in rows:
        start = time.perf_counter()
        real = real_saved_bytes(spec, batch, vars, bf16)
        r = inspect(spec, batch=batch, vars=vars, dtype="bf16" if bf16 else "fp32", device="cpu")
        label = spec + (" (dropout 0)" if vars else "")
        print(f"{label:32} {batch:5} {'bf16' if bf16 else 'fp32':>5} {real / 1e6:10.1f} {r.memory.activations / 1e6:13.1f} "
              f"{r.memory.activations / real:7.3f}  {r.memory.attention or '-'}  ({time.perf_counter() - start:.0f} s)")
    cuda = inspect("zoo:gpt2", batch=8, dtype="bf16", device="cuda", device_memory="80GB")
    print(f"\nzoo:gpt2 priced for cuda, bf16, batch 8: step {cuda.memory.total / 1e9:.2f} GB "
          f"(activations {cuda.memory.activations / 1e9:.2f} GB; loss {cuda.memory.loss}); attention {cuda.memory.attention}; "
          f"largest batch on 80 GB: {cuda.max_batch}")


if __name__ == "__main__":
    main()
