"""The whole archlab epoch against a hand-written PyTorch loop.

The same model (archlab.build of zoo:cnn, same seed), data, learning-rate schedule, batch
size and thread count, trained in interleaved rounds (A, B, C, A, B, C, ...):

  archlab         archlab's Trainer (what `archlab.fit` runs) with a temporary ARCHLAB_HOME
  hand-written    a loop over in-memory tensors: randperm per epoch + index_select batches,
                  AdamW (PyTorch's default implementation), per-step cosine schedule, a
                  validation pass (loss + accuracy) each epoch
  hand + fused    the same loop with AdamW(fused=True), which archlab takes (make_optimizer):
                  archlab against it is the trainer's own cost, kernel for kernel
  DataLoader      the textbook loop: TensorDataset + DataLoader; its sampler draws archlab's
                  permutation, so the loops train the same model

Every method is timed between its own epoch-end hooks, so an epoch is everything that
happens from one epoch's end to the next's: for archlab training, validation, the
best-weights save, the store write and the end-of-epoch checkpoint (snapshot on the
training thread; the write itself on a background thread, overlapping the next epoch, and
joined before the next save). n epochs per run give n - 1 timed epochs (the first, which
also warms caches, is not timed). Wall-clock and process CPU time (all threads, so the
background writer counts) are both reported; "paired" is the median over rounds of archlab
/ hand-written in the same round, which cancels load that drifts slowly. A breakdown then
times the per-epoch pieces on their own.

    python bench/fit_overhead.py              # digits 6 epochs x 9 rounds, synthetic 6000 3 x 5 (~5 min idle)
    python bench/fit_overhead.py --quick      # a smoke run (about a minute)
    python bench/fit_overhead.py --rounds 15 --workloads digits

One torch thread by default (--threads): on a shared machine more OpenMP threads than free
cores make every op wait for a descheduled worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archlab import build, load_spec  # noqa: E402
from archlab.data import Split, load_dataset  # noqa: E402
from archlab.runs import open_store  # noqa: E402
from archlab.train import (  # noqa: E402
    Trainer,
    TrainSettings,
    resolve_settings,
    save_checkpoint,
    save_weights,
)

SPEC = "zoo:cnn"
SEED = 0
EVAL_BATCH = 64  # main() sets it to archlab's CPU eval batch (the training batch)


@dataclass
class Workload:
    name: str
    uri: str
    batch_size: int
    epochs: int


@dataclass
class Outcome:
    wall: float  # mean wall s/epoch between epoch-end hooks
    cpu: float  # mean process CPU s/epoch between epoch-end hooks (all threads)
    acc: float  # final val accuracy
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    method: str
    runs: list[Outcome] = field(default_factory=list)

    def series(self, key: str) -> list[float]:
        return [getattr(o, key) if hasattr(o, key) else o.extra[key] for o in self.runs]


class EpochClock:
    """A (wall, cpu) mark at every epoch-end hook; an epoch is the time between two marks."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def outcome(self, acc: float, **extra: float) -> Outcome:
        if len(self.marks) < 2:
            raise SystemExit("each run needs at least 2 epochs (epochs are timed between epoch ends)")
        wall = [b[0] - a[0] for a, b in pairwise(self.marks)]
        cpu = [b[1] - a[1] for a, b in pairwise(self.marks)]
        return Outcome(statistics.fmean(wall), statistics.fmean(cpu), acc, dict(extra))


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


def machine_line() -> str:
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    return (f"machine: {os.cpu_count()} cores {cpu_model()}, {mem}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s); python {platform.python_version()}; "
            f"loadavg {loadavg()}")


# ----------------------------------------------------------------------------- shared pieces


@dataclass
class Setup:
    workload: Workload
    spec: Any  # the spec as archlab's Trainer adapts it to the data
    settings: TrainSettings
    dataset: Any
    home: Path

    @property
    def train(self) -> Split:
        return self.dataset.train

    @property
    def val(self) -> Split:
        return self.dataset.val


