"""The training loop's state as one record, saved in every checkpoint (Lightning's
loops/progress.py pattern): the loop reads and advances it; `state_dict()` is what the
checkpoint stores under ``state`` and `load_state_dict()` what a resume reads back.

Adding a field here is all it takes to checkpoint it. Checkpoints written before this
record existed (archlab before the one-loop trainer) still load: their VAE and GAN runs
saved at epoch ends only and lacked the step counters, which `load_state_dict` derives.

>>> s = LoopState(epoch=2, global_step=40)
>>> LoopState().load_state_dict(s.state_dict()) == s
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core import StoreError


@dataclass
class LoopState:
    """Where a run is and what it has seen; everything else in a checkpoint is a component's own
    state_dict (model, optimizers, schedulers, scaler, RNGs)."""

    epoch: int = 0                  # epochs completed
    step_in_epoch: int = 0          # > 0: saved mid-epoch, after this many steps of epoch `epoch + 1`
    global_step: int = 0            # optimizer steps taken over the whole run
    history: list[dict[str, float]] = field(default_factory=list)  # one record per completed epoch
    best: float | None = None       # the best validation primary metric so far
    best_epoch: int | None = None   # the epoch whose weights are kept (best.safetensors)
    best_loss: float | None = None  # that epoch's validation loss: it breaks ties on `best`
    stale: int = 0                  # epochs since `best` improved (early stopping)
    elapsed: float = 0.0            # seconds trained, over every start of the run (the time budget)
    first_loss: float | None = None  # the loss of the run's first step, before any update (divergence)
    partial_sums: torch.Tensor | None = None  # mid-epoch: the task's summed statistics so far
    generator: torch.Tensor | None = None     # mid-epoch: the epoch generator's state (order, noise)

    def state_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def load_state_dict(self, state: Mapping[str, Any], *, steps_per_epoch: int | None = None,
                        where: str = "checkpoint") -> LoopState:
        """Set the fields from a saved `state`; missing fields keep their defaults (older
        checkpoints), wrong types raise a one-line StoreError. Returns self."""
        if not isinstance(state, Mapping):
            raise _damaged(where, "state", "a mapping", state)
        for name in _REQUIRED:  # in every checkpoint archlab ever wrote
            if name not in state:
                raise StoreError(f"{where}: the checkpoint is damaged (state.{name}: missing); restore it "
                                 f"from a backup, or delete checkpoint.json and train the run again")
        for f in dataclasses.fields(self):
            if f.name in state:
                setattr(self, f.name, _check(f.name, state[f.name], where))
        if "global_step" not in state and steps_per_epoch is not None:
            # Before the one loop, VAE and GAN runs saved at epoch ends only, without step counters.
            self.global_step = self.epoch * steps_per_epoch
        if "best_loss" not in state and self.best_epoch is not None:
            kept = [h for h in self.history if h.get("epoch") == self.best_epoch]
            self.best_loss = kept[0].get("val_loss") if kept else None
        if self.step_in_epoch == 0:
            self.partial_sums = self.generator = None
        return self


_REQUIRED = ("epoch", "history")


def _copy(value: Any) -> Any:
    return [dict(h) for h in value] if isinstance(value, list) else value


_KINDS = {"epoch": "count", "step_in_epoch": "count", "global_step": "count", "stale": "count",
          "best_epoch": "count?", "best": "number?", "best_loss": "number?", "elapsed": "number",
          "first_loss": "number?",
          "history": "history", "partial_sums": "tensor?", "generator": "tensor?"}


def _check(name: str, value: Any, where: str) -> Any:
    kind = _KINDS[name]
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    ok = {
        "count": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "number": isinstance(value, int | float) and not isinstance(value, bool)
        and (name != "elapsed" or math.isfinite(value)),
        "tensor": isinstance(value, torch.Tensor),
        "history": isinstance(value, list) and all(isinstance(h, Mapping) for h in value),
    }[kind]
    if not ok:
        expected = {"count": "a whole number >= 0", "number": "a number", "tensor": "a tensor",
                    "history": "a list of epoch records"}[kind]
        raise _damaged(where, f"state.{name}", expected, value)
    return [dict(h) for h in value] if kind == "history" else value


def _damaged(where: str, key: str, expected: str, value: Any) -> StoreError:
    return StoreError(f"{where}: {key} must be {expected}. Received: {value!r:.60}; the checkpoint is "
                      f"damaged: restore it from a backup, or delete checkpoint.json and train the run again")
