"""The trainer: one loop for every task, with checkpoints, resume, precision and a run record.

    run = archlab.train.fit("zoo:cnn", data="digits", epochs=5)
    run.test_metrics["acc"]

The loop is written once; a task (classify, regress, language_model, seq2seq, vae, gan)
owns its training step and its optimizers (`Task.train_step`, `Task.configure_optimizers`).
Where the loop is lives in one record, `LoopState`, saved whole in every checkpoint.

Data that fits in memory is served by slicing a per-epoch permutation of tensors already
on the device (no per-sample Dataset/collate). Each epoch's order (and a task's noise: a
VAE's eps, a GAN's z, augmentation) comes from a generator seeded by (seed, epoch), and the
global RNG (dropout) is saved in every checkpoint, so a run resumed from a checkpoint, at an
epoch's end or mid-epoch, computes exactly what an uninterrupted run computes.

Stopping. The first Ctrl-C finishes the current step, saves a mid-epoch checkpoint and
stops (status "interrupted"); a second stops at once and keeps the last consistent
checkpoint. `max_minutes` ends training after the step that spends the budget (that
partial epoch is validated and recorded). An `on_epoch` callback may raise `StopRun`.

Before anything is allocated or recorded, the model is built on the meta device: its
output is checked against the task, its embeddings' vocabularies against the data's token
ids (`archlab.train._inputs_fit`) and a training step's memory against what is available
(`archlab.train._memory`). A last batch of one sample is dropped when the model has batch
norm, which cannot normalise one value per channel in training mode (`--batch-size 1256`
on digits' 1,257 training images): each epoch then trains on all samples but one, a
different one each epoch as the order changes.

Divergence. A run fails (status "failed", its last good checkpoint left intact) when a
training loss is not finite (checked at every step), or when an epoch's mean training loss
is over `DIVERGED_FACTOR` (1000) times the loss of the run's first step, taken before any
update (and over 1000): `divergence_rule`. An lr of 100 with AdamW on digits starts at 2.3
and averages 6.8e12 over its first epoch: it fails there instead of training 30 epochs at
chance. The message suggests a learning rate (the optimizer's usual one when the run's is
above it, else a tenth) and gradient clipping.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import SpecError, StoreError, TrainingError, thaw
from ..data import (
    Augment,
    DataInfo,
    Dataset,
    DiskSplit,
    Split,
    describe_data_path,
    input_preprocessing,
    stream_batches,
)
from ..model import NOTHING_TO_CHECKPOINT, Network, build, checkpoint_repeats, is_checkpointed
from ..runs import (
    BEST_WEIGHTS,
    CHECKPOINT_JSON,
    PREPROCESSING_FILE,
    SPEC_FILE,
    TEST_REPORT,
    TOKENIZER_FILE,
    SQLiteRunStorage,
    run_lock,
    write_text,
)
from ..spec import Spec
from ._checkpoint import CheckpointWriter, load_checkpoint
from ._distill_task import distill_task
from ._distributed import (
    Group,
    check_layout,
    full_model_state,
    load_distributed,
    newest_checkpoint,
    part,
    rank_info,
    save_distributed,
    set_full_state,
    wrap,
)
from ._init_from import (
    InitReport,
    check_bn,
    freeze_parameters,
    frozen_names,
    hold_batchnorm,
    plan_run_init,
)
from ._inputs_fit import check_vocab_fits
from ._memory import check_memory
from ._optim import StepContext, autocast, make_schedule
from ._settings import TrainSettings
from ._state import LoopState
from ._tasks import Task, task_for
from ._tensorboard import TensorBoardLog

__all__ = ["Run", "StopRun", "Trainer", "autocast", "batches", "epoch_order", "evaluate_split"]

# A finite loss this many times above the first epoch's is divergence (see `divergence_rule`).
DIVERGED_FACTOR = 1000.0


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
            workers: int | None = None, steps: int | None = None, rank: int = 0,
            world: int = 1) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(step, x, y) from `start` on, up to `steps` (default: every batch). In-memory data is sliced
    where it lies (the order moves to its device once); data on disk streams through a
    DataLoader to `device`, in the same order.

    On `world` ranks, each step's global batch of `batch_size` is still cut from `order` and
    rank `rank` gets its contiguous part of it (`part`); augmentation draws for the whole
    batch, so each sample is augmented as one process would augment it."""
    limit = steps
    n = len(split)
    end = math.ceil(n / batch_size) if limit is None else limit
    if isinstance(split, DiskSplit):
        if world > 1:  # this rank's parts of every batch, in order: it streams them at batch_size / world
            order = torch.cat([order[s * batch_size:(s + 1) * batch_size][slice(*part(
                min(batch_size, n - s * batch_size), rank, world))] for s in range(end)])
            limit = end  # the reader counts batches of the whole split: stop after this rank's
        batches_ = stream_batches(split, order, batch_size // world, start, device=device, workers=workers)
    else:
        order = order.to(split.x.device)

        def take(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = order[step * batch_size:(step + 1) * batch_size]
            return split.take(idx[slice(*part(len(idx), rank, world))] if world > 1 else idx)

        batches_ = ((step, *take(step)) for step in range(start, end))
    for step, x, y in batches_:
        if limit is not None and step >= limit:
            break
        if augment:  # in this process, from the run's generator: the same draws on either path
            if world > 1:
                total = min(batch_size, n - step * batch_size)
                x = augment(x, generator, part=(part(total, rank, world)[0], total))
            else:
                x = augment(x, generator)
        yield step, x, y


def evaluate_split(model: nn.Module, split: Split | DiskSplit, task: Task, device: torch.device, precision: str = "fp32",
                   batch_size: int = 1024, report: bool = False, seed: int = 0) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of `model` on a split, in eval mode; with `report`, the task's extra results too."""
    return task.evaluate(model, split, device=device, precision=precision, batch_size=batch_size, seed=seed,
                         report=report)


def environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
           "platform": sys.platform}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _has_batch_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def divergence_rule(first: float, now: float, factor: float = DIVERGED_FACTOR) -> bool:
    """Whether an epoch's mean training loss `now` says the run diverged, given the loss of the
    run's first step `first` (before any update): `now` is over `factor` times both `first`
    and 1 (so a loss that starts near zero may still wander up a little). NaN and inf are
    caught at their step, not here.

    >>> divergence_rule(2.3, 2.1), divergence_rule(2.3, 6.8e12), divergence_rule(1e-4, 0.5)
    (False, True, False)
    """
    return math.isfinite(first) and now > factor * max(abs(first), 1.0)


# ------------------------------------------------------------------------ the loop


@dataclass
class _Signals:
    """Ctrl-C bookkeeping: the first asks to stop after the step, a second forces it."""

    requested: bool = False
    forced: bool = False   # stopped mid-step: the state is not consistent, nothing is saved
    acted: bool = False    # the loop turned the request into a stop


class Trainer:
    """One run: the task, its model and optimizers, the data, the run record; `run()` is the loop.

    Use `fit` or `resume`; compare and search construct it directly (with `evaluate_test`,
    `evaluate_train` and an `on_epoch` callback that may raise `StopRun`).
    """

    def __init__(self, spec: Spec, dataset: Dataset, settings: TrainSettings, store: SQLiteRunStorage,
                 *, data_uri: str, quiet: bool = False, tags: Mapping[str, str] | None = None,
                 run_id: str | None = None, evaluate_test: bool = True, evaluate_train: bool = False,
                 on_epoch: Callable[[dict[str, float]], None] | None = None,
                 on_start: Callable[[str], None] | None = None, initialize: bool = True,
                 initial_weights: Mapping[str, torch.Tensor] | None = None):
        info = dataset.info
        # Weights to start from instead of a fresh initialisation (a pruned network's survivors).
        self.initial_weights = initial_weights
        self.task = task = task_for(spec, settings, info)
        if settings.teacher:  # knowledge distillation: the task's step learns from a stored run too
            self.task, settings = distill_task(task, settings, info, store)
            task = self.task
            tags = {"teacher": settings.teacher, **dict(tags or {})}
        task.check_settings(settings, info)
        if settings.task is None and task.name != info.task:  # recorded, so a resume trains the same task
            settings = dataclasses.replace(settings, task=task.name)
        self.settings = s = settings
        self.spec = task.adapt_spec(spec, dataset)
        self.device = pick_device(s.device)
        # Several processes (torchrun's RANK/WORLD_SIZE): rank 0 alone records and reports.
        ranks = rank_info()
        self.world, self.primary = ranks.world, ranks.primary
        if (ranks.distributed or s.accumulate > 1) and task.own_step:
            what = f"{ranks.world} processes" if ranks.distributed else f"--accumulate {s.accumulate}"
            raise SpecError(f"train: task {task.name} writes its own training step, which trains on one process "
                            f"without accumulation. Received: {what}; train it with --nproc 1 --accumulate 1")
        check_layout(s.batch_size, ranks.world, s.accumulate)
        self.group: Group | None = None
        if ranks.distributed:
            self.group = Group.start(self.device, ranks)
            self.device = self.group.device
        self.strategy = s.strategy or "ddp"
        quiet = quiet or not self.primary
        self.dataset, self.store, self.quiet = dataset, store, quiet

        # First on the meta device (no weights): the output check and whether a step fits in
        # memory, before anything is recorded or allocated.
        meta = build(self.spec, seed=s.seed, device="meta")
        task.check_output(meta.output_shape)
        check_vocab_fits(meta, info, where=f"--data {data_uri}")  # else "index out of range" mid-epoch
        check_memory(meta, s, info, self.device)
        if s.activation_checkpointing and not checkpoint_repeats(meta) and not any(map(is_checkpointed, meta.modules())):
            raise SpecError(NOTHING_TO_CHECKPOINT)  # before anything is recorded
        # Transfer learning (_init_from): what loads, checked on the meta model before the run is
        # recorded. A resume from a checkpoint (initialize=False) never reloads the source.
        self.init_report: InitReport | None = None
        if s.init_from is not None and initialize:
            self.init_report = plan_run_init(meta, s, store, quiet=quiet)  # prints its table
            self.settings = s = dataclasses.replace(s, init_from=self.init_report.source.resolved)
        frozen_names(meta, s.freeze)
        check_bn(meta, s.bn)
        n = len(dataset.train)
        self.steps_per_epoch = math.ceil(n / s.batch_size)
        if n % s.batch_size == 1 and n > 1 and _has_batch_norm(meta):
            # Batch norm cannot train on one value per channel: a last batch of one sample is
            # dropped (a different sample each epoch, as the order changes).
            self.steps_per_epoch -= 1
        elif 0 < n % s.batch_size < self.world and n > s.batch_size:
            # Every rank must take part in every step: a last batch smaller than the number of
            # processes is dropped (a different part each epoch).
            self.steps_per_epoch -= 1
        self.epoch_samples = min(self.steps_per_epoch * s.batch_size, n)
        self.augment = Augment(crop_padding=s.crop_padding, hflip=s.hflip)
        self.state = LoopState()
        self._signals = _Signals()
        self.deadline: float | None = None  # perf_counter time when the budget runs out
        self.out_of_time = False
        self.saved_at: str | None = None  # where the last checkpoint was taken, for messages
        created = run_id is None
        if created and self.primary:
            params = sum(p.numel() for p in meta.parameters())
            run_id = store.create_run(name=self.spec.name, data=data_uri, spec=self.spec.to_dict(),
                                      settings=s.to_dict(), params=params,
                                      env={**environment(self.device), **({"world_size": self.world,
                                           "strategy": self.strategy} if self.world > 1 else {})},
                                      tags={"task": task.name, **dict(tags or {})})
            (store.run_dir(run_id) / SPEC_FILE).write_text(self.spec.to_yaml())
            tokenizer = getattr(info, "tokenizer", None)
            import json

            if tokenizer:  # so `archlab generate` can encode prompts and decode samples later
                (store.run_dir(run_id) / TOKENIZER_FILE).write_text(json.dumps(thaw(tokenizer)))
            # and so `archlab predict` reads new inputs as this data set's loader read its own
            # (the tokenizer stays in its own file, once)
            prep = input_preprocessing(info) | {"tokenizer": None}
            write_text(store.run_dir(run_id) / PREPROCESSING_FILE, json.dumps(prep))
            if on_start is not None:
                on_start(run_id)
        if self.group is not None:  # the id and folder rank 0 recorded; the others never write the store
            run_id, folder = self.group.broadcast_json([run_id, str(store.run_dir(run_id)) if self.primary else None])
            if not self.primary:
                self.store = _Quiet(Path(folder))
        self.run_id = run_id
        self.dir = self.store.run_dir(run_id)
        # Snapshots at each save; a background thread writes them while the next epoch runs.
        self.checkpoints = CheckpointWriter(self.dir)
        try:
            self._allocate(dataset)
        except KeyboardInterrupt:
            if created and self.primary:
                store.set_status(run_id, "interrupted", message="interrupted by the user before its first step "
                                 "(no checkpoint: `archlab train --resume` says how to start it again)")
            raise
        except BaseException as e:  # recorded already: say why it never trained
            if created and self.primary:
                store.set_status(run_id, "failed", message=f"{type(e).__name__}: {e}")
            raise
        # Cross-validation folds never look at the test split; their train metric is
        # measured in eval mode after training, for the train-validation gap.
        self.evaluate_test, self.evaluate_train = evaluate_test, evaluate_train
        # Called after each epoch is logged and checkpointed; it may raise StopRun (a pruner).
        self.on_epoch = on_epoch

    def _allocate(self, dataset: Dataset) -> None:
        """The real weights, optimizers and data on the device (after the run is recorded)."""
        s, task = self.settings, self.task
        torch.manual_seed(s.seed)
        self.net: Network = build(self.spec, seed=s.seed)
        if s.activation_checkpointing:  # the same weights and results; less memory, a forward more per step
            checkpoint_repeats(self.net)
        if self.initial_weights is not None:
            try:
                self.net.load_state_dict(self.initial_weights, strict=True)
            except RuntimeError as e:
                raise TrainingError(f"initial_weights: they do not fit the spec {self.spec.name} "
                                    f"({str(e).splitlines()[0]}); pass the state dict of a network built from it") from None
        task.check_output(self.net.output_shape)
        if self.init_report is not None:
            self.init_report.load(self.net)
        freeze_parameters(self.net, s.freeze)  # before the optimizers: frozen ones stay out of them
        self.net.to(self.device)
        # What validation and the kept weights use: the plain net, or on FSDP a whole copy on rank 0.
        self.eval_net: nn.Module = self.net
        model: nn.Module = self.net
        if self.group is not None:
            model = wrap(self.net, self.strategy, self.device)  # before the optimizer: FSDP swaps the parameters
            if self.strategy == "fsdp" and self.primary:
                self.eval_net = build(self.spec, seed=s.seed).to(self.device)
        self.model: nn.Module = torch.compile(model) if s.compile else model
        self.optimizers = task.configure_optimizers(self.net, s)
        self.schedulers = [make_schedule(o, s, self.steps_per_epoch) for o in self.optimizers]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=s.precision == "fp16" and self.device.type == "cuda")
        # In-memory data lives on the device for the whole run: slicing beats a DataLoader there.
        # A DiskSplit stays where it is and streams (archlab.data).
        self.train_split = dataset.train.to(self.device)
        self.val_split = dataset.val.to(self.device)

    # The names the loop state had as attributes (compare, search and bench read them).
    @property
    def history(self) -> list[dict[str, float]]:
        return self.state.history

    @history.setter
    def history(self, value: list[dict[str, float]]) -> None:
        self.state.history = value

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers[0]

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        return self.schedulers[0]

    # -- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's `state`: the loop state, the scaler, and any optimizers and schedulers
        after the first (which the checkpoint keeps in its own slots)."""
        return {**self.state.state_dict(), "scaler": self.scaler.state_dict(),
                "optimizers": [o.state_dict() for o in self.optimizers[1:]],
                "schedulers": [sc.state_dict() for sc in self.schedulers[1:]]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        where = str(self.dir / CHECKPOINT_JSON)
        self.state.load_state_dict(state, steps_per_epoch=self.steps_per_epoch, where=where)
        if self.state.partial_sums is not None:
            self.state.partial_sums = self.state.partial_sums.to(self.device)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        more = state.get("optimizers")
        more_schedules = state.get("schedulers")
        if more is None and "d_optimizer" in state:  # a GAN checkpoint from before the one loop
            more, more_schedules = [state["d_optimizer"]], [state["d_scheduler"]]
        more, more_schedules = more or [], more_schedules or []
        if len(more) != len(self.optimizers) - 1 or len(more_schedules) != len(self.schedulers) - 1:
            raise StoreError(f"{where}: holds {len(more) + 1} optimizer(s) but a {self.task.name} run has "
                             f"{len(self.optimizers)}; resume it with the archlab that wrote it")
        try:
            for obj, saved in zip([*self.optimizers[1:], *self.schedulers[1:]], [*more, *more_schedules],
                                  strict=True):
                obj.load_state_dict(saved)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise StoreError(f"{where}: optimizer or scheduler state does not fit ({e}); the checkpoint is "
                             f"damaged or from another spec") from None

    def save(self) -> None:
        st = self.state
        # Mid-epoch only: where the epoch's generator (order, augmentation, noise) had got to.
        st.generator = self.generator.get_state() if st.step_in_epoch and self.generator is not None else None
        if self.group is not None:  # every rank's part, through torch.distributed.checkpoint
            state = self.state_dict()
            if st.partial_sums is not None:  # the whole run's sums so far: they resume on any number of ranks
                state["partial_sums"] = self.group.sum(st.partial_sums)
            save_distributed(self.dir, self.group, self.net, self.optimizers[0], self.schedulers[0], state,
                             strategy=self.strategy)
            self.saved_at = self._position()
            return
        self.checkpoints.save(model=self.net, optimizer=self.optimizers[0], scheduler=self.schedulers[0],
                              state=self.state_dict())
        self.saved_at = self._position()

    def restore(self) -> None:
        self.checkpoints.wait()
        kind = newest_checkpoint(self.dir)
        if kind == "distributed":  # written by several ranks: DCP reshards it onto this many
            state = load_distributed(self.dir, self.net, self.optimizers[0], self.schedulers[0], self.group)
        elif self.group is not None:  # a one-process checkpoint, on several ranks: whole, then sharded
            net = build(self.spec, seed=self.settings.seed).to(self.device)
            optimizer = self.task.configure_optimizers(net, self.settings)[0]
            schedule = make_schedule(optimizer, self.settings, self.steps_per_epoch)
            state = load_checkpoint(self.dir, model=net, optimizer=optimizer, scheduler=schedule)
            from torch.distributed.checkpoint.state_dict import get_state_dict

            set_full_state(self.net, self.optimizers[0], *get_state_dict(net, optimizer))
            self.schedulers[0].load_state_dict(schedule.state_dict())
        else:
            state = load_checkpoint(self.dir, model=self.net, optimizer=self.optimizers[0],
                                    scheduler=self.schedulers[0])
        self.load_state_dict(state)
        if self.group is not None and not self.primary and self.state.partial_sums is not None:
            self.state.partial_sums = torch.zeros_like(self.state.partial_sums)  # rank 0 holds the sums so far
        self.saved_at = self._position()

    def _position(self) -> str:
        if self.state.step_in_epoch:
            return f"epoch {self.state.epoch + 1}, step {self.state.step_in_epoch}"
        return f"end of epoch {self.state.epoch}"

    generator: torch.Generator | None = None  # this epoch's; set by train_epoch

    # -- the loop

    def run(self) -> Run:
        if not self.primary:  # rank 0 holds the run's lock
            return self._run()
        with run_lock(self.dir, self.run_id):
            return self._run()

    def _run(self) -> Run:
        s, st = self.settings, self.state
        status, message = "finished", ""
        started = time.perf_counter() - st.elapsed
        if s.max_minutes:
            self.deadline = started + 60 * s.max_minutes
        restore_handler = self._catch_sigint()
        try:
            from ._progress import EpochProgress

            with EpochProgress(total_epochs=s.epochs, steps=self.steps_per_epoch, quiet=self.quiet,
                               batch_size=s.batch_size, primary=self.task.primary) as progress, \
                    (TensorBoardLog(self.dir, first_epoch=st.epoch + 1, spec=self.spec.to_yaml(),
                                    settings=s.to_dict(), note=progress.note) if self.primary else _NoBoard()) as board:
                total_steps = s.epochs * self.steps_per_epoch
                if note := describe_data_path(self.dataset):
                    progress.note(note)
                for note in self.dataset.info.notes:  # e.g. which csv column is the target
                    progress.note(note)
                if s.warmup >= total_steps and st.global_step == 0:
                    progress.note(f"warning: warmup ({s.warmup} steps) is not shorter than the whole run "
                                  f"({total_steps} steps), so the learning rate never reaches {s.lr:g}; "
                                  f"lower --warmup or train longer")
                while st.epoch < s.epochs and not self.out_of_time:
                    if s.early_stop and st.stale >= s.early_stop:
                        progress.note(f"early stop: val_{self.task.primary} has not improved for {st.stale} epochs")
                        break
                    record = self.train_epoch(progress)
                    st.elapsed = time.perf_counter() - started
                    self.store.log_epoch(self.run_id, record["epoch"], record)
                    board.epoch(record)
                    self.save()
                    progress.epoch_done(record)
                    if self.on_epoch is not None:
                        self.on_epoch(record)
                    if self.out_of_time:
                        progress.note(f"time budget of {s.max_minutes:g} min spent after epoch {st.epoch}; "
                                      f"keeping the best epoch so far")
                self.checkpoints.wait()  # the last epoch's checkpoint is on disk (or its error raised)
        except KeyboardInterrupt:
            self._signals.acted = True
            status, message = "interrupted", "interrupted by the user; resume with `archlab train --resume " + self.run_id + "`"
            st.elapsed = time.perf_counter() - started
            if not self._signals.forced:
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
        signals = self._signals

        def handler(signum: int, frame: Any) -> None:
            if signals.requested:
                signals.forced = True
                raise KeyboardInterrupt
            signals.requested = True

        signal.signal(signal.SIGINT, handler)

        def restore() -> None:
            signal.signal(signal.SIGINT, previous)
            if signals.requested and not signals.acted:
                # Ctrl-C came after the last step (during validation or the test pass): the run
                # finished, but the caller (a search, a comparison) must still hear it.
                signal.raise_signal(signal.SIGINT)

        return restore

    def train_epoch(self, progress: Any) -> dict[str, float]:
        """Train one epoch (or its rest, after a mid-epoch resume), validate, and return its record."""
        s, st, task = self.settings, self.state, self.task
        self.net.train()
        if s.bn == "frozen":
            hold_batchnorm(self.net)  # eval mode: running statistics unchanged
        order, self.generator = epoch_order(len(self.train_split), s.seed, st.epoch)
        if st.generator is not None:  # resumed mid-epoch: same order, same later draws
            self.generator.set_state(st.generator)
            st.generator = None
        ctx = StepContext(self.model, self.net, self.generator, self.device, s.precision, s.grad_clip, self.scaler,
                          world=self.world, accumulate=s.accumulate)
        n, group = len(self.train_split), self.group
        sums = st.partial_sums
        first_bad = torch.tensor(-1, device=self.device)
        t0 = time.perf_counter()
        first_step = st.step_in_epoch  # > 0 when resumed mid-epoch: time only what runs now
        progress.start_epoch(st.epoch, st.step_in_epoch)
        for step, x, y in batches(self.train_split, order, s.batch_size, st.step_in_epoch,
                                  self.augment, self.generator, device=self.device, workers=s.workers,
                                  steps=self.steps_per_epoch, rank=group.rank if group else 0, world=self.world):
            ctx.global_batch = min(s.batch_size, n - step * s.batch_size)
            loss, batch_sums = task.train_step(ctx, (x, y), self.optimizers)
            stop = late = False
            if group is not None:  # every rank sees the global loss and stops at the same step
                late = self.deadline is not None and time.perf_counter() >= self.deadline
                loss, (stop, late) = group.agree(loss, self._signals.requested, late)
                loss = loss / self.world
            self.scaler.update()
            for schedule in self.schedulers:
                schedule.step()
            if self.device.type == "cpu":  # a check here costs nothing
                if not torch.isfinite(loss):
                    self._diverged(step, loss.item())
            else:  # no host sync per step on an accelerator: note the first bad step on the device
                bad = ~torch.isfinite(loss.detach())
                first_bad = torch.where(bad & (first_bad < 0), step, first_bad)
                if step % 50 == 49:
                    self._check_finite(first_bad)
            if st.global_step == 0:  # the loss before any update: the yardstick of divergence_rule
                st.first_loss = float(loss.detach())
            sums = batch_sums if sums is None else sums + batch_sums
            st.step_in_epoch, st.global_step = step + 1, st.global_step + 1
            st.partial_sums = sums
            progress.step(step + 1, loss)
            if group is None:
                stop = self._signals.requested
                late = self.deadline is not None and time.perf_counter() >= self.deadline
            if stop:
                self._signals.requested = True
                raise KeyboardInterrupt
            if late:
                self.out_of_time = True  # validate and record this (partial) epoch, then stop
                break
        assert sums is not None
        self._check_finite(first_bad)  # before anything of this epoch is saved
        seen = min(st.step_in_epoch * s.batch_size, self.epoch_samples)
        train = task.summarize(sums if group is None else group.sum(sums), seen)
        self._check_growth(train)
        val: dict[str, float] = {}
        if task.validates:
            val = self._validate()
        seconds = time.perf_counter() - t0
        st.epoch += 1
        st.step_in_epoch, st.partial_sums = 0, None
        if val:  # with no validation split (a final retrain) the last weights are kept
            self._keep_if_best(val)
        record = {"epoch": st.epoch, **{f"train_{k}": v for k, v in train.items()},
                  **{f"val_{k}": v for k, v in val.items()}, "lr": self._lr_at(st.global_step - 1),
                  "seconds": seconds,
                  "samples_per_s": (seen - min(first_step * s.batch_size, seen)) / max(seconds, 1e-9)}
        if seen < self.epoch_samples:
            record["partial"] = seen / self.epoch_samples  # the time budget ended this epoch early
        st.history.append(record)
        return record

    def _validate(self) -> dict[str, float]:
        """The validation metrics; on several ranks rank 0 measures them on the whole model (the
        numbers one process gets) and sends them to the others."""
        s = self.settings
        if self.group is None:
            val, _ = self.task.evaluate(self.model, self.val_split, device=self.device, precision=s.precision,
                                        batch_size=s.eval_batch(self.device), seed=s.seed)
            return val
        if self.strategy == "fsdp":  # gather the shards (every rank) into rank 0's whole copy
            weights = full_model_state(self.net, self.group)
            if self.primary:
                self.eval_net.load_state_dict(weights)
        val = None
        if self.primary:
            val, _ = self.task.evaluate(self.eval_net, self.val_split, device=self.device, precision=s.precision,
                                        batch_size=s.eval_batch(self.device), seed=s.seed)
        return self.group.broadcast_json(val)

    def _keep_if_best(self, val: Mapping[str, float]) -> None:
        """Keep this epoch's weights if its validation primary metric is the best so far.

        Ties: a later epoch that equals the best primary metric with a lower validation loss
        is kept instead (with 18 validation samples, accuracy often ties while the loss still
        falls); on an equal loss too, the earlier epoch stays."""
        st, task = self.state, self.task
        primary, loss = val[task.primary], val.get("loss")
        tie = (st.best is not None and primary == st.best and loss is not None and st.best_loss is not None
               and loss < st.best_loss)
        if task.better(primary, st.best) or tie:
            st.best, st.best_epoch, st.best_loss, st.stale = primary, st.epoch, loss, 0
            if self.primary:  # on several ranks rank 0's whole copy, as validated
                save_weights(self.dir / BEST_WEIGHTS, self.eval_net)
        else:
            st.stale += 1

    def _lr_at(self, step: int) -> float:
        """The learning rate the schedule gave at a (global, 0-based) step."""
        return self.schedulers[0].base_lrs[0] * self.schedulers[0].lr_lambdas[0](max(step, 0))

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        step = int(first_bad)
        if step >= 0:
            self._diverged(step, float("nan"))

    def _check_growth(self, train: Mapping[str, float]) -> None:
        """A finite loss that explodes is divergence too (`divergence_rule`)."""
        first, now = self.state.first_loss, train.get("loss")
        if first is None or now is None:
            return
        if divergence_rule(first, now):
            raise TrainingError(
                f"training loss {now:.4g} in epoch {self.state.epoch + 1} is over {DIVERGED_FACTOR:g} times the "
                f"loss at the first step ({first:.4g}): the run diverged; {self._saved_note()}. {self._advice()}")

    def _diverged(self, step: int, value: float) -> None:
        st = self.state
        raise TrainingError(
            f"loss became {value} at epoch {st.epoch + 1}, step {step + 1} (global step "
            f"{st.global_step - (st.step_in_epoch - step) + 1}); {self._saved_note()}. {self._advice()}")

    def _saved_note(self) -> str:
        return (f"the last good checkpoint ({self.saved_at}) is intact in {self.dir}" if self.saved_at
                else "no checkpoint was saved before it")

    def _advice(self) -> str:
        """What to try: a lower learning rate (a usual value for the optimizer when the run's is
        above it, else a tenth of it) and gradient clipping."""
        s = self.settings
        usual = 0.1 if s.optimizer == "sgd" else 1e-3
        lower = usual if s.lr > usual else s.lr / 10
        clip = "" if s.grad_clip else " or gradient clipping (--grad-clip 1.0)"
        return f"Try a lower learning rate (--lr {lower:g}; {s.optimizer}'s usual is {usual:g}){clip}"

    def finish(self, duration: float) -> Run:
        """Restore the best-validation weights, score the test split once, record it."""
        s, task = self.settings, self.task
        if self.group is not None:  # rank 0 scores its whole copy; the others are done
            weights = full_model_state(self.net, self.group)
            if not self.primary:
                return Run(self.run_id, self.net, self.spec, s, self.dataset.info, self.history, {}, {},
                           "finished", self.state.best_epoch, self.dir)
            if self.eval_net is not self.net:
                self.eval_net.load_state_dict(weights)
            self.net = self.eval_net  # the plain module (DDP's inner one, or the whole FSDP copy)
        best_path = self.dir / BEST_WEIGHTS
        if best_path.exists():
            load_weights(best_path, self.net)
        test, report = {}, {}
        if self.evaluate_test:
            test, report = task.evaluate(self.net, self.dataset.test.to(self.device), device=self.device,
                                         precision=s.precision, batch_size=s.eval_batch(self.device), seed=s.seed,
                                         report=True)
        train_metrics = {}
        if self.evaluate_train:
            train_metrics, _ = task.evaluate(self.net, self.train_split, device=self.device, precision=s.precision,
                                             batch_size=s.eval_batch(self.device), seed=s.seed)
        self.store.set_status(self.run_id, "finished", test_metrics=test, duration_s=duration)
        if report:
            import json

            write_text(self.dir / TEST_REPORT, json.dumps(report))
        # A task without validation (a GAN) keeps its last weights: that epoch is the one reported.
        best_epoch = self.state.best_epoch if task.validates else self.state.epoch
        return Run(self.run_id, self.net, self.spec, self.settings, self.dataset.info, self.history, test,
                   report, "finished", best_epoch, self.dir, train_metrics)


class _Quiet:
    """The run store as ranks other than 0 see it: the run's folder, and no writes."""

    def __init__(self, folder: Path):
        self.folder = folder

    def run_dir(self, run_id: str, create: bool = True) -> Path:
        return self.folder

    def log_epoch(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        pass


class _NoBoard:
    """TensorBoardLog's place on ranks other than 0."""

    def __enter__(self) -> _NoBoard:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def epoch(self, record: Any) -> None:
        pass


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


