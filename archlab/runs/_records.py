"""The records a run store hands out, the run statuses and the run-id format. No torch.

Records are immutable: mappings are read-only ``FrozenDict`` views and sequences are tuples;
``record.to_dict()`` gives plain, mutable copies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core import FrozenDict, StoreError, freeze, thaw

__all__ = [
    "RUN_ID_FORMAT",
    "STATUSES",
    "Claim",
    "EpochRecord",
    "RunRecord",
    "StoreWarning",
    "check_run_id",
    "is_run_id",
]

# What the store records. "stopped" is not among them: it is a "running" run whose process
# is gone, which only the run's lock can tell (see archlab.runs.current_status).
STATUSES = ("running", "finished", "failed", "interrupted", "pruned")

# "r" + 8 lowercase hex digits. Every id the store reads (from its database, the command
# line or an API call) must match it before it names a folder: an id is never a path.
RUN_ID_FORMAT = "'r' followed by 8 hex digits, e.g. r1a2b3c4d"
_RUN_ID = re.compile(r"r[0-9a-f]{8}")
_RUN_ID_PREFIX = re.compile(r"r[0-9a-f]{0,8}")


class StoreWarning(UserWarning):
    """A damaged record that the store skipped (reported once per read, never fatal)."""


def is_run_id(value: object, *, prefix: bool = False) -> bool:
    """Whether ``value`` is a run id (or, with ``prefix=True``, a non-empty prefix of one).

    >>> is_run_id("r1a2b3c4d"), is_run_id("../../outside/evil"), is_run_id("r1a", prefix=True)
    (True, False, True)
    """
    pattern = _RUN_ID_PREFIX if prefix else _RUN_ID
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def check_run_id(value: object, *, prefix: bool = False) -> str:
    """``value`` if it is a run id (or a prefix of one); a one-line StoreError otherwise.

    >>> check_run_id("r1a2b3c4d")
    'r1a2b3c4d'
    >>> check_run_id("../x")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    StoreError: run id '../x' is not a run id: ...
    """
    if is_run_id(value, prefix=prefix):
        return value  # type: ignore[return-value]
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    either = " (or the first characters of one)" if prefix else ""
    raise StoreError(
        f"run id {shown} is not a run id: expected {RUN_ID_FORMAT}{either}. Received: {shown}; "
        f"list runs with `archlab runs`"
    )


@dataclass(frozen=True)
class Claim:
    """One unit of shared work as the store records it (see ``RunStorage.claim``).

    ``state`` is ``"claimed"`` (someone works on it; ``owner`` says who) or ``"done"`` (its
    ``result`` is recorded); ``mine`` says whether the asking owner holds it (or, for a done
    claim, whether the asking owner's result is the one recorded); ``attempts`` counts the
    owners that claimed it (more than one: a worker died, or released it, and another took
    it up).
    """

    key: str
    state: str
    owner: str
    attempts: int
    mine: bool
    result: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.result is not None:
            object.__setattr__(self, "result", freeze(dict(self.result)))

    def __hash__(self) -> int:
        return hash((self.key, self.state, self.owner, self.attempts))


@dataclass(frozen=True)
class EpochRecord:
    """The metrics of one epoch, e.g. ``{"train_loss": .., "val_loss": .., "seconds": ..}``."""

    epoch: int
    metrics: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", FrozenDict(dict(self.metrics)))

    def __hash__(self) -> int:
        return hash((self.epoch, tuple(self.metrics.items())))


@dataclass(frozen=True)
class RunRecord:
    """One run as stored; immutable (mappings are read-only, sequences are tuples).

    Use :meth:`to_dict` (or :func:`~archlab.core.thaw` on one field) for plain, mutable
    copies, e.g. ``thaw(record.spec)`` to rebuild the model from its spec.
    """

    run_id: str
    name: str
    status: str
    created_at: float
    updated_at: float
    duration_s: float | None
    data: str
    spec: Mapping[str, Any]
    settings: Mapping[str, Any]
    env: Mapping[str, Any]
    params: int | None
    history: tuple[EpochRecord, ...]
    test_metrics: Mapping[str, float]
    tags: Mapping[str, str]
    message: str

    def __post_init__(self) -> None:
        for field in ("spec", "settings", "env", "test_metrics", "tags"):
            object.__setattr__(self, field, freeze(getattr(self, field)))
        object.__setattr__(self, "history", tuple(self.history))

    def best(self, metric: str, mode: str = "max") -> float | None:
        """Best value of ``metric`` over the history (NaN ignored); None if never logged.

        >>> r = _example_record([{"val_loss": 0.9}, {"val_loss": 0.4}, {"val_loss": float("nan")}])
        >>> r.best("val_loss", "min")
        0.4
        """
        if mode not in ("max", "min"):
            raise StoreError(f"best(): mode must be 'max' or 'min'. Received: mode={mode!r}")
        values = [
            e.metrics[metric]
            for e in self.history
            if metric in e.metrics and not math.isnan(e.metrics[metric])
        ]
        if not values:
            return None
        return max(values) if mode == "max" else min(values)

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable, JSON-able (up to NaN/inf) copy of the record."""
        out = {
            name: thaw(getattr(self, name))
            for name in self.__dataclass_fields__
            if name != "history"
        }
        out["history"] = [{"epoch": e.epoch, "metrics": dict(e.metrics)} for e in self.history]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_dict`."""
        fields = dict(d)
        fields["history"] = tuple(
            EpochRecord(int(e["epoch"]), e["metrics"]) for e in fields.get("history", ())
        )
        return cls(**fields)

    def __reduce__(self):
        return (RunRecord.from_dict, (self.to_dict(),))

    def __hash__(self) -> int:  # the mappings are unhashable; equal records share these
        return hash((self.run_id, self.updated_at))


def _example_record(history: list[dict[str, float]], **fields: Any) -> RunRecord:
    """A minimal record, for docstring examples and tests."""
    values: dict[str, Any] = dict(
        run_id="r00000000", name="x", status="finished", created_at=0.0, updated_at=0.0,
        duration_s=None, data="digits", spec={}, settings={}, env={}, params=None,
        history=tuple(EpochRecord(i + 1, m) for i, m in enumerate(history)), test_metrics={},
        tags={}, message="",
    )  # fmt: skip
    values.update(fields)
    return RunRecord(**values)
