"""The trainer: one readable loop, with checkpoints, resume, precision and a run record.

    run = archlab.fit("zoo:cnn", data="digits", epochs=5)
    run.test_metrics["acc"]

Data that fits in memory is served by slicing a per-epoch permutation of tensors already
on the device (no per-sample Dataset/collate). Each epoch's order comes from a generator
seeded by (seed, epoch), and the global RNG (dropout) is saved in every checkpoint, so a
run resumed from a checkpoint computes exactly what an uninterrupted run computes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import ArchlabError, SpecError, StoreError, TrainingError, thaw
from ..data import (
    Augment,
    DataInfo,
    Dataset,
    DiskSplit,
    Split,
    describe_data_path,
    load_dataset,
    stream_batches,
)
from ..model import Network, build
from ..runs import SQLiteRunStorage, open_store
from ..spec import Spec, load_spec
from ._checkpoint import CheckpointWriter, has_checkpoint, load_checkpoint

# The settings live in archlab.train_settings; the names that were defined here are
# re-exported so that `from archlab.train import TrainSettings` (etc.) keeps working.
from ._settings import (
    IO_SETTINGS,
    TrainSettings,
    resolve_settings,
)
from ._tasks import Task, make_task


class StopRun(Exception):  # noqa: N818 - a control signal, not an error
    """Raised by an `on_epoch` callback to end a run early with a status (e.g. "pruned")."""

    def __init__(self, status: str, message: str = ""):
        super().__init__(message or status)
        self.status, self.message = status, message


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


# ----------------------------------------------------------------------- the result


@dataclass
class Run:
    """A finished (or stopped) training run: the model, its history and test metrics."""

    run_id: str
    model: nn.Module
    spec: Spec
    settings: TrainSettings
    data: DataInfo
    history: list[dict[str, float]]
    test_metrics: dict[str, float]
    test_report: dict[str, Any] = field(default_factory=dict)
    status: str = "finished"
    best_epoch: int | None = None
    directory: Path | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)   # with evaluate_train, eval mode


# ----------------------------------------------------------------------- batching


def epoch_order(n: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
    """The permutation for one epoch, from a generator seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g), g


def batches(split: Split | DiskSplit, order: torch.Tensor, batch_size: int, start: int,
            augment: Augment | None, generator: torch.Generator, *, device: torch.device | None = None,
            workers: int | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, x, y) from `start` on. In-memory data is sliced where it lies (the order moves to
    its device once); data on disk streams through a DataLoader to `device`, in the same order."""
    if isinstance(split, DiskSplit):
        steps = stream_batches(split, order, batch_size, start, device=device, workers=workers)
    else:
        order = order.to(split.x.device)
        steps = ((step, *split.take(order[step * batch_size:(step + 1) * batch_size]))
                 for step in range(start, math.ceil(len(split) / batch_size)))
    for step, x, y in steps:
        if augment:  # in this process, from the run's generator: the same draws on either path
            x = augment(x, generator)
        yield step, x, y


# ------------------------------------------------------------------------- pieces


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW over the trainable parameters, in PyTorch's fused implementation.

    ``fused=True`` updates every parameter in one kernel instead of a Python loop of small
    ops per tensor (the default on CPU): the same update up to float rounding, and on CPU
    2-2.7x faster per step (zoo:cnn on digits: AdamW 1.23 -> 0.46 ms, SGD 0.47 -> 0.30 ms).
    Parameters it does not take (complex, sparse, on a device other than CPU or CUDA) get
    the default implementation. A resumed run keeps the implementation it was saved with
    (the optimizer's checkpoint state names it), so runs saved before this default resume
    bit-exactly.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters (every layer is frozen)")
    if s.optimizer == "sgd":
        cls: type[torch.optim.Optimizer] = torch.optim.SGD
        options: dict[str, Any] = {"momentum": s.momentum}
    else:
        cls, options = (torch.optim.Adam if s.optimizer == "adam" else torch.optim.AdamW), {}
    # What the fused kernels take (torch checks it only at the first step, by raising).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") and p.layout == torch.strided
                for p in params) or None
    return cls(params, lr=s.lr, weight_decay=s.weight_decay, fused=fused, **options)


def make_schedule(optimizer: torch.optim.Optimizer, s: TrainSettings, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step multiplier: linear warm-up, then constant, cosine to zero, or step decay."""
    total = s.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if s.warmup and step < s.warmup:
            return (step + 1) / s.warmup
        if s.schedule == "cosine":
            progress = (step - s.warmup) / max(1, total - s.warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if s.schedule == "step":
            return s.gamma ** (step // (s.step_size * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(device: torch.device, precision: str):  # noqa: ANN201
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: Split | DiskSplit, task: Task, device: torch.device, precision: str = "fp32",
                   batch_size: int = 1024, report: bool = False) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of `model` on a split, in eval mode; with `report`, the task's extra results too."""
    was_training = model.training
    model.eval()
    sums, outs = None, []
    try:
        for start in range(0, len(split), batch_size):
            x, y = split.slice(start, start + batch_size)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, precision):
                out = task.forward(model, x, y)
            out = out.float()
            s = task.eval_stats(model, out, x, y, task.loss(out, y))
            sums = s if sums is None else sums + s
            if report and task.has_report:
                outs.append(out.cpu())
    finally:
        model.train(was_training)
    if sums is None:
        return {}, {}
    metrics = task.summarize(sums, len(split))
    extra = task.report(torch.cat(outs), split.targets().cpu()) if outs else {}
    return metrics, extra


def environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
           "platform": sys.platform}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# ------------------------------------------------------------------------ the loop


class Trainer:
    """Holds everything one run needs; `run()` is the loop. Use `fit` or `resume`."""

    def __init__(self, spec: Spec, dataset: Dataset, settings: TrainSettings, store: SQLiteRunStorage,
                 *, data_uri: str, quiet: bool = False, tags: Mapping[str, str] | None = None,
                 run_id: str | None = None, evaluate_test: bool = True, evaluate_train: bool = False,
                 on_epoch: Callable[[dict[str, float]], None] | None = None):
        self.settings = s = settings
        self.dataset = dataset
        info = dataset.info
        data_vars = dict(info.vars())
        if (s.task or info.task) == "seq2seq":  # the decoder reads the target minus its last token
            data_vars["target_len"] = dataset.train.target_shape[0] - 1
        self.spec = spec.with_vars(data_vars, strict=False).with_input(info.input_shape, info.input_dtype)
        self.store = store
        self.quiet = quiet
        self.device = pick_device(s.device)
        task_name = s.task or info.task
        options = {"label_smoothing": s.label_smoothing} if task_name == "classify" else {}
        self.task = make_task(task_name, info.num_classes, info.vocab_size, **options)

        torch.manual_seed(s.seed)
        self.net: Network = build(self.spec, seed=s.seed)
        self.task.check_output(self.net.output_shape)
        self.net.to(self.device)
        self.model: nn.Module = torch.compile(self.net) if s.compile else self.net
        self.optimizer = make_optimizer(self.net, s)
        self.steps_per_epoch = math.ceil(len(dataset.train) / s.batch_size)
        self.scheduler = make_schedule(self.optimizer, s, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=s.precision == "fp16" and self.device.type == "cuda")
        self.augment = Augment(crop_padding=s.crop_padding, hflip=s.hflip)
        if self.augment and info.input_dtype != "float":
            raise SpecError("train: crop_padding/hflip augment images; this data set has token input")
        # In-memory data lives on the device for the whole run: slicing beats a DataLoader there.
        # A DiskSplit stays where it is and streams (archlab.ondisk).
        self.train_split = dataset.train.to(self.device)
        self.val_split = dataset.val.to(self.device)
        self.data_note = describe_data_path(dataset)

        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, float]] = []
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stale = 0
        self.partial_sums: torch.Tensor | None = None
        self.elapsed = 0.0
        self.generator: torch.Generator | None = None
        self.resume_generator: torch.Tensor | None = None
        self.stop_requested = False
        self.interrupt_acted = False
        self.deadline: float | None = None   # perf_counter time when the budget runs out
        self.out_of_time = False
        self.forced_stop = False  # a second Ctrl-C: stopped mid-step, the state is not consistent
        self.saved_at: str | None = None  # where the last checkpoint was taken, for messages
        if run_id is None:
            params = sum(p.numel() for p in self.net.parameters())
            run_id = store.create_run(name=self.spec.name, data=data_uri, spec=self.spec.to_dict(),
                                      settings=s.to_dict(), env=environment(self.device), params=params,
                                      tags={"task": self.task.name, **dict(tags or {})})
            (store.run_dir(run_id) / "spec.yaml").write_text(self.spec.to_yaml())
            tokenizer = getattr(info, "tokenizer", None)
            if tokenizer:  # so `archlab generate` can encode prompts and decode samples later
                import json

                (store.run_dir(run_id) / "tokenizer.json").write_text(json.dumps(thaw(tokenizer)))
        self.run_id = run_id
        self.dir = store.run_dir(run_id)
        # Snapshots at each save; a background thread writes them while the next epoch runs.
        self.checkpoints = CheckpointWriter(self.dir)
        self.data_uri = data_uri
        # Cross-validation folds never look at the test split; their train metric is
        # measured in eval mode after training, for the train-validation gap.
        self.evaluate_test, self.evaluate_train = evaluate_test, evaluate_train
        # Called after each epoch is logged and checkpointed; it may raise StopRun (a pruner).
        self.on_epoch = on_epoch

    # -- checkpoints

    def _state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "history": self.history, "best": self.best, "best_epoch": self.best_epoch, "stale": self.stale,
                "elapsed": self.elapsed, "partial_sums": self.partial_sums, "scaler": self.scaler.state_dict(),
                # Mid-epoch only: where the augmentation draws had got to.
                "generator": self.generator.get_state() if self.step_in_epoch and self.generator else None}

    def save(self) -> None:
        self.checkpoints.save(model=self.net, optimizer=self.optimizer, scheduler=self.scheduler,
                              state=self._state())
        self.saved_at = self._position()

    def _position(self) -> str:
        if self.step_in_epoch:
            return f"epoch {self.epoch + 1}, step {self.step_in_epoch}"
        return f"end of epoch {self.epoch}"

    def restore(self) -> None:
        self.checkpoints.wait()
        state = load_checkpoint(self.dir, model=self.net, optimizer=self.optimizer, scheduler=self.scheduler)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history = state["global_step"], list(state["history"])
        self.best, self.best_epoch, self.stale = state["best"], state["best_epoch"], state["stale"]
        self.elapsed = state.get("elapsed", 0.0)
        sums = state.get("partial_sums")
        self.partial_sums = sums.to(self.device) if isinstance(sums, torch.Tensor) else None
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        gen = state.get("generator")
        self.resume_generator = gen if isinstance(gen, torch.Tensor) and self.step_in_epoch else None
        self.saved_at = self._position()

    # -- the loop

    def run(self) -> Run:
        with run_lock(self.dir, self.run_id):
            return self._run()

    def _run(self) -> Run:
        s = self.settings
        status, message = "finished", ""
        started = time.perf_counter() - self.elapsed
        if s.max_minutes:
            self.deadline = started + 60 * s.max_minutes
        restore_handler = self._catch_sigint()
        try:
            from ._progress import EpochProgress

            with EpochProgress(total_epochs=s.epochs, steps=self.steps_per_epoch, quiet=self.quiet,
                               batch_size=s.batch_size, primary=self.task.primary) as progress:
                total_steps = s.epochs * self.steps_per_epoch
                if self.data_note:
                    progress.note(self.data_note)
                if s.warmup >= total_steps and self.global_step == 0:
                    progress.note(f"warning: warmup ({s.warmup} steps) is not shorter than the whole run "
                                  f"({total_steps} steps), so the learning rate never reaches {s.lr:g}; "
                                  f"lower --warmup or train longer")
                while self.epoch < s.epochs and not self.out_of_time:
                    if s.early_stop and self.stale >= s.early_stop:
                        progress.note(f"early stop: val_{self.task.primary} has not improved for {self.stale} epochs")
                        break
                    record = self.train_epoch(progress)
                    self.elapsed = time.perf_counter() - started
                    self.store.log_epoch(self.run_id, record["epoch"], record)
                    self.save()
                    progress.epoch_done(record)
                    if self.on_epoch is not None:
                        self.on_epoch(record)
                    if self.out_of_time:
                        progress.note(f"time budget of {s.max_minutes:g} min spent after epoch {self.epoch}; "
                                      f"keeping the best epoch so far")
                self.checkpoints.wait()  # the last epoch's checkpoint is on disk (or its error raised)
        except KeyboardInterrupt:
            self.interrupt_acted = True
            status, message = "interrupted", "interrupted by the user; resume with `archlab train --resume " + self.run_id + "`"
            self.elapsed = time.perf_counter() - started
            if not self.forced_stop:
                self.save()  # mid-epoch: the position in the epoch and the RNG come along
            # A forced stop may land between a weight update and the step counter: saving
            # that would make the resumed run differ, so the last saved checkpoint stays.
        except StopRun as e:
            self.store.set_status(self.run_id, e.status, message=e.message,
                                  duration_s=time.perf_counter() - started)
            raise
        except TrainingError as e:
            status, message = "failed", str(e)
        except BaseException as e:
            self.store.set_status(self.run_id, "failed", message=f"{type(e).__name__}: {e}",
                                  duration_s=time.perf_counter() - started)
            raise
        finally:
            self.checkpoints.close(reraise=False)  # a write in flight completes before anything else
            restore_handler()
        duration = time.perf_counter() - started
        if status != "finished":
            self.store.set_status(self.run_id, status, message=message, duration_s=duration)
            if status == "interrupted":
                raise KeyboardInterrupt(message)
            raise TrainingError(message)
        return self.finish(duration)

    def _catch_sigint(self):  # noqa: ANN202
        """First Ctrl-C: finish the current step, checkpoint, stop. Second: stop at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if self.stop_requested:
                self.forced_stop = True
                raise KeyboardInterrupt
            self.stop_requested = True

        signal.signal(signal.SIGINT, handler)

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)
            if self.stop_requested and not self.interrupt_acted:
                # Ctrl-C came after the last step (during validation or the test pass): the run
                # finished, but the caller (a search, a comparison) must still hear it.
                signal.raise_signal(signal.SIGINT)

        return restore

    def train_epoch(self, progress: Any) -> dict[str, float]:
        s = self.settings
        self.net.train()
        order, self.generator = epoch_order(len(self.train_split), s.seed, self.epoch)
        if self.resume_generator is not None:  # resumed mid-epoch: same order, same later draws
            self.generator.set_state(self.resume_generator)
            self.resume_generator = None
        sums = self.partial_sums
        first_bad = torch.tensor(-1, device=self.device)
        t0 = time.perf_counter()
        first_step = self.step_in_epoch  # > 0 when resumed mid-epoch: time only what runs now
        progress.start_epoch(self.epoch, self.step_in_epoch)
        for step, x, y in batches(self.train_split, order, s.batch_size, self.step_in_epoch,
                                  self.augment, self.generator, device=self.device, workers=s.workers):
            with autocast(self.device, s.precision):
                out = self.task.forward(self.model, x, y)
                loss = self.task.loss(out.float(), y)
            if self.device.type == "cpu":  # a check here costs nothing
                if not torch.isfinite(loss):
                    self._diverged(step, loss.item())
            else:  # no host sync per step on an accelerator: note the first bad step on the device
                bad = ~torch.isfinite(loss.detach())
                first_bad = torch.where(bad & (first_bad < 0), step, first_bad)
                if step % 50 == 49:
                    self._check_finite(first_bad)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if s.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), s.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            batch_sums = self.task.stats(out.detach().float(), y, loss)
            sums = batch_sums if sums is None else sums + batch_sums
            self.step_in_epoch, self.global_step = step + 1, self.global_step + 1
            self.partial_sums = sums
            progress.step(step + 1, loss)
            if self.stop_requested:
                raise KeyboardInterrupt
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                self.out_of_time = True  # validate and record this (partial) epoch, then stop
                break
        assert sums is not None
        self._check_finite(first_bad)  # before anything of this epoch is saved
        seen = min(self.step_in_epoch * s.batch_size, len(self.train_split))
        train = self.task.summarize(sums, seen)
        val, _ = evaluate_split(self.model, self.val_split, self.task, self.device, s.precision, s.eval_batch(self.device))
        seconds = time.perf_counter() - t0
        self.epoch += 1
        self.step_in_epoch, self.partial_sums = 0, None
        if val:  # with no validation split (a final retrain) the last weights are kept
            primary = val[self.task.primary]
            if self.task.better(primary, self.best):
                self.best, self.best_epoch, self.stale = primary, self.epoch, 0
                save_weights(self.dir / "best.safetensors", self.net)
            else:
                self.stale += 1
        record = {"epoch": self.epoch, **{f"train_{k}": v for k, v in train.items()},
                  **{f"val_{k}": v for k, v in val.items()}, "lr": self._lr_at(self.global_step - 1),
                  "seconds": seconds,
                  "samples_per_s": (seen - min(first_step * s.batch_size, seen)) / max(seconds, 1e-9)}
        if seen < len(self.train_split):
            record["partial"] = seen / len(self.train_split)  # the time budget ended this epoch early
        self.history.append(record)
        return record

    def _lr_at(self, step: int) -> float:
        """The learning rate the schedule gave at a (global, 0-based) step."""
        return self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](max(step, 0))

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        step = int(first_bad)
        if step >= 0:
            self._diverged(step, float("nan"))

    def _diverged(self, step: int, value: float) -> None:
        lower = f"{self.settings.lr / 10:g}"
        saved = (f"the last good checkpoint ({self.saved_at}) is intact in {self.dir}" if self.saved_at
                 else "no checkpoint was saved before it")
        raise TrainingError(
            f"loss became {value} at epoch {self.epoch + 1}, step {step + 1} (global step "
            f"{self.global_step - (self.step_in_epoch - step) + 1}); {saved}. "
            f"Try a lower learning rate (--lr {lower}) or gradient clipping (--grad-clip 1.0)")

    def finish(self, duration: float) -> Run:
        """Restore the best-validation weights, score the test split once, record it."""
        best_path = self.dir / "best.safetensors"
        if best_path.exists():
            load_weights(best_path, self.net)
        s = self.settings
        test, report = {}, {}
        if self.evaluate_test:
            test, report = evaluate_split(self.net, self.dataset.test.to(self.device), self.task, self.device,
                                          s.precision, s.eval_batch(self.device), report=True)
        train_metrics = {}
        if self.evaluate_train:
            train_metrics, _ = evaluate_split(self.net, self.train_split, self.task, self.device, s.precision,
                                              s.eval_batch(self.device))
        self.store.set_status(self.run_id, "finished", test_metrics=test, duration_s=duration)
        if report:
            import json

            (self.dir / "test_report.json").write_text(json.dumps(report))
        return Run(self.run_id, self.net, self.spec, self.settings, self.dataset.info, self.history, test,
                   report, "finished", self.best_epoch, self.dir, train_metrics)


# ----------------------------------------------------------------------- locking


@contextmanager
def run_lock(directory: Path, run_id: str) -> Iterator[None]:
    """Only one process trains a run at a time (two resumes would interleave checkpoints).

    An OS file lock: it is released when the process dies, even by SIGKILL.
    """
    import fcntl

    handle = open(directory / ".lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"run {run_id} is being trained by another process right now; "
                                f"wait for it or stop it first") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def is_alive(directory: Path) -> bool:
    """Whether a process holds the run's lock (i.e. is training it now)."""
    import fcntl

    path = directory / ".lock"
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def absolute_data_uri(uri: str) -> str:
    """`csv:rel.csv` -> `csv:/abs/rel.csv`, so a run resumes from any working directory."""
    name, sep, arg = uri.partition(":")
    if sep and arg and "?" not in arg and Path(arg).exists():
        return f"{name}:{Path(arg).resolve()}"
    if not sep and uri.endswith(".csv") and Path(uri).exists():
        return f"csv:{Path(uri).resolve()}"
    return uri


