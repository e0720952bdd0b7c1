"""How much does archlab's trainer cost over a hand-written PyTorch loop?

The same model (archlab.build of zoo:cnn, same seed), the same data, optimizer, learning-rate
schedule, batch size and thread count, trained three ways, interleaved A,B,C,A,B,C,...:

  archlab      archlab.train.fit(...) with a temporary ARCHLAB_HOME (checkpoints, store, ...)
  hand-written a loop over in-memory tensors: randperm per epoch + index_select batches,
               AdamW, per-step cosine schedule, a per-epoch validation pass (loss + accuracy)
  DataLoader   the textbook loop: TensorDataset + DataLoader(shuffled) + the same validation; its
               sampler draws archlab's permutation, so all loops train the same model (SameOrder)
  lightning    (only where `lightning` / `pytorch_lightning` is importable)
  keras        (only where `keras` is importable and runs on the torch backend)

Only the training epochs are timed (train + validation); data loading and model build are not.
For archlab two numbers are taken: its own per-epoch time (`run.history[i]["seconds"]`, train
+ val, the fair number and the one the ratio uses) and the whole epoch loop (the run's
`duration_s` in the store / epochs), which adds the per-epoch checkpoint, best-weights save and
store write. Every method is also timed in process CPU time, which a shared machine disturbs
far less than wall-clock, and a "paired" ratio pairs each run with the hand-written run of the
same repeat. A breakdown then times each archlab feature on its own. Results and a discussion:
bench/fit_overhead.md.

    python bench/fit_overhead.py --threads 1     # the full run (~20 min on 2 cores)
    python bench/fit_overhead.py --quick         # a smoke run (about a minute)
    python bench/fit_overhead.py --repeats 7 --epochs 2 --digits-epochs 10 --digits-repeats 20

On a busy machine prefer --threads 1: with more OpenMP threads than free cores, a descheduled
worker stalls every op and the timings become slow and erratic.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archlab import (
    build,  # noqa: E402
    load_spec,
)
from archlab.data import Split, load_dataset  # noqa: E402
from archlab.runs import open_store  # noqa: E402
from archlab.train import (
    Trainer,
    TrainSettings,
    evaluate_split,
    fit,
    resolve_settings,
    save_checkpoint,  # noqa: E402
    save_weights,
)

SPEC = "zoo:cnn"
SEED = 0
EVAL_BATCH = 64  # main() sets it to archlab's CPU eval batch (the training batch); baselines validate with the same


@dataclass
class Workload:
    name: str
    uri: str
    batch_size: int
    epochs: int
    warm_uri: str | None = None  # a small data set of the same shapes, for archlab's warm-up


@dataclass
class Result:
    method: str
    runs: list[Any] = field(default_factory=list)  # one Outcome per repeat

    def series(self, key: str) -> list[float]:
        return [getattr(o, key) for o in self.runs]


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def machine_info() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_start": loadavg()}


# ----------------------------------------------------------------------------- shared pieces


def prepare(workload: Workload) -> tuple[Any, TrainSettings, Split, Split]:
    """The spec as archlab's Trainer adapts it to the data, the settings, train and val."""
    ds = load_dataset(workload.uri, seed=SEED)
    info = ds.info
    spec = load_spec(SPEC).with_vars(info.vars(), strict=False).with_input(info.input_shape, info.input_dtype)
    s = resolve_settings(spec, {"epochs": workload.epochs, "batch_size": workload.batch_size,
                                "seed": SEED, "device": "cpu"})
    check_supported(s)
    return spec, s, ds.train, ds.val


def build_model(spec: Any, s: TrainSettings) -> torch.nn.Module:
    """Exactly what archlab's Trainer does: seed the global RNG, then build with the seed."""
    torch.manual_seed(s.seed)
    return build(spec, seed=s.seed)


def cosine(s: TrainSettings, total: int) -> Callable[[int], float]:
    """zoo:cnn's schedule (cosine to zero over all steps, per step), as a LambdaLR factor."""
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))


