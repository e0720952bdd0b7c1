"""Data larger than the memory budget: archlab's streaming path against plain PyTorch.

One uint8 image set (N x 1x28x28, class templates + noise, written as npy:FOLDER) and one
model (zoo:mlp widened to 28x28 inputs, same seed), trained for an epoch four ways, each in a
fresh process so peak memory is its own, interleaved A,B,C,D,A,B,C,D,...:

  archlab in-memory  archlab.fit(..., stream=False): the whole set decoded to float32 in memory
  archlab streamed   archlab.fit with ARCHLAB_MEMORY_LIMIT below the set's size: the set stays
                     memory-mapped; DataLoader workers read whole sorted batches
  torch in-memory    a hand-written loop over the decoded tensors (randperm + index_select)
  torch DataLoader   the textbook loop for data on disk: a map-style Dataset over the memmap,
                     __getitem__ per sample + default collate, DataLoader(shuffle=True)

Each epoch is train + a validation pass; seconds are wall-clock per epoch (the median over
repeats). Memory: the process's peak resident set (VmHWM, which counts the memory-mapped file
pages it touched: the kernel can drop those) and the largest DataLoader worker's peak (which
counts the pages it shares with the trainer it was forked from). Each repeat line also shows
the private (anonymous) memory left at the end of the run. Results: BENCHMARKS.md.

    .venv/bin/python bench/stream.py                    # 200k images, 3 repeats (~5 min on 2 cores)
    .venv/bin/python bench/stream.py --n 20000 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METHODS = ("archlab in-memory", "archlab streamed", "torch in-memory", "torch DataLoader")
SHAPE = (1, 28, 28)
CLASSES = 10


def write_images(folder: Path, n: int, n_eval: int) -> None:
    """uint8 class templates + noise, written a chunk at a time (never all in memory)."""
    rng = np.random.default_rng(0)
    templates = rng.random((CLASSES, *SHAPE), dtype=np.float32)
    for part, rows in (("train", n), ("val", n_eval), ("test", n_eval)):
        x = np.lib.format.open_memmap(folder / f"{part}_x.npy", mode="w+", dtype=np.uint8, shape=(rows, *SHAPE))
        y = (rng.permutation(rows) % CLASSES).astype(np.int64)
        for start in range(0, rows, 20_000):
            stop = min(rows, start + 20_000)
            noisy = templates[y[start:stop]] + 0.5 * rng.standard_normal((stop - start, *SHAPE), dtype=np.float32)
            x[start:stop] = np.clip(np.rint(noisy * 255), 0, 255).astype(np.uint8)
        x.flush()
        del x
        np.save(folder / f"{part}_y.npy", y)
    (folder / "info.json").write_text(json.dumps({"task": "classify", "input": "image", "num_classes": CLASSES}))


# ------------------------------------------------------------------------ the children


def _memory() -> dict[str, float]:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                status[key] = int(value.split()[0]) / 1024  # MiB
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_mib": status["VmHWM"], "anon_mib": status["RssAnon"], "file_mib": status["RssFile"],
            "worker_peak_mib": worker}


def _spec() -> dict:
    from archlab import load_spec

    return load_spec("zoo:mlp").with_input(SHAPE, "float").to_dict()


def child(method: str, folder: Path, epochs: int, batch: int, workers: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    uri = f"npy:{folder}"
    if method.startswith("archlab"):
        from archlab.train import fit

        stream = None if method == "archlab streamed" else False
        run = fit(_spec(), data=uri, epochs=epochs, batch_size=batch, workers=workers, stream=stream, quiet=True,
                  store=tempfile.mkdtemp(prefix="archlab-bench-"))
        seconds = [h["seconds"] for h in run.history]
        return {"seconds": statistics.median(seconds), "val_acc": run.history[-1]["val_acc"], **_memory()}

    from archlab import build
    from archlab.spec import Spec

    spec = Spec.from_dict(_spec())
    s_train = spec.train
    torch.manual_seed(0)
    net = build(spec.with_vars({"num_classes": CLASSES}, strict=False), seed=0)
    opt = torch.optim.AdamW(net.parameters(), lr=s_train["lr"], weight_decay=s_train["weight_decay"])
    xs = np.load(folder / "train_x.npy", mmap_mode="r")
    ys = np.load(folder / "train_y.npy")
    vx = torch.from_numpy(np.load(folder / "val_x.npy")).float().div_(255)
    vy = torch.from_numpy(np.load(folder / "val_y.npy"))
    steps = math.ceil(len(ys) / batch) * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    smoothing = s_train["label_smoothing"]

    if method == "torch in-memory":
        x_all = torch.from_numpy(np.asarray(xs)).float().div_(255)
        y_all = torch.from_numpy(ys)

        def epoch_batches(g: torch.Generator):
            order = torch.randperm(len(y_all), generator=g)
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                yield x_all.index_select(0, idx), y_all.index_select(0, idx)
    else:
        class Images(torch.utils.data.Dataset):  # the textbook per-sample Dataset
            def __len__(self) -> int:
                return len(ys)

            def __getitem__(self, i: int):
                return torch.from_numpy(xs[i].astype(np.float32) / 255.0), int(ys[i])

        def epoch_batches(g: torch.Generator):
            return iter(torch.utils.data.DataLoader(Images(), batch_size=batch, shuffle=True, generator=g,
                                                    num_workers=workers, prefetch_factor=4 if workers else None))

    seconds, acc = [], 0.0
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(epoch)
        start = time.perf_counter()
        net.train()
        for x, y in epoch_batches(g):
            loss = F.cross_entropy(net(x), y, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(vy), batch):
                correct += int((net(vx[i:i + batch]).argmax(-1) == vy[i:i + batch]).sum())
        acc = correct / len(vy)
        seconds.append(time.perf_counter() - start)
    return {"seconds": statistics.median(seconds), "val_acc": acc, **_memory()}


# ------------------------------------------------------------------------ the parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="training images (default 200000)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="DataLoader reader processes (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--limit", default="64M", help="ARCHLAB_MEMORY_LIMIT for the streamed run (default 64M)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.folder, a.epochs, a.batch_size, a.workers, a.threads)))
        return

    print(f"machine: nproc={os.cpu_count()}  python={platform.python_version()}  threads={a.threads}  "
          f"workers={a.workers}  loadavg={' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="archlab-stream-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        write_images(folder, a.n, max(2000, a.n // 100))
        on_disk = sum(f.stat().st_size for f in folder.glob("*.npy")) / 2**20
        decoded = a.n * math.prod(SHAPE) * 4 / 2**20
        print(f"data: {a.n:,} train images 1x28x28 uint8, {on_disk:.0f} MiB on disk, {decoded:.0f} MiB as float32; "
              f"written in {time.perf_counter() - t0:.1f} s. Streamed run: ARCHLAB_MEMORY_LIMIT={a.limit}")
        results: dict[str, list[dict]] = {m: [] for m in METHODS}
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "PYTHONPATH": str(REPO)}
        for r in range(a.repeats):
            for method in METHODS:
                child_env = {**env, "ARCHLAB_MEMORY_LIMIT": a.limit if method == "archlab streamed" else "1T"}
                out = subprocess.run(
                    [sys.executable, __file__, "--child", method, "--folder", str(folder), "--epochs", str(a.epochs),
                     "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--threads", str(a.threads)],
                    env=child_env, capture_output=True, text=True, check=False)
                if out.returncode:
                    sys.exit(f"{method} failed:\n{out.stderr[-3000:]}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results[method].append(res)
                print(f"  repeat {r + 1}/{a.repeats}  {method:<18} {res['seconds']:7.2f} s/epoch  "
                      f"val_acc {res['val_acc']:.4f}  peak {res['peak_mib']:6.0f} MiB  "
                      f"private {res['anon_mib']:6.0f} MiB  worker peak {res['worker_peak_mib']:5.0f} MiB", flush=True)

    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    print(f"\nmedians over {a.repeats} repeats ({a.n:,} images, batch {a.batch_size}, {a.workers} worker(s)):")
    print(f"  {'method':<18} {'s/epoch':>8} {'vs torch DataLoader':>20} {'vs torch in-memory':>19} "
          f"{'peak MiB':>9} {'worker peak MiB':>16}")
    for m, v in med.items():
        print(f"  {m:<18} {v['seconds']:8.2f} {v['seconds'] / med['torch DataLoader']['seconds']:20.3f} "
              f"{v['seconds'] / med['torch in-memory']['seconds']:19.3f} {v['peak_mib']:9.0f} "
              f"{v['worker_peak_mib']:16.0f}")
    streamed, textbook = med["archlab streamed"], med["torch DataLoader"]
    print(f"\narchlab streamed / torch DataLoader: {streamed['seconds'] / textbook['seconds']:.3f} (target < 1)")
    print(f"peak resident memory: archlab streamed {streamed['peak_mib']:.0f} MiB, archlab in-memory "
          f"{med['archlab in-memory']['peak_mib']:.0f} MiB (the decoded set alone is {decoded:.0f} MiB). A worker's "
          f"peak counts the pages it shares with the trainer it was forked from.")


if __name__ == "__main__":
    main()
