"""Immutable records of a comparison: what `compare` returns and what `report` draws.

Kept apart from the logic that produces them (compare.py) so a report can also be built
from runs already in the store (`archlab report RUN_ID ...`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# The diagnosis rule (also stated in the README and in the report's gap chart). For metrics
# where larger is better; mirrored where smaller is.
UNDERFIT_TOLERANCE = 0.01   # train metric this far below the best candidate's validation metric
OVERFIT_GAP = 0.03          # train - validation above this


@dataclass(frozen=True)
class FoldResult:
    """One candidate trained on one fold."""

    candidate: str
    fold: int
    repeat: int
    run_id: str
    history: tuple[Mapping[str, float], ...]   # per epoch: train_*, val_*, seconds, ...
    val_metric: float                            # the primary metric at the kept (best) epoch
    train_metric: float                          # the same metric on the fold's train part, eval mode
    train_seconds: float
    reused: bool = False                         # found finished in the run store


@dataclass(frozen=True)
class CandidateSummary:
    label: str                 # e.g. "cnn" or "mlp[depth=2]"
    spec: Mapping[str, Any]    # the concrete spec (vars applied)
    params: int
    flops: int                 # forward FLOPs per sample
    train_seconds: float       # mean per fold
    latency_ms_b1: float       # median inference latency, batch 1
    latency_ms_b256: float     # median inference latency, batch 256
    val_mean: float
    val_std: float
    gap_mean: float            # train metric - validation metric, mean over folds
    diagnosis: str             # "under-fitting" | "over-fitting" | "fine"
    folds: tuple[FoldResult, ...]
    assignment: Mapping[str, Any] = field(default_factory=dict)   # its --vary values, e.g. {"depth": 2}

    @property
    def val_se(self) -> float:
        n = len(self.folds)
        return self.val_std / math.sqrt(n) if n > 1 else 0.0


@dataclass(frozen=True)
class Comparison:
    data: str
    metric: str                # primary metric name, e.g. "acc"
    mode: str                  # "max" or "min"
    cv: int
    repeats: int
    candidates: tuple[CandidateSummary, ...]
    recommended: str           # a candidate label
    rule: str                  # which rule chose it, in words
    test_metrics: Mapping[str, float] = field(default_factory=dict)
    test_report: Mapping[str, Any] = field(default_factory=dict)   # confusion, per-class accuracy
    final_run_id: str | None = None
    class_names: tuple[str, ...] | None = None
    command: str = ""
    # Where the test score comes from, in words (compare: a retrain on all development data).
    test_note: str = "retrained on all development data, it scores on the test split"
    vary: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)   # the --vary grid
    hints: tuple[str, ...] = ()   # e.g. the winner sits at an end of a --vary sweep: extend it

    @property
    def design(self) -> str:
        """'5-fold cross-validation x 2', or 'a single validation split' for stored single runs."""
        if self.cv < 2:
            return "a single validation split per candidate"
        return f"{self.cv}-fold cross-validation" + (f" x {self.repeats}" if self.repeats > 1 else "")

    def candidate(self, label: str) -> CandidateSummary:
        for c in self.candidates:
            if c.label == label:
                return c
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_dataframe(self):  # noqa: ANN201 - pandas is optional
        """The comparison table as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame([table_row(c) for c in self.candidates])


def table_row(c: CandidateSummary) -> dict[str, Any]:
    return {"candidate": c.label, "params": c.params, "flops": c.flops, "train_s": c.train_seconds,
            "latency_ms_b1": c.latency_ms_b1, "latency_ms_b256": c.latency_ms_b256,
            "val_mean": c.val_mean, "val_std": c.val_std, "gap": c.gap_mean, "diagnosis": c.diagnosis}


def pareto_front(points: list[tuple[float, float]], mode: str = "max") -> list[int]:
    """Indices of points not dominated by another: lower cost (x) and better metric (y)."""
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = False
        for j, (xj, yj) in enumerate(points):
            better = yj >= yi if mode == "max" else yj <= yi
            strictly = (xj < xi) or (yj > yi if mode == "max" else yj < yi)
            if j != i and xj <= xi and better and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