def check_supported(s: TrainSettings) -> None:
    """The baselines reproduce zoo:cnn's training; refuse settings they do not implement."""
    unsupported = {"optimizer": s.optimizer != "adamw", "schedule": s.schedule != "cosine",
                   "warmup": bool(s.warmup), "grad_clip": bool(s.grad_clip), "precision": s.precision != "fp32",
                   "augmentation": bool(s.crop_padding or s.hflip), "compile": s.compile}
    if bad := [k for k, v in unsupported.items() if v]:
        raise SystemExit(f"{SPEC}'s train settings changed ({', '.join(bad)}): the baselines here "
                         f"implement adamw + cosine, fp32, no warmup/clip/augmentation; update them")


def loss_fn(s: TrainSettings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=s.label_smoothing)


def optimizer_and_schedule(net: torch.nn.Module, s: TrainSettings, steps_per_epoch: int):
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(s, s.epochs * steps_per_epoch))
    return opt, sched


@torch.no_grad()
def validate(net: torch.nn.Module, batches, label_smoothing: float = 0.0) -> tuple[float, float]:
    """Loss and accuracy over an iterable of (x, y); one sync at the end."""
    net.eval()
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    n = 0
    for x, y in batches:
        out = net(x)
        loss_sum += F.cross_entropy(out, y, reduction="sum", label_smoothing=label_smoothing)
        correct += (out.argmax(-1) == y).sum()
        n += len(y)
    net.train()
    return loss_sum.item() / n, correct.item() / n


def val_slices(val: Split):
    return ((val.x[i:i + EVAL_BATCH], val.y[i:i + EVAL_BATCH]) for i in range(0, len(val), EVAL_BATCH))


# ----------------------------------------------------------------------------- the methods
# Each method returns an Outcome. `cpu` is process CPU time (time.process_time): with one
# thread torch runs every op on the calling thread, so it counts the work done and not the
# time the scheduler gave to other processes; wall-clock on a shared machine counts both.


@dataclass
class Outcome:
    wall: float  # mean s/epoch, train + val
    cpu: float  # mean CPU s/epoch, train + val
    acc: float  # final val accuracy
    loop: float | None = None  # archlab: the whole epoch loop per epoch (duration_s / epochs)
    setup: float | None = None  # archlab: fit wall time - duration_s


class EpochClock:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.wall.append(time.perf_counter() - self._wall)
        self.cpu.append(time.process_time() - self._cpu)

    def outcome(self, acc: float) -> Outcome:
        return Outcome(statistics.fmean(self.wall), statistics.fmean(self.cpu), acc)


def run_archlab(workload: Workload, spec: Any, s: TrainSettings, train: Split, val: Split,
                home: Path) -> Outcome:
    """Wall s/epoch from run.history; CPU s/epoch by wrapping Trainer.train_epoch (train + val,
    plus the best-weights save that train_epoch does after its own clock stops)."""
    os.environ["ARCHLAB_HOME"] = str(home)
    cpu: list[float] = []
    original = Trainer.train_epoch

    def train_epoch(self: Trainer, progress: Any) -> dict[str, float]:
        c = time.process_time()
        record = original(self, progress)
        cpu.append(time.process_time() - c)
        return record

    Trainer.train_epoch = train_epoch  # measurement only; archlab's code runs unchanged
    try:
        t = time.perf_counter()
        run = fit(SPEC, data=workload.uri, quiet=True, epochs=s.epochs, batch_size=s.batch_size,
                  seed=s.seed, device="cpu")
        wall = time.perf_counter() - t
    finally:
        Trainer.train_epoch = original
    duration = open_store().get_run(run.run_id).duration_s
    epochs = len(run.history)
    per_epoch = sum(h["seconds"] for h in run.history) / epochs
    return Outcome(per_epoch, statistics.fmean(cpu), run.history[-1]["val_acc"],
                   loop=duration / epochs, setup=wall - duration)