def prepare(workload: Workload, home: Path) -> Setup:
    ds = load_dataset(workload.uri, seed=SEED)
    info = ds.info
    spec = load_spec(SPEC).with_vars(info.vars(), strict=False).with_input(info.input_shape, info.input_dtype)
    s = resolve_settings(spec, {"epochs": workload.epochs, "batch_size": workload.batch_size,
                                "seed": SEED, "device": "cpu"})
    check_supported(s)
    return Setup(workload, spec, s, ds, home)


def check_supported(s: TrainSettings) -> None:
    """The baselines reproduce zoo:cnn's training; refuse settings they do not implement."""
    unsupported = {"optimizer": s.optimizer != "adamw", "schedule": s.schedule != "cosine",
                   "warmup": bool(s.warmup), "grad_clip": bool(s.grad_clip), "precision": s.precision != "fp32",
                   "augmentation": bool(s.crop_padding or s.hflip), "compile": s.compile}
    if bad := [k for k, v in unsupported.items() if v]:
        raise SystemExit(f"{SPEC}'s train settings changed ({', '.join(bad)}): the baselines here "
                         f"implement adamw + cosine, fp32, no warmup/clip/augmentation; update them")


def build_model(setup: Setup) -> torch.nn.Module:
    """Exactly what archlab's Trainer does: seed the global RNG, then build with the seed."""
    torch.manual_seed(setup.settings.seed)
    return build(setup.spec, seed=setup.settings.seed)


def cosine(total: int) -> Callable[[int], float]:
    """zoo:cnn's schedule (cosine to zero over all steps, per step), as a LambdaLR factor."""
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))


def loss_fn(s: TrainSettings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=s.label_smoothing)


def optimizer_and_schedule(net: torch.nn.Module, s: TrainSettings, steps_per_epoch: int, fused: bool = False):
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay, fused=fused or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(s.epochs * steps_per_epoch))
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


def epoch_perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    """archlab's per-epoch order (seeded by (seed, epoch)), so every loop trains the same model."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class SameOrder(torch.utils.data.Sampler):
    """What shuffle=True does (one randperm per epoch from a generator), seeded as archlab
    seeds its own: every loop sees the same batches and follows the same trajectory."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        perm = epoch_perm(self.n, self.seed, self.epoch)
        self.epoch += 1
        return iter(perm.tolist())


# ----------------------------------------------------------------------------- the methods


def run_archlab(setup: Setup) -> Outcome:
    """archlab's Trainer, as `archlab.fit` builds it; the epoch-end hook is its `on_epoch`
    callback (called after the epoch is logged and its checkpoint taken)."""
    os.environ["ARCHLAB_HOME"] = str(setup.home)
    clock = EpochClock()
    s = setup.settings
    trainer = Trainer(setup.spec, setup.dataset, s, open_store(), data_uri=setup.workload.uri, quiet=True,
                      on_epoch=lambda record: clock.mark())
    waits: list[tuple[float, float]] = []  # (end, seconds) the training thread waited for a write
    writer = trainer.checkpoints
    real_wait = writer.wait

    def wait(**kw: Any) -> None:
        t = time.perf_counter()
        real_wait(**kw)
        waits.append((time.perf_counter(), time.perf_counter() - t))

    writer.wait = wait  # measurement only
    run = trainer.run()
    end = time.perf_counter()
    first, last = clock.marks[0][0], clock.marks[-1][0]
    timed = len(clock.marks) - 1
    # The last epoch's write is joined after the last epoch-end hook, outside the timed epochs.
    blocked = sum(d for e, d in waits if first < e <= last)
    final = sum(d for e, d in waits if e > last)
    return clock.outcome(run.history[-1]["val_acc"],
                         train_val=statistics.fmean(h["seconds"] for h in run.history[1:]),
                         blocked_ms=1e3 * blocked / timed, final_join_ms=1e3 * final, after_last=end - last)


def _hand(setup: Setup, fused: bool) -> Outcome:
    s = setup.settings
    net = build_model(setup)
    xs, ys = setup.train.x, setup.train.y
    n, bs = len(xs), s.batch_size
    opt, sched = optimizer_and_schedule(net, s, math.ceil(n / bs), fused=fused)
    criterion = loss_fn(s)
    clock, acc = EpochClock(), float("nan")
    for epoch in range(s.epochs):
        perm = epoch_perm(n, s.seed, epoch)
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
        _, acc = validate(net, val_slices(setup.val), s.label_smoothing)
        clock.mark()
    return clock.outcome(acc)


