"""The study's budget, exact across processes and machines: a trial trains only if it holds a
slot, one of the study's ``trials``.

Two commands (or machines) on one study each check "fewer than `trials` so far" and start a
trial; both may pass, and the study ends with one trial too many. Optuna's storages give one
thing atomically, whichever the backend (journal file or database): each new trial a
*number*, in order of creation. So the slots are given out in that order. A trial that is
about to train (it is feasible and not a repeat) looks only at the trials numbered below
it:

- those that **hold a slot** — ended and counted (complete, pruned by a pruner, failed), or
  still running with the ``slot`` mark and a live heartbeat;
- those still **undecided** — running, not yet at this point, heartbeat alive.

If the held slots already fill the budget, the trial ends at once as *surplus* (state FAIL,
user attribute ``surplus``: never trained, not counted, ignored by the samplers). If even
every undecided one taking a slot would leave room, it takes one (``slot`` mark) and trains.
Otherwise it waits for the undecided ones (they are seconds from deciding: sampling and
inspection come first). Each trial's decision depends only on the decisions below it, so
the slots handed out never exceed the budget, and workers keep starting trials while fewer
are held: the total is exact.

**Killed workers.** A worker renews a heartbeat on its running trial (system attribute
``heartbeat``) every ``grace / 4`` seconds. A running trial whose heartbeat (or, before the
first, its start) is older than the grace (``$ARCHLAB_TRIAL_GRACE`` seconds, default 120)
belongs to a dead worker: it holds no slot, and the next worker that sees it ends it as
FAIL with the user attribute ``abandoned`` — like a trial stopped by Ctrl-C it does not
count toward ``trials``, and re-running the command (or a worker still running) replaces it.
Clocks of machines sharing a study must agree to well within the grace.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._storage import _counted

__all__ = ["ABANDONED", "HEARTBEAT", "SLOT", "SURPLUS", "TrialHeartbeat", "decide", "grace_seconds",
           "slots_taken", "take_slot"]

SLOT = "slot"              # user attribute: this trial holds one of the study's `trials`
SURPLUS = "surplus"        # user attribute: it found every slot taken and was not trained
ABANDONED = "abandoned"    # user attribute: its worker died while it ran (no heartbeat)
HEARTBEAT = "heartbeat"    # system attribute: time.time() of its worker's last sign of life

DEFAULT_GRACE_S = 120.0
_POLL_S = 0.5


def grace_seconds() -> float:
    """How long a running trial may go without a heartbeat: ``$ARCHLAB_TRIAL_GRACE`` or 120."""
    text = os.environ.get("ARCHLAB_TRIAL_GRACE")
    try:
        return max(1.0, float(text)) if text else DEFAULT_GRACE_S
    except ValueError:
        return DEFAULT_GRACE_S


def _running(t: Any) -> bool:
    import optuna

    return t.state == optuna.trial.TrialState.RUNNING


def _stale(t: Any, now: float, grace: float) -> bool:
    """A running trial whose worker has not been heard of for `grace` seconds."""
    if not _running(t):
        return False
    beat = t.system_attrs.get(HEARTBEAT)
    if not isinstance(beat, int | float):
        beat = t.datetime_start.timestamp() if t.datetime_start else now
    return beat < now - grace


def _holds(t: Any, now: float, grace: float) -> bool:
    if _running(t):
        return bool(t.user_attrs.get(SLOT)) and not _stale(t, now, grace)
    return _counted(t)


def _undecided(t: Any, now: float, grace: float) -> bool:
    return _running(t) and not t.user_attrs.get(SLOT) and not _stale(t, now, grace)


def slots_taken(trials: Sequence[Any], now: float | None = None, grace: float | None = None) -> int:
    """How many of the study's slots are held: counted trials plus live running slot holders."""
    now = time.time() if now is None else now
    grace = grace_seconds() if grace is None else grace
    return sum(_holds(t, now, grace) for t in trials)


def decide(trials: Sequence[Any], number: int, total: int, now: float, grace: float) -> str:
    """``"take"``, ``"surplus"`` or ``"wait"`` for trial ``number`` given the study's trials.

    >>> decide([], 0, 1, 0.0, 120.0)
    'take'
    """
    lower = [t for t in trials if t.number < number]
    held = sum(_holds(t, now, grace) for t in lower)
    if held >= total:
        return "surplus"
    if held + sum(_undecided(t, now, grace) for t in lower) < total:
        return "take"
    return "wait"


def take_slot(trial: Any, total: int, check: Callable[[], None] = lambda: None) -> bool:
    """Decide (see the module docstring) whether ``trial`` may train: True after marking it
    as a slot holder, False if it is surplus. Waits while the answer depends on undecided
    trials below it, calling ``check`` (Ctrl-C) between looks; ends abandoned trials it sees."""
    grace = grace_seconds()
    while True:
        trials = trial.study.get_trials(deepcopy=False)
        now = time.time()
        _end_abandoned(trial, [t for t in trials if _stale(t, now, grace)])
        answer = decide(trials, trial.number, total, now, grace)
        if answer == "take":
            trial.set_user_attr(SLOT, True)
            return True
        if answer == "surplus":
            trial.set_user_attr(SURPLUS, True)
            return False
        check()
        time.sleep(_POLL_S)


def _end_abandoned(trial: Any, stale: Sequence[Any]) -> None:
    """End the trials of dead workers as FAIL + ``abandoned`` (another worker may do it first)."""
    import optuna

    storage = trial.storage
    for t in stale:
        try:
            storage.set_trial_user_attr(t._trial_id, ABANDONED, True)
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # ended meanwhile (by its worker after all, or by another one)


class TrialHeartbeat:
    """``with TrialHeartbeat(trial):`` renews the trial's heartbeat while the block runs."""

    def __init__(self, trial: Any, grace: float | None = None):
        self.trial = trial
        self.interval = max(0.2, (grace_seconds() if grace is None else grace) / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="archlab-trial-heartbeat", daemon=True)

    def _beat_once(self) -> None:
        self.trial.storage.set_trial_system_attr(self.trial._trial_id, HEARTBEAT, time.time())

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat_once()
            except Exception:  # the trial ended, or the storage hiccuped: the next beat retries
                continue

    def __enter__(self) -> TrialHeartbeat:
        try:
            self._beat_once()
        except Exception:
            pass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