def run_handwritten(workload: Workload, spec: Any, s: TrainSettings, train: Split, val: Split,
                    home: Path) -> Outcome:
    net = build_model(spec, s)
    n, bs = len(train), s.batch_size
    opt, sched = optimizer_and_schedule(net, s, math.ceil(n / bs))
    xs, ys = train.x, train.y
    criterion = loss_fn(s)
    clock, acc = EpochClock(), float("nan")
    for epoch in range(s.epochs):
        # the same per-epoch order as archlab (seeded by (seed, epoch)), so results match
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(s.seed * 1_000_003 + epoch))
        clock.start()
        net.train()
        running = torch.zeros(())
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            x, y = xs.index_select(0, idx), ys.index_select(0, idx)
            loss = criterion(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach() * len(y)
        _train_loss = running.item() / n
        _, acc = validate(net, val_slices(val), s.label_smoothing)
        clock.stop()
    return clock.outcome(acc)


class SameOrder(torch.utils.data.Sampler):
    """What shuffle=True does (RandomSampler: one randperm per epoch from a generator), with the
    generator seeded as archlab seeds its own: every loop then sees the same batches and follows
    the same trajectory, so they differ only in how they make batches. (With shuffle=True's own
    order the DataLoader loop trained a different model, 1-3% faster or slower per epoch for
    data-dependent reasons, e.g. denormal floats, which swamped the data-path difference.)"""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        return iter(torch.randperm(self.n, generator=g).tolist())


def run_dataloader(workload: Workload, spec: Any, s: TrainSettings, train: Split, val: Split,
                   home: Path) -> Outcome:
    net = build_model(spec, s)
    bs = s.batch_size
    # Each DataLoader iterator draws a base seed from its generator, or from the global RNG
    # without one, which would shift the dropout masks: give both loaders their own.
    loader = DataLoader(TensorDataset(train.x, train.y), batch_size=bs, sampler=SameOrder(len(train), s.seed),
                        generator=torch.Generator())
    val_loader = DataLoader(TensorDataset(val.x, val.y), batch_size=EVAL_BATCH, generator=torch.Generator())
    opt, sched = optimizer_and_schedule(net, s, len(loader))
    criterion = loss_fn(s)
    clock, acc = EpochClock(), float("nan")
    for _epoch in range(s.epochs):
        clock.start()
        net.train()
        running = torch.zeros(())
        for x, y in loader:
            loss = criterion(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach() * len(y)
        _train_loss = running.item() / len(train)
        _, acc = validate(net, val_loader, s.label_smoothing)
        clock.stop()
    return clock.outcome(acc)


def run_lightning(workload: Workload, spec: Any, s: TrainSettings, train: Split, val: Split,
                  home: Path) -> Outcome:
    try:
        import lightning as L
    except ImportError:
        import pytorch_lightning as L

    net = build_model(spec, s)
    loader = DataLoader(TensorDataset(train.x, train.y), batch_size=s.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(s.seed))
    val_loader = DataLoader(TensorDataset(val.x, val.y), batch_size=EVAL_BATCH)
    steps = len(loader)

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, _i):
            x, y = batch
            return loss_fn(s)(self.net(x), y)

        def validation_step(self, batch, _i):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", loss_fn(s)(out, y), on_epoch=True)
            self.log("val_acc", (out.argmax(-1) == y).float().mean(), on_epoch=True)

        def configure_optimizers(self):
            opt, sched = optimizer_and_schedule(self.net, s, steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    clock = EpochClock()

    class Timer(L.Callback):  # validation runs inside the train epoch, before its end hook
        def on_train_epoch_start(self, trainer, module) -> None:
            clock.start()

        def on_train_epoch_end(self, trainer, module) -> None:
            clock.stop()

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)  # no banners between the timings
    trainer = L.Trainer(max_epochs=s.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Timer()],
                        default_root_dir=str(home / "lightning"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader, val_loader)
    acc = float(trainer.callback_metrics.get("val_acc", float("nan")))
    return clock.outcome(acc)


def keras_usable() -> bool:
    if importlib.util.find_spec("keras") is None:
        return False
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras

        return keras.backend.backend() == "torch"  # only then can it wrap the same nn.Module
    except Exception:
        return False


def run_keras(workload: Workload, spec: Any, s: TrainSettings, train: Split, val: Split,
              home: Path) -> Outcome:
    import keras

    net = build_model(spec, s)
    steps = math.ceil(len(train) / s.batch_size)
    model = keras.Sequential([keras.Input(shape=tuple(train.x.shape[1:])),
                              keras.layers.TorchModuleWrapper(net)])
    lr = keras.optimizers.schedules.CosineDecay(s.lr, decay_steps=s.epochs * steps)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=s.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=s.label_smoothing),
                  metrics=["accuracy"])
    clock = EpochClock()

    class Timer(keras.callbacks.Callback):  # on_epoch_end comes after validation
        def on_epoch_begin(self, epoch, logs=None) -> None:
            clock.start()

        def on_epoch_end(self, epoch, logs=None) -> None:
            clock.stop()

    onehot = torch.nn.functional.one_hot  # keras smooths labels only on one-hot targets
    hist = model.fit(train.x.numpy(), onehot(train.y, 10).float().numpy(), batch_size=s.batch_size, epochs=s.epochs,
                     validation_data=(val.x.numpy(), onehot(val.y, 10).float().numpy()), validation_batch_size=EVAL_BATCH,
                     shuffle=True, verbose=0, callbacks=[Timer()])
    return clock.outcome(float(hist.history["val_accuracy"][-1]))