def run_handwritten(setup: Setup) -> Outcome:
    return _hand(setup, fused=False)


def run_hand_fused(setup: Setup) -> Outcome:
    return _hand(setup, fused=True)


def run_dataloader(setup: Setup) -> Outcome:
    s = setup.settings
    net = build_model(setup)
    bs = s.batch_size
    # Each DataLoader iterator draws a base seed from its generator, or from the global RNG
    # without one, which would shift the dropout masks: give both loaders their own.
    loader = DataLoader(TensorDataset(setup.train.x, setup.train.y), batch_size=bs,
                        sampler=SameOrder(len(setup.train), s.seed), generator=torch.Generator())
    val_loader = DataLoader(TensorDataset(setup.val.x, setup.val.y), batch_size=EVAL_BATCH,
                            generator=torch.Generator())
    opt, sched = optimizer_and_schedule(net, s, len(loader))
    criterion = loss_fn(s)
    clock, acc = EpochClock(), float("nan")
    for _epoch in range(s.epochs):
        net.train()
        running = torch.zeros(())
        for x, y in loader:
            loss = criterion(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach() * len(y)
        _train_loss = running.item() / len(setup.train)
        _, acc = validate(net, val_loader, s.label_smoothing)
        clock.mark()
    return clock.outcome(acc)


METHODS: dict[str, Callable[[Setup], Outcome]] = {
    "archlab": run_archlab,
    "hand-written": run_handwritten,
    "hand + fused": run_hand_fused,
    "DataLoader": run_dataloader,
}


# ----------------------------------------------------------------------------- rounds


def warm_up(setup: Setup, methods: dict[str, Callable[[Setup], Outcome]]) -> None:
    """Untimed: import everything, create oneDNN kernels for these shapes, open the store."""
    w = setup.workload
    n = min(len(setup.train), 4 * w.batch_size + 5)  # includes a short last batch
    small = TrainSettings.from_mapping({**setup.settings.to_dict(), "epochs": 2})
    ds = setup.dataset
    sub = type(ds)(ds.info, Split(ds.train.x[:n], ds.train.y[:n]), Split(ds.val.x[:n], ds.val.y[:n]),
                   Split(ds.test.x[:n], ds.test.y[:n]))
    tiny = Setup(Workload(w.name, w.uri, w.batch_size, 2), setup.spec, small, sub, setup.home)
    for fn in methods.values():
        fn(tiny)


def run_rounds(setup: Setup, methods: dict[str, Callable[[Setup], Outcome]], rounds: int,
               log: Callable[[str], None] = print) -> dict[str, Result]:
    """Every method once per round, in turn; rounds interleave so drifting load hits all alike."""
    results = {name: Result(name) for name in methods}
    for r in range(rounds):
        for name, fn in methods.items():
            o = fn(setup)
            results[name].runs.append(o)
            extra = ""
            if "blocked_ms" in o.extra:
                extra = (f"  train+val {o.extra['train_val']:.3f}s  waited for checkpoint "
                         f"{o.extra['blocked_ms']:.2f} ms/epoch")
            log(f"  round {r + 1}/{rounds}  {name:<13} {o.wall:.3f} s/epoch  cpu {o.cpu:.3f}  "
                f"val_acc {o.acc:.4f}{extra}")
    return results


def summarize(results: dict[str, Result], base: str = "hand-written") -> list[dict[str, Any]]:
    rows = []
    ref = results[base]
    for name, res in results.items():
        row: dict[str, Any] = {"method": name, "val_acc": statistics.median(res.series("acc"))}
        for key in ("wall", "cpu"):
            vals, b = res.series(key), ref.series(key)
            row[key] = {"values": vals, "median": statistics.median(vals),
                        "ratio": statistics.median(vals) / statistics.median(b),
                        "paired": statistics.median(v / h for v, h in zip(vals, b, strict=True))}
        for key in ("train_val", "blocked_ms", "final_join_ms", "after_last"):
            if res.runs and key in res.runs[0].extra:
                row[key] = statistics.median(res.series(key))
        rows.append(row)
    return rows


def fmt_s(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def print_table(title: str, rows: list[dict[str, Any]], base: str = "hand-written") -> None:
    print(f"\n{title}")
    head = (f"{'method':<13} {'wall s/epoch (min-max)':<24} {'ratio':>6} {'paired':>6}   "
            f"{'cpu s/epoch (min-max)':<24} {'ratio':>6} {'paired':>6}  {'val_acc':>7}")
    print(head)
    print("-" * len(head))
    for row in rows:
        w, c = row["wall"], row["cpu"]
        print(f"{row['method']:<13} {fmt_s(w['values']):<24} {w['ratio']:>6.3f} {w['paired']:>6.3f}   "
              f"{fmt_s(c['values']):<24} {c['ratio']:>6.3f} {c['paired']:>6.3f}  {row['val_acc']:>7.4f}")
    print(f"ratio = median / {base} median; paired = median over rounds of (method / {base} in the "
          f"same round)")


# ----------------------------------------------------------------------------- breakdown


def median_time(fn: Callable[[], Any], rounds: int, after: Callable[[], Any] | None = None) -> float:
    """Median ms of `rounds` calls (``after`` runs untimed after each)."""
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if after is not None:
            after()
    return 1e3 * statistics.median(times)


def breakdown(setup: Setup, rounds: int) -> dict[str, float]:
    """The per-epoch pieces of archlab's loop on the real trainer, model and optimizer state."""
    os.environ["ARCHLAB_HOME"] = str(setup.home / "breakdown")
    s = setup.settings
    tr = Trainer(setup.spec, setup.dataset, s, open_store(), data_uri=setup.workload.uri, quiet=True)
    x, y = tr.train_split.x[:s.batch_size], tr.train_split.y[:s.batch_size]
    # One optimizer and schedule (Trainer.optimizer) or a task's list of them (.optimizers).
    optimizer = tr.optimizer if hasattr(tr, "optimizer") else tr.optimizers[0]
    scheduler = tr.scheduler if hasattr(tr, "scheduler") else tr.schedulers[0]

    def step(opt: torch.optim.Optimizer) -> None:
        loss = tr.task.loss(tr.net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(optimizer)  # gives AdamW its state, so the checkpoint is full size
    default = torch.optim.AdamW(tr.net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    step(default)
    per_step = {name: median_time(opt.step, 5 * rounds) for name, opt in
                (("optimizer.step: AdamW default (for-loop)", default),
                 (f"optimizer.step: AdamW as archlab makes it (fused={optimizer.defaults.get('fused')})",
                  optimizer))}
    history = [{"epoch": i, "train_loss": 0.1, "val_acc": 0.9, "seconds": 1.0} for i in range(s.epochs)]
    (tr.state if hasattr(tr, "state") else tr).history = history  # a full run's history in the checkpoint
    writer = tr.checkpoints
    bare = Path(tempfile.mkdtemp(dir=setup.home))
    sync = median_time(lambda: save_checkpoint(bare, model=tr.net, optimizer=optimizer, scheduler=scheduler,
                                               state={"history": history}), rounds)
    snapshot = median_time(tr.save, rounds, after=writer.wait)
    write = median_time(lambda: (tr.save(), writer.wait()), rounds)
    best = median_time(lambda: save_weights(tr.dir / "best.safetensors", tr.net), rounds)
    record = {"epoch": 1, "train_loss": 0.1, "train_acc": 0.9, "val_loss": 0.1, "val_acc": 0.9, "lr": 1e-3}
    counter = iter(range(10_000, 20_000))
    log = median_time(lambda: tr.store.log_epoch(tr.run_id, next(counter), record), rounds)
    size = sum(f.stat().st_size for f in tr.dir.glob("*.safetensors") if f.name != "best.safetensors")
    return {
        **{f"per step: {k}": v for k, v in per_step.items()},
        f"checkpoint, synchronous save_checkpoint ({size / 1e6:.1f} MB)": sync,
        "checkpoint, on the training thread (snapshot; the write goes to a thread)": snapshot,
        "checkpoint, snapshot + background write, joined": write,
        "best-weights save (epochs where val improves)": best,
        "store.log_epoch": log,
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", "--repeats", type=int, default=5,
                   help="interleaved rounds on the synthetic set (default 5)")
    p.add_argument("--digits-rounds", type=int, help="rounds on digits (default 2 x --rounds: "
                   "its epochs are short and noisy)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run, synthetic (default 3: 2 timed)")
    p.add_argument("--digits-epochs", type=int, default=6, help="epochs per run, digits (default 6: 5 timed)")
    p.add_argument("--synthetic-n", type=int, default=6000, help="synthetic samples (default 6000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--workloads", default="digits,synthetic", help="comma list of digits,synthetic")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-piece breakdown")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds, small sizes")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.digits_rounds, a.epochs, a.digits_epochs, a.synthetic_n = 2, 3, 2, 3, 2000
    if a.digits_rounds is None:
        a.digits_rounds = 2 * a.rounds

    global EVAL_BATCH
    EVAL_BATCH = a.batch_size  # = archlab's eval batch on CPU (TrainSettings.eval_batch)
    torch.set_num_threads(a.threads)
    print(machine_line())
    methods = {m.strip(): METHODS[m.strip()] for m in a.methods.split(",") if m.strip()}
    if "hand-written" not in methods or "archlab" not in methods:
        raise SystemExit("--methods needs archlab and hand-written (the ratios are to it)")
    workloads = {
        "digits": Workload("digits", "digits", a.batch_size, a.digits_epochs),
        "synthetic": Workload(f"synthetic {a.synthetic_n}x1x28x28",
                              f"synthetic:images?n={a.synthetic_n}&shape=1x28x28&classes=10",
                              a.batch_size, a.epochs),
    }
    out: dict[str, Any] = {"machine": machine_line(), "args": {k: str(v) for k, v in vars(a).items()},
                           "workloads": {}}
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="archlab-bench-") as tmp:
        for key in [w.strip() for w in a.workloads.split(",") if w.strip()]:
            w = workloads[key]
            setup = prepare(w, Path(tmp))
            rounds = a.digits_rounds if key == "digits" else a.rounds
            print(f"\n== {w.name}: {SPEC}, batch {w.batch_size}, {w.epochs} epochs per run ({w.epochs - 1} "
                  f"timed) x {rounds} interleaved rounds; train {len(setup.train)}, val {len(setup.val)}, "
                  f"{math.ceil(len(setup.train) / w.batch_size)} steps/epoch", flush=True)
            warm_up(setup, methods)
            results = run_rounds(setup, methods, rounds, log=lambda line: print(line, flush=True))
            rows = summarize(results)
            print_table(f"{w.name}: the whole epoch, between epoch-end hooks", rows)
            arch = next(r for r in rows if r["method"] == "archlab")
            print(f"archlab: train + val alone {arch['train_val']:.3f} s/epoch (its history 'seconds'); the "
                  f"training thread waited for a checkpoint write {arch['blocked_ms']:.2f} ms/epoch; after the last "
                  f"epoch: final write joined in {arch['final_join_ms']:.1f} ms, run() returned "
                  f"{arch['after_last']:.2f} s after the last epoch-end hook (+ test pass)")
            for clock in ("wall", "cpu"):
                ratio, paired = arch[clock]["ratio"], arch[clock]["paired"]
                verdicts.append(ratio <= 1.05)
                print(f"target {w.name}, {clock}: archlab / hand-written = {ratio:.3f} (paired {paired:.3f}): "
                      f"{'PASS' if ratio <= 1.05 else 'FAIL'} <= 1.05, stretch {'PASS' if ratio <= 1.0 else 'FAIL'} "
                      f"<= 1.00")
            pieces = {} if a.no_breakdown else breakdown(setup, rounds=3 if a.quick else 9)
            if pieces:
                print(f"\n{w.name}: per-epoch pieces of archlab's loop (median ms)")
                for k, v in pieces.items():
                    print(f"  {k:<76} {v:8.2f} ms")
            out["workloads"][w.name] = {"rounds": rounds, "epochs": w.epochs, "rows": rows, "breakdown": pieces}
        os.environ.pop("ARCHLAB_HOME", None)
    print(f"\nloadavg at the end: {loadavg()}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    print(f"targets (ratio of medians, both clocks): {'all PASS' if all(verdicts) else 'some FAIL'}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
