"""Progress for training: a rich bar per epoch on a terminal, one plain line per epoch
elsewhere (CI logs, pipes), nothing when quiet. Never the reason a run fails."""

from __future__ import annotations

import sys
import time
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..core import format_metric


class EpochProgress:
    """Shows steps within an epoch (loss, samples/s, ETA) and a summary line per epoch."""

    REFRESH_S = 0.2  # read the loss (a device sync) at most this often

    def __init__(self, *, total_epochs: int, steps: int, batch_size: int, primary: str, quiet: bool = False,
                 console: Console | None = None):
        self.total_epochs, self.steps, self.batch_size, self.primary = total_epochs, steps, batch_size, primary
        self.quiet = quiet
        self.console = console or Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.live = not quiet and self.console.is_terminal
        self.progress: Progress | None = None
        self.task_id: Any = None
        self.last_refresh = 0.0
        self.epoch_started = 0.0
        self.first_step = 0
        self.epoch_seconds: list[float] = []

    def __enter__(self) -> EpochProgress:
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_epoch(self, epoch: int, first_step: int) -> None:
        self.epoch_started = time.perf_counter()
        self.first_step = first_step
        if self.progress is not None:
            if self.task_id is not None:
                self.progress.remove_task(self.task_id)
            self.task_id = self.progress.add_task(f"epoch {epoch + 1}/{self.total_epochs}", total=self.steps,
                                                  completed=first_step, stats="")

    def step(self, step: int, loss: torch.Tensor) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self.last_refresh < self.REFRESH_S and step < self.steps:
            return
        self.last_refresh = now
        rate = (step - self.first_step) * self.batch_size / max(now - self.epoch_started, 1e-9)
        self.progress.update(self.task_id, completed=step, stats=f"loss {loss.item():.4f}  {rate:,.0f} samples/s")

    def epoch_done(self, record: dict[str, float]) -> None:
        self.epoch_seconds.append(record["seconds"])
        if self.quiet:
            return
        left = self.total_epochs - int(record["epoch"])
        eta = left * sum(self.epoch_seconds) / len(self.epoch_seconds)
        keys = [k for k in record if k.startswith(("train_", "val_"))]
        stats = "  ".join(f"{k} {format_metric(record[k])}" for k in keys)
        line = (f"epoch {int(record['epoch'])}/{self.total_epochs}  {stats}  lr {record['lr']:.2e}  "
                f"{record['seconds']:.1f}s  {record['samples_per_s']:,.0f} samples/s"
                + (f"  eta {eta:.0f}s" if left else ""))
        self.console.print(line, markup=False)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False)


class TaskProgress:
    """Progress over a fixed number of tasks (folds, trials): a bar with ETA on a terminal,
    one line per finished task elsewhere, nothing when quiet."""

    def __init__(self, total: int, what: str, *, quiet: bool = False, console: Console | None = None):
        self.total, self.what, self.quiet = total, what, quiet
        self.console = console or Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.live = not quiet and self.console.is_terminal
        self.done = 0
        self.started = time.perf_counter()
        self.progress: Progress | None = None

    def __enter__(self) -> TaskProgress:
        if self.live:
            self.progress = Progress(TextColumn(f"[bold]{self.what}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task_id = self.progress.add_task(self.what, total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, line: str = "") -> None:
        self.done += 1
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        text = f"[{self.done}/{self.total}] {line}" + (f"  eta {eta:.0f}s" if self.done < self.total else "")
        if self.progress is not None:
            self.progress.console.print(text, markup=False)  # labels like mlp[depth=2] are not markup
            self.progress.advance(self.task_id)
        else:
            self.console.print(text, markup=False)