def methods() -> dict[str, Callable]:
    found = {"archlab": run_archlab, "hand-written": run_handwritten, "DataLoader": run_dataloader}
    if importlib.util.find_spec("lightning") or importlib.util.find_spec("pytorch_lightning"):
        found["lightning"] = run_lightning
    if keras_usable():
        found["keras"] = run_keras
    return found


# ----------------------------------------------------------------------------- breakdown


def per_call(fn: Callable[[], Any], number: int = 300, rounds: int = 5) -> float:
    """Seconds per call: the best of `rounds` means over `number` calls."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t) / number)
    return best


def median_time(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """(median, min) seconds of `rounds` calls."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds of each function, called in turn A,B,A,B,... (drift hits all alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def ms(pair: tuple[float, float]) -> tuple[float, float]:
    return pair[0] * 1e3, pair[1] * 1e3


def sha256_file(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)


def archlab_breakdown(workload: Workload, home: Path, rounds: int) -> dict[str, Any]:
    """Time each of archlab's per-step and per-epoch features on the real model and state."""
    os.environ["ARCHLAB_HOME"] = str(home / "breakdown")
    t = time.perf_counter()
    ds = load_dataset(workload.uri, seed=SEED)
    load_s = time.perf_counter() - t
    spec = load_spec(SPEC)
    s = resolve_settings(spec, {"epochs": workload.epochs, "batch_size": workload.batch_size,
                                "seed": SEED, "device": "cpu"})
    store = open_store()
    t = time.perf_counter()
    tr = Trainer(spec, ds, s, store, data_uri=workload.uri, quiet=True)
    init_s = time.perf_counter() - t
    steps = tr.steps_per_epoch
    x, y = tr.train_split.x[:s.batch_size], tr.train_split.y[:s.batch_size]
    out = tr.model(x)
    loss = tr.task.loss(out.float(), y)
    tr.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    tr.optimizer.step()  # gives Adam its state, so the checkpoint is full size
    sums = tr.task.stats(out.detach().float(), y, loss)
    tr.history = [{"epoch": i, "train_loss": 0.1, "val_acc": 0.9, "seconds": 1.0} for i in range(workload.epochs)]

    from archlab.train import EpochProgress

    progress = EpochProgress(total_epochs=s.epochs, steps=steps, batch_size=s.batch_size,
                             primary="acc", quiet=True)
    step_costs = {
        "isfinite(loss) check": per_call(lambda: bool(not torch.isfinite(loss))),
        "train stats (loss, acc, top5) + sum": per_call(lambda: sums + tr.task.stats(out.detach().float(), y, loss)),
        "  (hand-written: running loss sum)": per_call(lambda: sums[0] + loss.detach() * len(y)),
        "scheduler.step (LambdaLR)": per_call(tr.scheduler.step),
        "GradScaler scale+update (disabled)": per_call(lambda: (tr.scaler.scale(loss), tr.scaler.update())),
        "progress.step (quiet)": per_call(lambda: progress.step(1, loss)),
    }
    step_rows = {k: {"us_per_step": v * 1e6, "ms_per_epoch": v * steps * 1e3} for k, v in step_costs.items()}

    ckpt_dir = tr.dir
    save = ms(median_time(tr.save, rounds))
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # what the checkpoint costs without its fsyncs
    try:
        save_nofsync = ms(median_time(tr.save, rounds))
    finally:
        os.fsync = real_fsync
    files = [*ckpt_dir.glob("*.safetensors"), ckpt_dir / "checkpoint.json"]
    size = sum(f.stat().st_size for f in files)
    sha = ms(median_time(lambda: [sha256_file(f) for f in ckpt_dir.glob("*.safetensors")], rounds))
    best = ms(median_time(lambda: save_weights(tr.dir / "best.safetensors", tr.net), rounds))
    bare = Path(tempfile.mkdtemp(dir=home))  # the same checkpoint without the trainer's state
    bare_save = ms(median_time(lambda: save_checkpoint(bare, model=tr.net, optimizer=tr.optimizer,
                                                       scheduler=tr.scheduler, state={}), rounds))
    record = {"epoch": 1, "train_loss": 0.1, "train_acc": 0.9, "train_top5": 1.0, "val_loss": 0.1,
              "val_acc": 0.9, "val_top5": 1.0, "lr": 1e-3, "seconds": 1.0, "samples_per_s": 1.0}
    counter = iter(range(10_000, 20_000))
    log = ms(median_time(lambda: store.log_epoch(tr.run_id, next(counter), record), rounds))
    summ = per_call(lambda: tr.task.summarize(sums, len(tr.train_split)), 100, 3) * 1e3

    def evaluate(batch_size: int, split: Split = tr.val_split, report: bool = False) -> Any:
        return evaluate_split(tr.model, split, tr.task, tr.device, "fp32", batch_size, report=report)

    val = {k: ms(v) for k, v in interleaved({
        "archlab": lambda: evaluate(s.eval_batch("cpu")),
        "hand": lambda: validate(tr.net, val_slices(tr.val_split), s.label_smoothing),
        "archlab_big": lambda: evaluate(1024),
    }, rounds).items()}
    test_eval = ms(median_time(lambda: evaluate(s.eval_batch("cpu"), ds.test, report=True), max(1, rounds // 2)))

    # The data path alone (no model): archlab's batches() vs the DataLoader, one epoch.
    from archlab.train import batches, epoch_order

    def archlab_data() -> None:
        order, g = epoch_order(len(tr.train_split), s.seed, 0)
        for _ in batches(tr.train_split, order, s.batch_size, 0, None, g):
            pass

    loader = DataLoader(TensorDataset(tr.train_split.x, tr.train_split.y), batch_size=s.batch_size,
                        shuffle=True)
    data_archlab = ms(median_time(archlab_data, rounds))
    data_loader = ms(median_time(lambda: [None for _ in loader], rounds))
    epoch_rows = {
        "checkpoint save (every epoch)": save,
        "  without its fsyncs (os.fsync patched out)": save_nofsync,
        "  sha256 of the tensor files (part of the save)": sha,
        "  same checkpoint, empty trainer state": bare_save,
        "best-weights save (when val improves)": best,
        "store.log_epoch (sqlite)": log,
        "task.summarize (one sync)": (summ, summ),
        f"validation: archlab evaluate_split (batch {s.eval_batch('cpu')})": val["archlab"],
        f"validation: hand-written validate (batch {EVAL_BATCH})": val["hand"],
        "validation: evaluate_split at batch 1024 (the old default)": val["archlab_big"],
        "data path only: archlab batches()": data_archlab,
        "data path only: DataLoader(shuffle=True)": data_loader,
    }
    setup_rows = {
        "load_dataset": (load_s * 1e3, load_s * 1e3),
        "Trainer() (build, store.create_run, ...)": (init_s * 1e3, init_s * 1e3),
        f"finish(): test evaluation, {len(ds.test)} samples": test_eval,
    }
    return {"steps_per_epoch": steps, "per_fit_ms": setup_rows, "params": sum(p.numel() for p in tr.net.parameters()),
            "checkpoint_bytes": size, "per_step": step_rows, "per_epoch_ms": epoch_rows}


# ----------------------------------------------------------------------------- main


def fmt_s(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def warm_up(workload: Workload, spec: Any, s: TrainSettings, train: Split, val: Split, home: Path,
            found: dict[str, Callable]) -> None:
    """Untimed: import everything, create oneDNN kernels for these shapes, open the store."""
    small = TrainSettings.from_mapping({**s.to_dict(), "epochs": 1})
    n = min(len(train), 8 * s.batch_size + 5)  # includes a short last batch
    sub, vsub = Split(train.x[:n], train.y[:n]), Split(val.x[:n], val.y[:n])
    tiny = Workload(workload.name, workload.warm_uri or workload.uri, workload.batch_size, 1)
    for fn in found.values():
        fn(tiny, spec, small, sub, vsub, home)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per method (default 5)")
    p.add_argument("--digits-repeats", type=int, help="repeats on digits (default 3 x --repeats: "
                   "its epochs are short and noisy)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run on the synthetic workload (default 2)")
    p.add_argument("--digits-epochs", type=int, default=10, help="epochs per run on digits (default 10)")
    p.add_argument("--synthetic-n", type=int, default=20000, help="synthetic samples (default 20000)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size for both workloads (default 64)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"torch.set_num_threads (default here {torch.get_num_threads()})")
    p.add_argument("--workloads", default="digits,synthetic", help="comma list of digits,synthetic")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-feature breakdown")
    p.add_argument("--quick", action="store_true", help="a smoke run: small sizes, 2 repeats")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.epochs, a.digits_epochs, a.synthetic_n = 2, 1, 2, 2000
    if a.digits_repeats is None:
        a.digits_repeats = 3 * a.repeats

    global EVAL_BATCH
    EVAL_BATCH = a.batch_size  # = archlab's eval batch on CPU (TrainSettings.eval_batch)
    torch.set_num_threads(a.threads)
    info = machine_info()
    print(f"machine: nproc={info['nproc']}  cpu={info['cpu']}  torch={info['torch']}  "
          f"threads={info['threads']} (torch.set_num_threads)  python={info['python']}  "
          f"loadavg={info['loadavg_start']}")
    load1 = float(info["loadavg_start"].split()[0]) if info["loadavg_start"] != "n/a" else 0.0
    if a.threads > 1 and load1 > 0.5 * (info["nproc"] or 1):
        print(f"warning: the machine is busy (loadavg {load1:.1f} on {info['nproc']} cores); with "
              f"{a.threads} OpenMP threads a descheduled thread stalls every op: timings will be slow "
              f"and noisy. --threads 1 is steadier on a shared machine.")
    found = methods()
    print(f"methods: {', '.join(found)}"
          + ("" if "lightning" in found else "   (lightning: not installed)")
          + ("" if "keras" in found else "   (keras: not installed or not on the torch backend)"))

    workloads = {
        "digits": Workload("digits", "digits", a.batch_size, a.digits_epochs),
        "synthetic": Workload(f"synthetic {a.synthetic_n}x1x28x28",
                              f"synthetic:images?n={a.synthetic_n}&shape=1x28x28&classes=10",
                              a.batch_size, a.epochs,
                              warm_uri="synthetic:images?n=1000&shape=1x28x28&classes=10"),
    }
    chosen = [workloads[w.strip()] for w in a.workloads.split(",") if w.strip()]
    rows: list[dict[str, Any]] = []
    breakdowns: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="archlab-bench-") as tmp:
        home = Path(tmp)
        for w in chosen:
            spec, s, train, val = prepare(w)
            repeats = a.digits_repeats if w.uri == "digits" else a.repeats
            print(f"\n== {w.name}: {SPEC}, batch {w.batch_size}, {w.epochs} epochs x {repeats} repeats, "
                  f"train {len(train)}, val {len(val)}, {math.ceil(len(train) / w.batch_size)} steps/epoch",
                  flush=True)
            warm_up(w, spec, s, train, val, home, found)
            results = {name: Result(name) for name in found}
            for r in range(repeats):
                for name, fn in found.items():
                    o = fn(w, spec, s, train, val, home)
                    results[name].runs.append(o)
                    extra = f"  loop {o.loop:.3f}s/epoch  setup {o.setup:.2f}s" if o.loop is not None else ""
                    print(f"  repeat {r + 1}/{repeats}  {name:<12} {o.wall:.3f} s/epoch  cpu {o.cpu:.3f} s/epoch  "
                          f"val_acc {o.acc:.4f}{extra}", flush=True)
            hand = results["hand-written"]
            for name, res in results.items():
                row: dict[str, Any] = {"workload": w.name, "method": name,
                                       "val_acc": statistics.median(res.series("acc"))}
                keys = ["wall", "cpu"] + (["loop"] if name == "archlab" else [])
                for key in keys:
                    vals, base = res.series(key), hand.series("wall" if key == "loop" else key)
                    row[key] = {"values": vals, "median": statistics.median(vals),
                                "ratio": statistics.median(vals) / statistics.median(base),
                                "paired": statistics.median(v / h for v, h in zip(vals, base, strict=True))}
                if name == "archlab":
                    row["setup"] = res.series("setup")
                rows.append(row)
            if not a.no_breakdown:
                breakdowns[w.name] = archlab_breakdown(w, home, rounds=3 if a.quick else 7)
        os.environ.pop("ARCHLAB_HOME", None)

    info["loadavg_end"] = loadavg()
    print(f"\nloadavg at the end: {info['loadavg_end']}")
    print("\ns/epoch = train + validation per epoch (archlab: its run.history 'seconds'), the mean over a "
          "run's epochs;\nmedian over repeats (min-max). ratio = median / hand-written median (the targets "
          "use it);\npaired = median over repeats of (this run / the hand-written run of the same repeat).")
    verdicts = []
    by_wl: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_wl.setdefault(row["workload"], {})[row["method"]] = row
    for key, title in (("wall", "wall-clock"), ("cpu", "process CPU time (steadier on a shared machine)")):
        print(f"\n{title}")
        head = (f"{'workload':<24} {'method':<13} {'s/epoch median (min-max)':<28} {'ratio':>6} {'paired':>6}  "
                f"{'val_acc':>7}  targets")
        print(head)
        print("-" * len(head))
        for wl, by_method in by_wl.items():
            for name, row in by_method.items():
                cell, target = row[key], ""
                if name == "archlab":
                    ok1 = cell["ratio"] <= 1.05
                    ok2 = cell["median"] < by_method["DataLoader"][key]["median"]
                    target = (f"{'PASS' if ok1 else 'FAIL'} <=1.05 x hand-written; "
                              f"{'PASS' if ok2 else 'FAIL'} faster than DataLoader")
                    if key == "wall":
                        verdicts += [ok1, ok2]
                print(f"{wl:<24} {name:<13} {fmt_s(cell['values']):<28} {cell['ratio']:>6.3f} "
                      f"{cell['paired']:>6.3f}  {row['val_acc']:>7.4f}  {target}")
            if key == "wall":
                a_row = by_method["archlab"]
                cell = a_row["loop"]
                print(f"{wl:<24} {'archlab loop':<13} {fmt_s(cell['values']):<28} {cell['ratio']:>6.3f} "
                      f"{cell['paired']:>6.3f}  {'':>7}  (the whole epoch loop: + checkpoint, best weights, "
                      f"store; fixed setup per fit {statistics.median(a_row['setup']):.2f}s)")

    for wl, b in breakdowns.items():
        print(f"\n-- archlab feature costs, {wl}: {b['params']:,} params, checkpoint "
              f"{b['checkpoint_bytes'] / 1e6:.1f} MB, {b['steps_per_epoch']} steps/epoch")
        for k, v in b["per_step"].items():
            print(f"  per step   {k:<48} {v['us_per_step']:8.1f} us = {v['ms_per_epoch']:6.2f} ms/epoch")
        print(f"  {'':<51} {'median':>8}    {'min':>8}")
        for k, v in b["per_epoch_ms"].items():
            print(f"  per epoch  {k:<48} {v[0]:8.2f} ms {v[1]:8.2f} ms")
        for k, v in b["per_fit_ms"].items():
            print(f"  per fit    {k:<48} {v[0]:8.2f} ms {v[1]:8.2f} ms")

    if a.json:
        a.json.write_text(json.dumps({"machine": info, "args": {k: str(v) for k, v in vars(a).items()},
                                      "rows": rows, "breakdown": breakdowns}, indent=1))
    print(f"\ntargets (wall-clock): {'all PASS' if all(verdicts) else 'some FAIL'}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