# ----------------------------------------------------------------------- weights


def save_weights(path: Path, model: nn.Module) -> None:
    """Model weights alone, atomically (temp file + rename), shared tensors once."""
    from safetensors.torch import save_model

    tmp = path.with_suffix(".tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path)


def load_weights(path: Path, model: nn.Module) -> None:
    from safetensors.torch import load_model

    try:
        load_model(model, str(path), device=str(next(model.parameters()).device))
    except Exception as e:  # safetensors raises plain errors for truncated or foreign files
        raise StoreError(f"{path}: cannot load weights ({type(e).__name__}: {e}); the file is damaged "
                         f"or from another architecture") from None


# ------------------------------------------------------------------------ the API


def fit(spec: Spec | str | Mapping[str, Any], data: str = "digits", *, store: SQLiteRunStorage | str | Path | None = None,
        quiet: bool = False, tags: Mapping[str, str] | None = None, data_root: str | Path | None = None,
        target: str | None = None, vars: Mapping[str, Any] | None = None, **settings: Any) -> Run:
    """Train a spec on a data set and record the run; returns the model, history and test metrics.

    >>> run = fit("zoo:mlp", data="digits", epochs=1, quiet=True)   # doctest: +SKIP
    >>> run.test_metrics["acc"]                                     # doctest: +SKIP
    """
    spec = load_spec(spec)
    from ._generative import fit_generative, generative_task

    if generative_task(spec, settings.get("task")):  # a VAE or GAN: its own loop, in archlab.generative
        return fit_generative(spec, data, store=store, quiet=quiet, tags=tags, data_root=data_root,
                              target=target, vars=vars, **settings)
    if vars:
        spec = spec.with_vars(vars)
    s = resolve_settings(spec, {**settings, "target": target})
    dataset = load_dataset(data, seed=s.seed, root=data_root, target=s.target, stream=s.stream)
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    trainer = Trainer(spec, dataset, s, st, data_uri=absolute_data_uri(data), quiet=quiet, tags=tags)
    return trainer.run()


def resume(run_id: str, *, store: SQLiteRunStorage | str | Path | None = None, quiet: bool = False,
           data_root: str | Path | None = None, **io: Any) -> Run:
    """Continue a stopped run from its last checkpoint; the result equals an uninterrupted run.

    `io` may override `stream` and `workers` (both paths give the same batches)."""
    if unknown := sorted(set(io) - set(IO_SETTINGS)):
        raise TrainingError(f"resume: only {', '.join(IO_SETTINGS)} may change on a resumed run. Received: "
                            f"{', '.join(unknown)}")
    io = {k: v for k, v in io.items() if v is not None}
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    record = st.get_run(run_id)
    if record.status == "finished":
        raise TrainingError(f"run {record.run_id} already finished; nothing to resume")
    directory = st.run_dir(record.run_id)
    if not has_checkpoint(directory):
        raise TrainingError(f"run {record.run_id} has no checkpoint in {directory} (it stopped before its "
                            f"first epoch ended); start it again with `archlab train`")
    if record.tags.get("task") in ("vae", "gan"):  # generative runs have their own loop
        from ._generative import resume_generative

        return resume_generative(record, st, quiet=quiet, data_root=data_root, **io)
    spec = Spec.from_dict(thaw(record.spec))
    s = dataclasses.replace(TrainSettings.from_mapping(thaw(record.settings)), **io)
    dataset = load_dataset(record.data, seed=s.seed, root=data_root, target=s.target, stream=s.stream)
    trainer = Trainer(spec, dataset, s, st, data_uri=record.data, quiet=quiet, run_id=record.run_id)
    trainer.restore()
    st.set_status(record.run_id, "running", message="resumed")
    return trainer.run()


def load_run_model(run_id: str, *, store: SQLiteRunStorage | str | Path | None = None,
                   device: str = "cpu") -> tuple[Network, Any]:
    """Rebuild a stored run's model with its best (else last) weights."""
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    record = st.get_run(run_id)
    directory = st.run_dir(record.run_id)
    net = build(Spec.from_dict(thaw(record.spec)), seed=0)
    best = directory / "best.safetensors"
    if best.exists():
        load_weights(best, net)
    elif has_checkpoint(directory):
        load_checkpoint(directory, model=net, restore_rng=False)
    else:
        raise StoreError(f"run {record.run_id} has no saved weights in {directory}")
    return net.to(device), record


def evaluate(run_id: str, data: str | None = None, *, store: SQLiteRunStorage | str | Path | None = None,
             split: str = "test", data_root: str | Path | None = None) -> dict[str, Any]:
    """Re-evaluate a saved model on a data set's split (default: the run's own data, test split)."""
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    net, record = load_run_model(run_id, store=st)
    settings = TrainSettings.from_mapping(thaw(record.settings))
    uri = data or record.data
    name, sep, _ = uri.partition(":")
    is_csv = name == "csv" or (not sep and uri.lower().endswith(".csv"))
    # The run's own target column; another table is read with the same column name.
    dataset = load_dataset(uri, seed=settings.seed, root=data_root, target=settings.target if is_csv else None,
                           stream=settings.stream)
    # A GAN's own input is its latent code; the data must fit the images it makes.
    expected = tuple(getattr(net, "image_shape", net.input_shape))
    if tuple(dataset.info.input_shape) != expected:
        raise ArchlabError(f"--data {uri}: samples of shape {tuple(dataset.info.input_shape)} do not fit the "
                           f"model's input {expected}; evaluate on data shaped like the run's own ({record.data})")
    if split not in ("train", "val", "test"):
        raise ArchlabError(f"--split must be train, val or test. Received: {split!r}")
    generative = record.tags.get("task")
    if generative in ("vae", "gan"):
        # A VAE is scored by its ELBO, a GAN by its discriminator's view of real and fake images.
        from ._generative import evaluate_gan, evaluate_vae

        score = evaluate_vae if generative == "vae" else evaluate_gan
        metrics = score(net, getattr(dataset, split), seed=settings.seed, batch_size=settings.eval_batch("cpu"))
        return {"run_id": record.run_id, "data": data or record.data, "split": split, **metrics}
    task_name = settings.task or dataset.info.task
    # The same loss as in training (label smoothing included), so the stored test loss is reproduced.
    options = {"label_smoothing": settings.label_smoothing} if task_name == "classify" else {}
    task = make_task(task_name, dataset.info.num_classes, dataset.info.vocab_size, **options)
    task.check_output(net.output_shape)
    metrics, report = evaluate_split(net, getattr(dataset, split), task, torch.device("cpu"),
                                     batch_size=settings.eval_batch("cpu"), report=True)
    return {"run_id": record.run_id, "data": data or record.data, "split": split, **metrics, **report}
