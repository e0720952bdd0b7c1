"""What a running search prints: trials done / total, the best so far and an ETA, as a bar on
a terminal or one line per trial in logs and pipes."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..core import format_metric
from ._space import Objective
from ._storage import TrialSummary, _counted, _distinct, _finished, _original, _pareto, _summary


class _Progress:
    """Trials done / total, best so far and ETA: a bar on a terminal, one line per trial in
    logs and pipes, nothing when quiet."""

    def __init__(self, total: int | None, deadline: float | None, objectives: tuple[Objective, ...],
                 done: int, quiet: bool):
        from rich.console import Console

        self.total, self.deadline, self.objectives, self.quiet = total, deadline, objectives, quiet
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.started = time.perf_counter()
        self.start_done = done
        self.seen: set[int] = set()
        self.bar: Any = None
        self.task: Any = None
        self.trained = next(o for o in objectives if o.trained)

    def __enter__(self) -> _Progress:
        if not self.quiet and self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[best]}"), TextColumn("{task.fields[eta]}"),
                                TimeElapsedColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("trials", total=self.total, completed=self.start_done, best="", eta="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def mark_seen(self, trials: Iterable[Any]) -> None:
        self.seen.update(t.number for t in trials if _finished(t))

    def update(self, trials: Sequence[Any]) -> None:
        new = sorted((t for t in trials if t.number not in self.seen and (_finished(t) or
                      t.user_attrs.get("interrupted"))), key=lambda t: t.number)
        if not new:
            return
        done = sum(_counted(t) for t in trials)
        best = self._best(trials)
        eta = self._eta(done)
        for t in new:
            self.seen.add(t.number)
            if self.quiet:
                continue
            total = f"/{self.total}" if self.total else ""
            line = f"[{done}{total}] {self._describe(_summary(t))}  | {best}" + (f"  {eta}" if eta else "")
            if self.bar is not None:
                self.bar.console.print(line)
            else:
                self.console.print(line)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, best=best, eta=eta)

    def _describe(self, s: TrialSummary) -> str:
        key = self.trained.key
        if s.state == "infeasible":
            return f"trial {s.number} infeasible ({s.infeasible}), not trained, not counted"
        if s.state == "duplicate":
            return f"trial {s.number}: the same choices as trial {s.duplicate_of}, its result reused, not counted"
        if s.state == "complete" and s.values is not None:
            parts = [f"{o.key} {format_metric(v)}" for o, v in zip(self.objectives, s.values, strict=True)]
            return f"trial {s.number} complete  " + "  ".join(parts) + f"  ({s.epochs} epochs)"
        if s.state == "pruned":
            best = min if self.trained.direction == "minimize" else max  # its best epoch, not its worst
            last = f"  best {key} {format_metric(best(s.curve))}" if s.curve else ""
            return f"trial {s.number} pruned after {s.epochs} epochs{last}"
        return f"trial {s.number} {s.state}" + (f": {s.message}" if s.message else "")

    def _best(self, trials: Sequence[Any]) -> str:
        complete = _distinct([t for t in trials if _original(t)])
        if not complete:
            return "best: none yet"
        i = next(k for k, o in enumerate(self.objectives) if o.trained)
        sign = 1 if self.trained.direction == "maximize" else -1
        top = max(complete, key=lambda t: sign * t.values[i])
        text = f"best {self.trained.key} {format_metric(top.values[i])} (trial {top.number})"
        if len(self.objectives) > 1:
            from optuna.study import StudyDirection

            dirs = [StudyDirection.MAXIMIZE if o.direction == "maximize" else StudyDirection.MINIMIZE
                    for o in self.objectives]
            text += f", Pareto front {len(_pareto(complete, dirs))}"
        return text

    def _eta(self, done: int) -> str:
        elapsed = time.perf_counter() - self.started
        mine = done - self.start_done
        left = []
        if self.total and mine > 0:
            left.append(elapsed / mine * max(0, self.total - done))
        if self.deadline is not None:
            left.append(max(0.0, self.deadline - time.time()))
        return f"eta {_duration(min(left))}" if left else ""


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
