"""Tabular data: the ``csv:PATH[?categorical=A,B&fill=mean]`` loader. It registers itself in
`archlab.data.DATASETS`; `archlab.data` imports this module.

What a table becomes, and what is refused (nothing changes a column silently):

- The first row is the header. The target is the column named by ``target`` (``--target``),
  by default the **last** column; the data set's notes say which one was taken.
- Target: text, or integers with at most 20 distinct values, are classes (classify); other
  numbers are regression targets (regress). Declaring the target categorical makes it classes
  whatever its values.
- A feature column is **numeric** when every cell is a number (standardised with the train
  split's mean and deviation) and **categorical** when no cell is (one-hot over the train
  split's values; a value seen only in val/test is all zeros). A column that mixes numbers and
  text is an error naming the column, the line and the cell, unless it is declared with
  ``categorical=NAME`` (comma-separated names; a numeric column such as a zip code may be
  declared too).
- Empty cells (empty, NA, N/A, NaN, null, None, ?; any case) are an error by default, naming
  the line and column. ``fill=mean`` fills them instead: a numeric cell with the train split's
  mean (0 after standardising), a categorical cell with no category (all zeros).
- Numbers that are not finite (inf, -inf, 1e999) are an error, in features and in the target.
- Splits: 20% test and ``val_fraction`` validation, stratified by class, each at least one row;
  a table too small to leave a training row is an error.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..core import DataError
from ._dataset import (
    TEST_FRACTION,
    DataInfo,
    Dataset,
    Split,
    _options,
    _resolve,
    _split_indices,
    register_dataset,
)

__all__: list[str] = []

_MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
_MAX_INT_CLASSES = 20  # an integer target with more distinct values than this is a regression
_FILLS = ("none", "mean")


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


class _Table:
    """One csv file being read: its path, options and line numbers, for the messages."""

    def __init__(self, arg: str, path: Path, query: str, opts: Mapping[str, str | None], lines: list[int]):
        self.arg, self.path, self.query, self.opts, self.lines = arg, path, query, opts, lines

    def uri_with(self, key: str, value: str) -> str:
        """The --data value with option ``key`` set (added to what the user gave)."""
        given = {k: v for k, v in self.opts.items() if v and (k != "fill" or v != "none")}
        if key == "categorical" and given.get(key):
            value = f"{given[key]},{value}"
        given[key] = value
        return f"csv:{self.path_text}?" + "&".join(f"{k}={v}" for k, v in given.items())

    @property
    def path_text(self) -> str:
        return self.arg.partition("?")[0] if self.query else self.arg

    def at(self, row: int, column: str) -> str:
        return f"csv: {self.path} line {self.lines[row]}, column {column!r}"

    def column(self, name: str, values: list[str], *, categorical: bool, fill: bool,
               target: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
        """(numbers or None for a categorical column, missing mask); every refusal is here."""
        missing = np.array([v.lower() in _MISSING for v in values], dtype=bool)
        what = "target column" if target else "column"
        if missing.all():
            raise DataError(f"{self.at(0, name)}: the {what} has no values (every cell is empty). "
                            f"Drop the column" + (" or pick another target with --target." if target else "."))
        if missing.any() and (target or not fill):
            row = int(np.argmax(missing))
            fix = ("Fill the cell or drop the row (a target is never filled)." if target else
                   f"Fill the cell, drop the row, or fill empty cells with the train split's mean "
                   f"(categorical: no category): --data '{self.uri_with('fill', 'mean')}'.")
            raise DataError(f"{self.at(row, name)}: expected a value, the cell is empty. Received: "
                            f"{values[row]!r}. {fix}")
        if categorical:
            return None, missing
        nums = np.full(len(values), np.nan)
        text_rows: list[int] = []
        for i, v in enumerate(values):
            if not missing[i]:
                try:
                    nums[i] = float(v)
                except ValueError:
                    text_rows.append(i)
        given = int((~missing).sum())
        if len(text_rows) == given:  # text throughout: categorical, as its values declare
            return None, missing
        if not text_rows:
            if not np.isfinite(nums[~missing]).all():
                row = int(np.flatnonzero(~missing & ~np.isfinite(nums))[0])
                raise DataError(f"{self.at(row, name)}: expected a finite number. Received: {values[row]!r}. "
                                f"Replace the cell with a finite value" + ("." if target else
                                f" or leave it empty and pass fill=mean: --data '{self.uri_with('fill', 'mean')}'."))
            return nums, missing
        declare = f"--data '{self.uri_with('categorical', name)}'"
        if 2 * len(text_rows) <= given:  # mostly numbers: name the first text cell
            row = text_rows[0]
            raise DataError(f"{self.at(row, name)}: expected a number, as {given - len(text_rows)} of the "
                            f"{what}'s {given} cells are. Received: {values[row]!r}. Fix the cell, or declare "
                            f"the column categorical (its values one-hot encoded): {declare}")
        row = int(np.flatnonzero(~np.isnan(nums))[0])
        raise DataError(f"{self.at(row, name)}: expected text, as {len(text_rows)} of the {what}'s {given} cells "
                        f"are. Received: the number {values[row]!r}. Declare the column categorical (every value "
                        f"a category): {declare}, or fix the cell")


def _fit_column(name: str, nums: np.ndarray | None, missing: np.ndarray, values: list[str],
                train: np.ndarray) -> dict:
    """A feature column's encoding, fitted on the train rows only (JSON-able, so `archlab
    predict` encodes new rows the same way): numeric columns are standardised with the train
    mean and deviation, categorical ones one-hot over the train split's categories."""
    if nums is not None:
        seen = nums[train][~missing[train]]
        mean, std = (seen.mean(), seen.std()) if len(seen) else (0.0, 1.0)
        return {"name": name, "kind": "numeric", "mean": float(mean), "std": float(std)}
    return {"name": name, "kind": "categorical",
            "categories": sorted({values[i] for i in train if not missing[i]})}


def _encode_column(encoding: Mapping, nums: np.ndarray | None, missing: np.ndarray,
                   values: list[str]) -> np.ndarray:
    """(N, k) float64 features of one column under its `_fit_column` encoding. Numeric: filled
    cells become the train mean (0 after standardising); categorical: a value unseen in train,
    or a filled cell, is all zeros."""
    if encoding["kind"] == "numeric":
        mean, std = encoding["mean"], encoding["std"]
        nums = np.where(missing, mean, nums)
        return ((nums - mean) / (std if std > 0 else 1.0))[:, None]
    cats = {c: i for i, c in enumerate(encoding["categories"])}
    onehot = np.zeros((len(values), len(cats)))
    codes = np.array([-1 if missing[i] else cats.get(v, -1) for i, v in enumerate(values)], dtype=np.int64)
    hit = codes >= 0
    onehot[np.flatnonzero(hit), codes[hit]] = 1.0
    return onehot


def _names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@register_dataset("csv")
def _load_csv(arg, *, seed, root, target, val_fraction) -> Dataset:
    if not arg:
        raise DataError("csv: no file given. Pass --data csv:PATH (a CSV file with a header row).")
    where, query = arg, ""
    if "?" in arg and not _resolve(arg, root).is_file():  # a file name with a '?' stays a name
        where, _, query = arg.partition("?")
    opts = _options("csv", query, {"categorical": "", "fill": "none"})
    path = _resolve(where, root)
    if not path.is_file():
        raise DataError(f"csv: file not found: {path}. Pass --data csv:PATH with the path to a "
                        f"CSV file that has a header row.")
    fill = opts["fill"]
    if fill not in _FILLS:
        raise DataError(f"csv: option fill must be one of {', '.join(_FILLS)} (none: an empty cell is an error). "
                        f"Received: {fill!r}")
    header, rows, lines = _read_csv(path)
    table = _Table(arg, path, query, opts, lines)

    def known(name: str, what: str) -> str:
        if name not in header:
            close = difflib.get_close_matches(name, header, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DataError(f"csv: {what} {name!r} not found in {path}.{hint} Columns: {', '.join(header)}.")
        return name

    declared = {known(c.strip(), "categorical column") for c in (opts["categorical"] or "").split(",") if c.strip()}
    default_target = target is None
    target = known(header[-1] if default_target else target, "target column")
    columns = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    raw_y = columns.pop(target)
    if not columns:
        raise DataError(f"csv: {path} has no feature columns besides the target {target!r}")

    # Task from the target: text, or integers with few distinct values, are classes.
    num_y, _ = table.column(target, raw_y, categorical=target in declared, fill=False, target=True)
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

    parts = _split_indices(len(rows), TEST_FRACTION, val_fraction, seed, labels=y, what=f"csv: {path}")
    train = parts[0]
    # Features: every statistic comes from the train split only, so nothing leaks from val/test.
    features, numeric, categorical, filled, names = [], [], [], 0, []
    encodings = []
    for name, values in columns.items():
        nums, missing = table.column(name, values, categorical=name in declared, fill=fill == "mean")
        filled += int(missing.sum())
        encodings.append(enc := _fit_column(name, nums, missing, values, train))
        features.append(_encode_column(enc, nums, missing, values))
        if enc["kind"] == "numeric":
            numeric.append(name)
            names.append(name)
        else:
            n_cats = len(enc["categories"])
            categorical.append(f"{name} ({n_cats} value{'s' if n_cats != 1 else ''})")
            names += [f"{name}={c}" for c in enc["categories"]]
    x = torch.from_numpy(np.concatenate(features, axis=1).astype(np.float32))

    task = "classify" if classify else "regress"
    how = f"{len(class_names)} classes" if classify else "regression"
    notes = [f"target: column {target!r}, {how}" + (
        " (the last column, taken because no target was given; choose another with --target NAME)"
        if default_target else "")]
    notes.append(f"features: {len(columns)} columns -> {x.shape[1]} inputs; numeric (standardised): "
                 f"{_names(numeric) or 'none'}; categorical (one-hot): {_names(categorical) or 'none'}")
    if filled:
        notes.append(f"filled: {filled} empty cell{'s' if filled != 1 else ''} (fill=mean: numeric ones get the "
                     f"train mean, categorical ones no category)")
    preprocessing = {"kind": "table", "target": target, "fill": fill, "columns": encodings}
    info = DataInfo(f"csv:{arg}", (x.shape[1],), "float", task, len(class_names) if classify else None,
                    class_names, source=str(path), notes=tuple(notes), feature_names=tuple(names),
                    preprocessing=preprocessing)
    train, val, test = (Split(x[torch.from_numpy(i)], y_t[torch.from_numpy(i)]) for i in parts)
    return Dataset(info, train, val, test)
