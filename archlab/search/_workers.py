"""Running a study's trials: one worker's loop (in this process), or N spawned worker
processes sharing a count of the trials still to run, and stopping them on Ctrl-C."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing import get_context
from typing import Any

from ..core import ArchlabError, TrainingError
from ._progress import _Progress
from ._slots import slots_taken
from ._storage import _counted, _quiet_optuna, open_storage
from ._trial import _STOP, TrialObjective, _Job, _make_pruner, _make_sampler

# --------------------------------------------------------------------- a worker's loop


def _load_study(job: _Job, seed: int) -> Any:
    import optuna

    storage, _ = open_storage(job.storage)
    epochs_hint = int(job.settings.get("epochs") or _spec_epochs(job.spec))
    steps = epochs_hint * (job.cv or 1)
    return optuna.load_study(
        study_name=job.study, storage=storage,
        sampler=_make_sampler(job.sampler, seed, len(job.objectives) > 1, job.population),
        pruner=None if len(job.objectives) > 1 else _make_pruner(job.pruner, steps))


def _spec_epochs(spec: Mapping[str, Any]) -> int:
    value = (spec.get("train") or {}).get("epochs", 10)
    return int(value) if isinstance(value, int | float) else 10


def _counted_count(study: Any) -> int:
    """The study's slots taken: counted trials and live ones that hold a slot (see _slots)."""
    return slots_taken(study.get_trials(deepcopy=False))


def _take_token(tokens: Any) -> bool:
    if tokens is None:
        return True
    with tokens.get_lock():
        if tokens.value <= 0:
            return False
        tokens.value -= 1
        return True


def _give_back(tokens: Any) -> None:
    if tokens is not None:
        with tokens.get_lock():
            tokens.value += 1


def _run_trials(job: _Job, tokens: Any, on_trial: Callable[[Any], None] | None = None) -> str:
    """One worker's loop: until the study has `total` counted trials, the deadline passes,
    or the shared token count (this command's trials) runs out. A trial that trains nothing
    (infeasible, or a duplicate of earlier choices) gives its token back; after
    `job.max_skipped` of those in a row the worker stops, and says why (else "")."""
    _quiet_optuna()
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    storage, _ = open_storage(job.storage)
    # A different sampler seed per worker and per resumption: the same seed would make
    # random start-up samples repeat what the study already tried.
    import optuna

    known = len(optuna.load_study(study_name=job.study, storage=storage).get_trials(deepcopy=False))
    study = _load_study(job, job.seed + 7919 * job.worker + 104_729 * known)
    objective = TrialObjective(job)
    restore = _STOP.install()
    skipped = 0
    try:
        while True:
            _STOP.check()
            if job.deadline is not None and time.time() >= job.deadline:
                return ""
            if job.total is not None and _counted_count(study) >= job.total:
                return ""
            if not _take_token(tokens):
                return ""
            ended: list[Any] = []
            study.optimize(objective, n_trials=1, catch=(TrainingError,),
                           callbacks=[lambda _study, t, ended=ended: ended.append(t)])
            if ended and not _counted(ended[-1]):
                _give_back(tokens)
                skipped += 1
            else:
                skipped = 0
            if on_trial is not None:
                on_trial(study)
            if skipped >= job.max_skipped:
                return (f"stopped after {skipped} proposals in a row that were infeasible or repeated "
                        f"earlier choices: the search space left under the budget looks exhausted "
                        f"(widen the space or raise the budget)")
    finally:
        restore()


def _worker_main(job: _Job, tokens: Any, errors: Any, notes: Any) -> None:
    """Entry point of a spawned worker process."""
    # Its own process group: a terminal's Ctrl-C reaches the parent alone, which passes one
    # SIGINT on to each worker (so a worker never gets two at once and stops mid-write).
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    try:
        note = _run_trials(job, tokens)
        if note:
            notes.put(note)
    except KeyboardInterrupt:
        return
    except ArchlabError as e:
        errors.put(str(e))
        _drain(tokens)
        sys.exit(1)
    except BaseException as e:
        errors.put(f"worker {job.worker}: {type(e).__name__}: {e}")
        _drain(tokens)
        raise


def _drain(tokens: Any) -> None:
    if tokens is not None:
        with tokens.get_lock():
            tokens.value = 0

class _Counter:
    """A token count for one process (the same interface as a multiprocessing.Value)."""

    def __init__(self, value: int | None):
        self.value = value

    def get_lock(self) -> Any:
        from contextlib import nullcontext

        return nullcontext()


# -------------------------------------------------------------------- worker processes


def _run_workers(job: _Job, jobs: int, remaining: int | None, study: Any, progress: _Progress) -> str:
    """N spawned processes on one study; the parent polls the storage for progress. Returns
    why the workers stopped short, if they did (see `_run_trials`)."""
    ctx = get_context("spawn")
    tokens = ctx.Value("i", remaining if remaining is not None else 2**31 - 1)
    errors, notes = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(dataclasses.replace(job, worker=i), tokens, errors, notes),
                         daemon=False) for i in range(jobs)]
    for p in procs:
        p.start()
    # Ctrl-C must reach this loop even where SIGINT was ignored at start (a `&` job of a script).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            progress.update(study.get_trials(deepcopy=False))
        progress.update(study.get_trials(deepcopy=False))
    except KeyboardInterrupt:
        _stop_workers(procs)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    for p in procs:
        p.join()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if messages:
        raise ArchlabError(messages[0])
    said = []
    while not notes.empty():
        said.append(notes.get())
    return said[0] if said else ""


def _stop_workers(procs: list[Any]) -> None:
    """Ctrl-C: each worker finishes its step, records its trial and exits; a second Ctrl-C
    stops them at once (the trainer's rule), and after a minute they are terminated."""
    signals = 0

    def interrupt() -> None:
        nonlocal signals
        signals += 1
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGINT)

    interrupt()
    deadline = time.time() + 60
    while any(p.is_alive() for p in procs) and time.time() < deadline:
        try:
            for p in procs:
                p.join(timeout=0.2)
        except KeyboardInterrupt:
            if signals < 2:
                interrupt()
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()
