"""Seconds per epoch on 1 and 2 processes (DDP and FSDP2, gloo on CPU) for a compute-bound model (a small CNN).

    PYTHONPATH=. python bench/ddp_scaling.py [--epochs 3] [--width 2048]

Included in each figure: one epoch of `archlab train` as the run records it (its "seconds":
every training step of the epoch - forward, backward, the gradient all-reduce, the optimizer
step, the per-step loss agreement - plus the validation pass, which rank 0 runs alone), the
median over epochs 2.. (epoch 1 pays one-off warm-up). Not included: process start, torch
import, rendezvous, data loading, the test pass. Same global batch, same data, same model in
every row; rows differ only in how many processes share the work and how many threads each
uses. The ratio is against the first row (1 process, 1 thread), measured in the same run.

What a 2-core machine can show: whether two processes on two cores beat one process on one
core (the all-reduce and the duplicated validation are the cost), and how that compares with
one process using both cores through intra-op threads. What it cannot show: scaling past two
workers, nccl or a real network, or GPU behaviour. On a machine shared with other jobs the
figures move with their load: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spec(width: int) -> str:
    """Convolutions over 8x8 maps: much compute per parameter, so per-step compute outweighs the
    gradient all-reduce (an MLP as wide has 30x the parameters for the same FLOPs)."""
    conv = f"  - conv2d: {{out: {width}, kernel: 3, padding: same}}\n  - relu\n"
    return (f"name: conv-bench\ninput: {{shape: [1, 8, 8]}}\nmodel:\n{conv * 3}  - global_avgpool\n"
            f"  - linear: $num_classes\n")


def epoch_seconds(home: Path, spec_path: Path, epochs: int, batch: int, nproc: int, threads: int,
                  strategy: str) -> float:
    env = {**os.environ, "ARCHLAB_HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    args = [sys.executable, "-m", "archlab", "train", str(spec_path), "--epochs", str(epochs), "--batch-size",
            str(batch), "--lr", "1e-3", "-q"]
    if nproc > 1:
        args += ["--nproc", str(nproc), "--strategy", strategy]
    out = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    run_id = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("run "))
    sys.path.insert(0, str(REPO))
    from archlab.runs import open_store

    history = open_store(home).get_run(run_id).history
    return statistics.median(h.metrics["seconds"] for h in history[1:] or history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        path = home / "wide.yaml"
        path.write_text(spec(a.width))
        rows = [("1 process, 1 thread", 1, 1, "ddp"), ("1 process, 2 threads", 1, 2, "ddp"),
                ("2 processes (DDP), 1 thread each", 2, 1, "ddp"), ("2 processes (FSDP2), 1 thread each", 2, 1, "fsdp")]
        print(f"archlab train, digits (1,257 training samples), 3 conv2d 3x3 layers of {a.width} channels on 8x8, global batch "
              f"{a.batch_size}, AdamW fp32, CPU gloo; seconds per epoch (train + validation), median of epochs "
              f"2..{a.epochs}; {os.cpu_count()} cores (shared with other jobs: ratios, not seconds)")
        base = None
        for label, nproc, threads, strategy in rows:
            seconds = epoch_seconds(home, path, a.epochs, a.batch_size, nproc, threads, strategy)
            base = base or seconds
            print(f"  {label:38s} {seconds:7.3f} s/epoch   x{base / seconds:.2f} vs 1 process, 1 thread")


if __name__ == "__main__":
    main()
