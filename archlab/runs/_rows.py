"""What the SQL backends write in a row and how they check a row they read back.

Values go in as strict JSON text (the one codec of ``archlab.core``; paths as text, numpy
scalars as numbers, anything else a one-line StoreError naming the field). A row read back
is never trusted: each column is checked to be what archlab writes, and a row that is not
raises :class:`_Damaged`, which the backend turns into a report naming the run and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..core import StoreError, decode, dumps, encode
from ._records import STATUSES, Claim, EpochRecord, RunRecord, is_run_id


# Strict JSON (no bare NaN tokens, so SQLite's JSON functions accept every column): a
# non-finite float is written as {"$float": "nan" | "inf" | "-inf"}.
def _store_other(obj: Any, where: str) -> Any:
    """What the one JSON codec (archlab.core) does not know: paths as text, else refused."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)  # numpy scalars, 0-d tensors
    if callable(item) and getattr(obj, "ndim", 0) == 0:
        return encode(item(), where, other=_store_other)
    raise StoreError(
        f"{where}: cannot store a value of type {type(obj).__name__} "
        f"(expected JSON types: dict, list, str, int, float, bool, None). Received: {obj!r:.80}"
    )


def _dumps(obj: Any, where: str) -> str:
    # Plain JSON (tuples as lists, keys as text), so any JSON reader sees the records.
    return dumps(obj, where, other=_store_other)


def _metrics(metrics: Mapping[str, float] | None, where: str) -> dict[str, float]:
    out = {}
    for k, v in (metrics or {}).items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise StoreError(
                f"{where}[{k!r}]: expected a number. Received: {v!r:.80} ({type(v).__name__})"
            ) from None
    return out


def _claim(key: str, owner: str, row: Any) -> Claim:
    """A Claim from a ``(state, owner, attempts, result)`` row, as seen by ``owner``."""
    if row is None:
        raise StoreError(f"claim {key!r}: vanished while being claimed (released by another process?); try again")
    state, holder, attempts, result = row
    try:
        value = _json_field(result, "result") if result else None
    except _Damaged as exc:
        raise StoreError(f"claim {key!r}: damaged result ({exc}); delete the claim's row to redo that work") from None
    return Claim(str(key), state, holder, int(attempts), bool(owner) and holder == owner, value)


class _Damaged(Exception):
    """A stored value that cannot be what archlab wrote (internal: becomes a report)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_field(text: Any, name: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise _Damaged(f"{name}: expected JSON text. Received: {type(text).__name__}")
    try:
        value = decode(json.loads(text)) if text else {}
    except (ValueError, TypeError, RecursionError) as exc:
        raise _Damaged(f"{name}: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, dict):
        raise _Damaged(f"{name}: expected a JSON object. Received: {type(value).__name__}")
    return value


def _numbers(value: dict[str, Any], name: str) -> dict[str, float]:
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Damaged(f"{name}[{k!r}]: expected a number. Received: {_shown(v)}")
    return value


def _epoch_record(epoch: Any, metrics: Any) -> EpochRecord:
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise _Damaged(f"epoch: expected an integer. Received: {_shown(epoch)}")
    return EpochRecord(epoch, _numbers(_json_field(metrics, "metrics"), "metrics"))


def _run_record(r: tuple, history: list[EpochRecord]) -> RunRecord:
    run_id, name, status, created, updated, duration, data, *_ = r
    if not is_run_id(run_id):
        raise _Damaged(f"run_id: expected a run id ('r' + 8 hex digits). Received: {_shown(run_id)}")
    for field, value in (("name", name), ("data", data), ("message", r[13])):
        if not isinstance(value, str):
            raise _Damaged(f"{field}: expected text. Received: {_shown(value)}")
    if status not in STATUSES:
        raise _Damaged(f"status: expected one of {', '.join(STATUSES)}. Received: {_shown(status)}")
    for field, value in (("created_at", created), ("updated_at", updated), ("duration_s", duration)):
        if not (isinstance(value, int | float) and not isinstance(value, bool)) and not (
            value is None and field == "duration_s"
        ):
            raise _Damaged(f"{field}: expected a number. Received: {_shown(value)}")
    if r[10] is not None and (isinstance(r[10], bool) or not isinstance(r[10], int)):
        raise _Damaged(f"params: expected an integer. Received: {_shown(r[10])}")
    tags = _json_field(r[12], "tags")
    if not all(isinstance(v, str) for v in tags.values()):
        raise _Damaged("tags: expected text values")
    return RunRecord(
        run_id=run_id,
        name=name,
        status=status,
        created_at=created,
        updated_at=updated,
        duration_s=duration,
        data=data,
        spec=_json_field(r[7], "spec"),
        settings=_json_field(r[8], "settings"),
        env=_json_field(r[9], "env"),
        params=r[10],
        history=tuple(history),
        test_metrics=_numbers(_json_field(r[11], "test_metrics"), "test_metrics"),
        tags=tags,
        message=r[13],
    )
