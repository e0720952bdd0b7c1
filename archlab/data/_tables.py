"""Tabular data: the ``csv:PATH`` loader (a table with a header row; the target column picks
classify or regress). It registers itself in `archlab.data.DATASETS`; `archlab.data` imports
this module."""

from __future__ import annotations

import csv
import difflib
import math
from pathlib import Path

import numpy as np
import torch

from ..core import DataError
from ._dataset import (
    TEST_FRACTION,
    DataInfo,
    Dataset,
    Split,
    _resolve,
    _split_indices,
    register_dataset,
)

_MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
_MAX_INT_CLASSES = 20  # an integer target with more distinct values than this is a regression


def _floats(values: list[str]) -> np.ndarray | None:
    """The column as float64 with NaN for missing cells, or None if any cell is not a number."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v.strip().lower() in _MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            return None
        if not math.isfinite(out[i]):
            out[i] = np.nan
    return out


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows (cells stripped, blank rows skipped) and each row's line number."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate Excel's BOM
            rows = [(line, row) for line, row in enumerate(csv.reader(f), 1) if any(row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"csv: cannot read {path}: {' '.join(str(e).split())}") from None
    if len(rows) < 2:
        raise DataError(f"csv: {path} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0][1]]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(f"csv: {path}: column {dup!r} appears twice in the header")
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"csv: {path} line {line}: {len(row)} fields, header has {len(header)}")
    return header, [[c.strip() for c in row] for _, row in rows[1:]], [ln for ln, _ in rows[1:]]


@register_dataset("csv")
def _load_csv(arg, *, seed, root, target, val_fraction) -> Dataset:
    if not arg:
        raise DataError("csv: no file given. Pass --data csv:PATH (a CSV file with a header row).")
    path = _resolve(arg, root)
    if not path.is_file():
        raise DataError(f"csv: file not found: {path}. Pass --data csv:PATH with the path to a "
                        f"CSV file that has a header row.")
    header, rows, lines = _read_csv(path)
    target = target if target is not None else header[-1]
    if target not in header:
        close = difflib.get_close_matches(target, header, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"csv: target column {target!r} not found in {path}.{hint} "
                        f"Columns: {', '.join(header)}.")
    columns = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    raw_y = columns.pop(target)
    if not columns:
        raise DataError(f"csv: {path} has no feature columns besides the target {target!r}")

    blank = next((i for i, v in enumerate(raw_y) if v.lower() in _MISSING), None)
    if blank is not None:
        raise DataError(f"csv: {path} line {lines[blank]}: target column {target!r} is empty "
                        f"({raw_y[blank]!r})")

    # Task from the target: text, or integers with few distinct values, are classes.
    num_y = _floats(raw_y)
    is_int = num_y is not None and bool(np.all(num_y == np.round(num_y)))
    classify = num_y is None or (is_int and len(np.unique(num_y)) <= _MAX_INT_CLASSES)
    if classify:
        if num_y is None:
            classes, y = np.unique(np.array(raw_y, dtype=object).astype(str), return_inverse=True)
            class_names = tuple(str(c) for c in classes)
        else:
            classes, y = np.unique(num_y, return_inverse=True)
            class_names = tuple(str(int(c)) for c in classes)
        if len(classes) < 2:
            raise DataError(f"csv: {path}: target column {target!r} has a single value")
        y_t = torch.from_numpy(y.astype(np.int64))
    else:
        class_names, y = None, None
        y_t = torch.from_numpy(num_y.astype(np.float32))

    parts = _split_indices(len(rows), TEST_FRACTION, val_fraction, seed, labels=y)
    train = parts[0]
    # Features: every statistic comes from the train split only, so nothing leaks from val/test.
    features = []
    for values in columns.values():
        nums = _floats(values)
        if nums is not None:  # numeric: standardise; missing cells become the train mean (0)
            seen = nums[train][~np.isnan(nums[train])]
            mean, std = (seen.mean(), seen.std()) if len(seen) else (0.0, 1.0)
            nums = np.where(np.isnan(nums), mean, nums)
            features.append(((nums - mean) / (std if std > 0 else 1.0))[:, None])
        else:  # categorical: one-hot over the train split's categories; unseen ones -> zeros
            cats = {c: i for i, c in enumerate(sorted({values[i] for i in train}))}
            onehot = np.zeros((len(values), len(cats)))
            codes = np.array([cats.get(v, -1) for v in values])
            known = codes >= 0
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            features.append(onehot)
    x = torch.from_numpy(np.concatenate(features, axis=1).astype(np.float32))

    info = DataInfo(f"csv:{arg}", (x.shape[1],), "float", "classify" if classify else "regress",
                    len(class_names) if classify else None, class_names, source=str(path))
    train, val, test = (Split(x[torch.from_numpy(i)], y_t[torch.from_numpy(i)]) for i in parts)
    return Dataset(info, train, val, test)
