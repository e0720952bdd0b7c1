"""Transfer learning on digits: a model trained on classes 0-4, fine-tuned on classes 5-9 from
50 labelled samples, against the same spec trained on those 50 samples from scratch, at
several equal training budgets.

Included in the timing: writing the subsets, every training run (sources, fine-tuned,
scratch) and their test passes; excluded: the Python and torch import. Everything runs
through archlab's own tools: the subsets are `archlab.data.write_npy` folders read back as
`npy:FOLDER`, the runs are `archlab.fit`; the fine-tuned ones start with
`init_from=SOURCE_RUN, map=["model.8.*=", "model.10.*="]`: the conv layers (and their batch
norm) load from the 0-4 model, the classifier head (linear 64, linear 5) is new.

  source      digits classes 0-4 (every row of digits' train/val/test splits in those classes)
  target      classes 5-9 relabelled 0-4: 50 labelled rows (10 a class, drawn by the seed) train
              it and serve as its validation split too (no other labels are used); the test
              split is every other row of classes 5-9 (847 rows)
  fine-tune   init_from the source run, new head, every layer trains
  scratch     the same spec and settings from its own initialisation
  budget      epochs over the 50 rows at batch 10 (5 steps an epoch), AdamW lr 1e-3, cosine

Prints the test accuracy on 5-9 of both at each budget, per seed and as the mean of three
seeds, the gain of fine-tuning in points, and the wall time.

    python bench/transfer.py                      # budgets of 2, 3, 5, 10 and 40 epochs, three seeds
    python bench/transfer.py --epochs 3 --seeds 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from archlab.data import DataInfo, Dataset, Split, load_dataset, write_npy  # noqa: E402
from archlab.runs import open_store  # noqa: E402
from archlab.train import fit  # noqa: E402

SPEC = {
    "name": "digits-cnn-bn",
    "input": {"shape": [1, 8, 8]},
    "model": [
        {"conv2d": {"out": 16, "kernel": 3, "padding": "same"}}, "batchnorm", "relu",     # model.0-2
        {"conv2d": {"out": 32, "kernel": 3, "padding": "same"}}, "batchnorm", "relu",     # model.3-5
        {"maxpool": 2}, "flatten", {"linear": 64}, "relu",                                # model.6-9
        {"linear": "$num_classes"},                                                       # model.10: the head
    ],
}
HEAD = ["model.8.*=", "model.10.*="]  # the classifier (linear 64, linear 5) starts anew
SOURCE_SETTINGS = dict(epochs=15, batch_size=64, lr=2e-3, optimizer="adamw", schedule="cosine")
TARGET_SETTINGS = dict(batch_size=10, lr=1e-3, optimizer="adamw", schedule="cosine")


def _subset(x: torch.Tensor, y: torch.Tensor, classes: range) -> tuple[torch.Tensor, torch.Tensor]:
    keep = (y >= classes.start) & (y < classes.stop)
    return x[keep], y[keep] - classes.start


def _write(folder: Path, train: Split, val: Split, test: Split, name: str) -> str:
    info = DataInfo(name, (1, 8, 8), "float", "classify", 5, tuple(str(c) for c in range(5)))
    write_npy(folder, Dataset(info, train, val, test))
    return f"npy:{folder}"


def make_data(root: Path, seed: int) -> tuple[str, str]:
    """(the 0-4 source folder, the 5-9 target folder with 50 labelled training rows)."""
    ds = load_dataset("digits")
    low = range(0, 5)
    high = range(5, 10)
    source = _write(root / "source", Split(*_subset(ds.train.x, ds.train.y, low)),
                    Split(*_subset(ds.val.x, ds.val.y, low)), Split(*_subset(ds.test.x, ds.test.y, low)),
                    "digits-0-4")
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    x, y = _subset(x, y, high)
    g = torch.Generator().manual_seed(1000 + seed)
    chosen = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:10]]
                        for c in range(5)])
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[chosen] = False
    labelled = Split(x[chosen], y[chosen])
    target = _write(root / f"target-{seed}", labelled, labelled, Split(x[rest], y[rest]), "digits-5-9-50")
    return source, target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 3, 5, 10, 40],
                        help="training budgets on the 50 rows (epochs of 5 steps)")
    args = parser.parse_args()
    started = time.perf_counter()
    acc: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = open_store(root / "store")
        for seed in args.seeds:
            source_data, target_data = make_data(root, seed)
            src = fit(SPEC, data=source_data, store=store, quiet=True, seed=seed, **SOURCE_SETTINGS)
            line = [f"seed {seed}: source (0-4) test acc {src.test_metrics['acc']:.3f};"]
            for epochs in args.epochs:
                for name, extra in (("fine-tune", dict(init_from=src.run_id, map=HEAD)), ("scratch", {})):
                    run = fit(SPEC, data=target_data, store=store, quiet=True, seed=seed, epochs=epochs,
                              **TARGET_SETTINGS, **extra)
                    acc.setdefault((name, epochs), []).append(run.test_metrics["acc"])
                line.append(f"{epochs} ep: {acc['fine-tune', epochs][-1]:.3f} vs {acc['scratch', epochs][-1]:.3f}")
            print("  ".join(line), flush=True)
    seconds = time.perf_counter() - started
    print(f"\ndigits 5-9 from 50 labelled samples: test accuracy, mean of {len(args.seeds)} seed(s); "
          f"all runs, data writing and test passes timed, imports not")
    print(f"{'budget':>16s} {'fine-tune':>10s} {'scratch':>10s} {'gain':>12s}")
    gains = {}
    for epochs in args.epochs:
        ft, sc = (sum(acc[k, epochs]) / len(acc[k, epochs]) for k in ("fine-tune", "scratch"))
        gains[epochs] = 100 * (ft - sc)
        print(f"{epochs:3d} ep ({5 * epochs:3d} steps) {ft:10.3f} {sc:10.3f} {gains[epochs]:+9.1f} pt")
    print(f"wall time {seconds:.1f} s ({torch.get_num_threads()} torch thread(s))")
    print("RESULT " + " ".join(f"gain_{e}ep={g:.1f}" for e, g in gains.items()) + f" seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
