"""What the training side knows about a stored run: its primary metric, the epoch whose
weights it kept, whether (and why not) it can be resumed, and the status a person sees.

The CLI's ``runs`` and ``show`` only format these; ``resume`` applies the same rules, so a
run listed as resumable is one that ``archlab train --resume`` accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..core import ArchlabError, StoreError, TrainingError
from ..runs import (
    CHECKPOINT_JSON,
    MAX_JSON_BYTES,
    TEST_REPORT,
    RunRecord,
    RunStorage,
    check_lock_file,
    current_status,
    is_alive,
    read_json,
)
from ._checkpoint import has_checkpoint
from ._distributed import has_any_checkpoint
from ._tasks import TASKS

__all__ = [
    "RunState",
    "check_resumable",
    "kept_epoch",
    "primary_metric",
    "read_test_report",
    "run_state",
]

# Tasks whose primary metric is known without the TASKS registry (the generative loop's).
_OTHER_TASKS = {"vae": ("loss", "min"), "gan": ("g_loss", "min")}


def primary_metric(record: RunRecord) -> tuple[str, str] | None:
    """(name, mode) of the metric that ranks a run's epochs, e.g. ``("acc", "max")`` for a
    classifier (logged as ``val_acc``); from the run's task, else from what it logged.

    >>> from archlab.runs._records import _example_record
    >>> primary_metric(_example_record([{"val_loss": 0.5}], tags={"task": "classify"}))
    ('acc', 'max')
    >>> primary_metric(_example_record([{"val_loss": 0.5}]))
    ('loss', 'min')
    """
    task = record.tags.get("task")
    if task in TASKS:
        cls = TASKS.get(task)
        return cls.primary, cls.mode
    if task in _OTHER_TASKS:
        return _OTHER_TASKS[task]
    for name, mode in (("acc", "max"), ("r2", "max"), ("loss", "min")):
        if any(f"val_{name}" in e.metrics for e in record.history) or name in record.test_metrics:
            return name, mode
    return None


def _better(a: float, b: float | None, mode: str) -> bool:
    """The trainer's rule (Task.better): the first finite value, then strictly better."""
    if b is None or math.isnan(b):
        return not math.isnan(a)
    return a > b if mode == "max" else a < b


def kept_epoch(record: RunRecord, directory: str | Path | None = None) -> int | None:
    """The epoch whose weights the run kept (``best.safetensors``, its best validation
    epoch): as its last checkpoint recorded it when ``directory`` holds one, else replayed
    from the history with the trainer's rule. None when no epoch was validated.

    >>> from archlab.runs._records import _example_record
    >>> r = _example_record([{"val_acc": 0.5}, {"val_acc": 0.9}, {"val_acc": 0.9}],
    ...                     tags={"task": "classify"})
    >>> kept_epoch(r)
    2
    """
    if directory is not None:
        try:
            state = read_json(Path(directory) / CHECKPOINT_JSON, limit=MAX_JSON_BYTES).get("state")
            saved = state.get("best_epoch") if isinstance(state, dict) else None
            if isinstance(saved, int) and not isinstance(saved, bool):
                return saved
        except (FileNotFoundError, StoreError):
            pass
    primary = primary_metric(record)
    if primary is None:
        return None
    name, mode = primary
    best, kept = None, None
    for e in record.history:
        value = e.metrics.get(f"val_{name}")
        if value is not None and _better(value, best, mode):
            best, kept = value, e.epoch
    return kept


# Why a run cannot be resumed, in a few words for a listing (the full reason is one line).
_HINTS = {
    None: "resume with --resume",
    "no checkpoint": "resume with --resume: starts over",
    "damaged": "checkpoint damaged; see archlab show",
    "unsafe": "cannot resume; see archlab show",
}


@dataclass(frozen=True)
class RunState:
    """How a run stands now: ``status`` as a person sees it (``"stopped"`` for a killed
    run), whether ``resume`` would accept it, and if not, why: ``reason`` (``"finished"``,
    ``"running"``, ``"damaged"``, ``"unsafe"``) and ``problem`` (the one-line error ``resume``
    gives). A resumable run without a checkpoint yet has reason ``"no checkpoint"``: resume
    trains it again from the start under the same id (nothing was saved, nothing is lost)."""

    status: str
    resumable: bool
    reason: str | None = None
    problem: str | None = None

    @property
    def hint(self) -> str | None:
        """A few words for a listing: what to do with a stopped or interrupted run."""
        if self.status not in ("stopped", "interrupted"):
            return None
        return _HINTS.get(self.reason, _HINTS["unsafe"])


def _problem(record: RunRecord, directory: Path) -> tuple[str, ArchlabError] | None:
    """(reason, the error) for which ``resume`` refuses this run, or None if it accepts it."""
    if record.status == "finished":
        return "finished", TrainingError(f"run {record.run_id} already finished; nothing to resume")
    try:
        check_lock_file(directory)
    except StoreError as exc:
        return "unsafe", StoreError(f"run {record.run_id} cannot be resumed: {exc}")
    if is_alive(directory):
        return "running", TrainingError(f"run {record.run_id} is being trained by another process right "
                                        f"now; wait for it or stop it first")
    try:
        has_checkpoint(directory)  # a damaged one raises; none at all is fine: resume starts over
    except StoreError as exc:
        return "damaged", StoreError(f"run {record.run_id} cannot be resumed: {exc}")
    return None


def check_resumable(record: RunRecord, directory: str | Path) -> None:
    """Raise the one-line error ``resume`` gives for this run, if it would refuse it."""
    problem = _problem(record, Path(directory))
    if problem is not None:
        raise problem[1]


def run_state(store: RunStorage, record: RunRecord) -> RunState:
    """The run's :class:`RunState`; looks at its folder only for runs that are not finished."""
    status = current_status(store, record)
    if record.status == "finished":
        return RunState(status, False, "finished")
    if status == "running":
        return RunState(status, False, "running")
    try:
        problem = _problem(record, store.run_dir(record.run_id, create=False))
    except StoreError as exc:  # its folder is a link out of the store
        problem = "unsafe", StoreError(f"run {record.run_id} cannot be resumed: {exc}")
    if problem is None:
        folder = store.run_dir(record.run_id, create=False)
        fresh = not has_checkpoint(folder) and not has_any_checkpoint(folder)
        return RunState(status, True, "no checkpoint" if fresh else None)
    return RunState(status, False, problem[0], str(problem[1]))


def read_test_report(store: RunStorage, record: RunRecord) -> dict | None:
    """The run's ``test_report.json`` (confusion matrix, per-class accuracy), or None if it
    has none; a damaged one (not a JSON object, truncated, a link, a FIFO) is a StoreError."""
    path = store.artifact(record.run_id, TEST_REPORT)
    try:
        return read_json(path)
    except FileNotFoundError:
        return None

