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

import time

import torch

from archlab import build, inspect
from archlab.model import real_step_saved_bytes


def real_saved_bytes(spec: str, batch: int, vars: dict | None = None, bf16: bool = False) -> int:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else None
    return real_step_saved_bytes(build(spec, seed=0, vars=vars), batch, autocast)


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
