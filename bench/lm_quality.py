"""zoo:gpt-mini on the offline corpus (text:stdlib) against a bigram baseline.

    .venv/bin/python bench/lm_quality.py [--minutes 5] [--data text:stdlib]

The bigram model is counted on the training text with add-alpha smoothing, alpha picked
on the validation text (the baseline's best showing). gpt-mini trains for the time budget
on the same train split; both are scored on the same validation split, in nats and bits
per character. Prints the wall time of everything.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch

from archlab.data import load_dataset
from archlab.train import fit


def bigram_loss(train: torch.Tensor, val: torch.Tensor, vocab: int, alpha: float) -> float:
    """Cross-entropy (nats per token) of an add-alpha bigram model on val windows."""
    def pairs(split: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split[:, :-1].reshape(-1), split[:, 1:].reshape(-1)

    a, b = pairs(train)
    counts = torch.bincount(a * vocab + b, minlength=vocab * vocab).reshape(vocab, vocab).double() + alpha
    logp = (counts / counts.sum(dim=1, keepdim=True)).log()
    va, vb = pairs(val)
    return float(-logp[va, vb].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="gpt-mini's training time budget")
    parser.add_argument("--data", default="text:stdlib")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("ARCHLAB_HOME", tempfile.mkdtemp(prefix="archlab-bench-"))
    started = time.perf_counter()
    ds = load_dataset(args.data, seed=args.seed)
    v = ds.info.vocab_size
    # Windows hold y = x shifted by one: rebuild each window's T+1 tokens for the bigram counts.
    train = torch.cat([ds.train.x, ds.train.y[:, -1:]], dim=1)
    val = torch.cat([ds.val.x, ds.val.y[:, -1:]], dim=1)
    base = min((bigram_loss(train, val, v, a), a) for a in (0.001, 0.01, 0.1, 1.0))
    print(f"data {args.data}: {ds.train.x.numel():,} train / {ds.val.x.numel():,} val tokens, vocab {v}")
    print(f"bigram (alpha {base[1]}): val {base[0]:.4f} nats/token = {base[0] / math.log(2):.3f} bits/token")
    run = fit("zoo:gpt-mini", data=args.data, epochs=100, max_minutes=args.minutes, schedule="constant",
              warmup=100, seed=args.seed, quiet=True)
    best = min(e["val_loss"] for e in run.history)
    steps = sum(e.get("partial", 1.0) for e in run.history)
    print(f"gpt-mini ({sum(p.numel() for p in run.model.parameters()):,} params, {args.minutes:g} min, "
          f"{steps:.2f} epochs, {torch.get_num_threads()} threads): val {best:.4f} nats/token = "
          f"{best / math.log(2):.3f} bits/token; test {run.test_metrics['loss']:.4f}")
    print(f"gpt-mini / bigram validation loss: {best / base[0]:.3f} "
          f"({100 * (1 - best / base[0]):.1f}% lower); run {run.run_id}")
    print(f"wall time, all included: {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
