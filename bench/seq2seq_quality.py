"""Exact-match accuracy of the zoo's seq2seq models on `seq:reverse` (lengths 8-12).

    .venv/bin/python bench/seq2seq_quality.py [--task reverse] [--epochs N]

Each model trains with its zoo settings (or --epochs) and a fixed seed; exact match is
measured by decoding on its own (greedy, and beam search of width 4) on the test split.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from archlab.model import PAD
from archlab.train import fit


def exact(pred: torch.Tensor, y: torch.Tensor) -> float:
    target = y[:, 1:]
    return float(((pred == target) | (target == PAD)).all(dim=-1).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="reverse")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("ARCHLAB_HOME", tempfile.mkdtemp(prefix="archlab-bench-"))
    data = f"seq:{args.task}?n=20000&min_len=8&max_len=12"
    print(f"data {data}, seed {args.seed}, {torch.get_num_threads()} threads")
    for zoo in ("zoo:seq2seq-additive", "zoo:seq2seq-transformer"):
        started = time.perf_counter()
        run = fit(zoo, data=data, epochs=args.epochs, seed=args.seed, quiet=True)
        seconds = time.perf_counter() - started
        from archlab.data import load_dataset

        test = load_dataset(data, seed=args.seed).test
        net = run.model.eval()
        with torch.no_grad():
            greedy = exact(net.greedy(test.x, test.y.shape[1] - 1), test.y)
            beam = exact(net.beam(test.x, test.y.shape[1] - 1, width=4), test.y)
        print(f"{zoo:26} epochs {len(run.history):3}  val exact {run.history[-1]['val_exact']:.4f}  "
              f"test exact greedy {greedy:.4f}  beam(4) {beam:.4f}  train {seconds:.0f}s  run {run.run_id}")


if __name__ == "__main__":
    main()
