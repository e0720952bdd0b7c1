"""Tokens per second of `archlab.generate` with and without the key/value cache.

    .venv/bin/python bench/generate.py [--tokens 256] [--repeats 3] [--threads 1]

Models have random weights (speed does not depend on what they learned). Runs alternate
cache / no cache so both see the same machine state; the median of the repeats is shown.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from archlab import build
from archlab.model import generate

MODELS = {
    "gpt-mini (d=128, 4 layers, context 128)": ("zoo:gpt-mini", {}),
    "gpt-small (d=384, 6 layers, context 256)": ("zoo:gpt-mini", {"dim": 384, "heads": 6, "depth": 6}),
}


def tokens_per_s(net: torch.nn.Module, n: int, cache: bool) -> float:
    start = time.perf_counter()
    count = sum(1 for _ in generate(net, [1, 2, 3, 4], n, temperature=1.0, top_k=20, seed=0, use_cache=cache))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, {platform.processor() or platform.machine()}")
    print(f"{'model':44} {'no cache tok/s':>15} {'cache tok/s':>12} {'speed-up':>9}")
    for label, (spec, vars_) in MODELS.items():
        shape = (256,) if vars_ else None
        net = build(spec, input_shape=shape, vars=vars_ or None).eval()
        with_cache, without = [], []
        for _ in range(args.repeats):
            without.append(tokens_per_s(net, args.tokens, cache=False))
            with_cache.append(tokens_per_s(net, args.tokens, cache=True))
        a, b = statistics.median(without), statistics.median(with_cache)
        print(f"{label:44} {a:15.1f} {b:12.1f} {b / a:8.1f}x")


if __name__ == "__main__":
    main()
