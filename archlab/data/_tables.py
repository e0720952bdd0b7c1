"""Tabular data: the ``csv:PATH[?categorical=A,B&fill=mean&text=C,D]`` loader. It registers itself
in `archlab.data.DATASETS`; `archlab.data` imports this module.

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

Text columns (a review, a title beside numbers) are named with ``text=COLUMN`` (comma-separated
names) and encoded as imdb encodes reviews, with the same options and defaults:

    csv:shop.csv?text=review&vocab=5000&max_len=64      tokenizer=word|bpe, pad=pre|post too

Each text column becomes token ids (max_len,) int64, the first max_len tokens padded with
<pad>=0, under its own tokenizer learnt on that column's train cells only. The data set then
has several named inputs (`DataInfo.inputs`, each split's x an `archlab.layers.Inputs`):
``features``, the numeric and one-hot columns above as (F,) float, and one input per text
column, named after the column, in the order given. A table whose only input column is one
text column serves it as one unnamed x of token ids, as imdb does. The tokenizer of a single
text column is the data set's `tokenizer` and its vocabulary its `vocab_size`; every text
input's own vocabulary is its "vocab" in `DataInfo.inputs`. `feature_names` name the
``features`` input's values. A text column's name must be a valid input name (letters,
digits, _), neither the target nor declared categorical; empty text cells are refused like
other empty cells, and with fill=mean they become no words (all <pad>).
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..core import DataError
from ..layers import Inputs
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
from ._text import TEXT_OPTIONS, encode_texts, text_settings

__all__: list[str] = []

_MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
_MAX_INT_CLASSES = 20  # an integer target with more distinct values than this is a regression
_FILLS = ("none", "mean")
_INPUT_NAME = re.compile(r"[A-Za-z_]\w*")  # a name a spec can read (`from: NAME`)
FEATURES = "features"  # the input of the numeric and one-hot columns, beside text inputs


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
               target: bool = False, text: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
        """(numbers or None for a categorical or text column, missing mask); every refusal is here."""
        missing = np.array([v.lower() in _MISSING for v in values], dtype=bool)
        what = "target column" if target else "text column" if text else "column"
        if missing.all():
            raise DataError(f"{self.at(0, name)}: the {what} has no values (every cell is empty). "
                            f"Drop the column" + (" or pick another target with --target." if target else "."))
        if missing.any() and (target or not fill):
            row = int(np.argmax(missing))
            fix = ("Fill the cell or drop the row (a target is never filled)." if target else
                   f"Fill the cell, drop the row, or fill empty cells with the train split's mean "
                   f"(categorical: no category{'; text: no words' if text else ''}): "
                   f"--data '{self.uri_with('fill', 'mean')}'.")
            raise DataError(f"{self.at(row, name)}: expected a value, the cell is empty. Received: "
                            f"{values[row]!r}. {fix}")
        if categorical or text:
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
    # Text options default to None here (imdb's defaults apply later), so a suggested --data
    # value repeats only what the user gave.
    opts = _options("csv", query, {"categorical": "", "fill": "none", "text": ""} | dict.fromkeys(TEXT_OPTIONS))
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
    texts = list(dict.fromkeys(known(c.strip(), "text column") for c in (opts["text"] or "").split(",") if c.strip()))
    default_target = target is None
    target = known(header[-1] if default_target else target, "target column")
    _check_text_columns(texts, declared, target, opts, path)
    columns = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    raw_y = columns.pop(target)
    raw_texts = {name: columns.pop(name) for name in texts}
    if not columns and not texts:
        raise DataError(f"csv: {path} has no feature columns besides the target {target!r}")
    if FEATURES in texts and columns:
        raise DataError(f"csv: {path}: text column {FEATURES!r} would share its input's name with the numeric and "
                        f"categorical columns' input {FEATURES!r}; rename the column in the header")

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
    inputs: dict[str, list[torch.Tensor]] = {}  # name -> the train, val and test tensors
    if features:
        x = torch.from_numpy(np.concatenate(features, axis=1).astype(np.float32))
        inputs[FEATURES] = [x[torch.from_numpy(i)] for i in parts]

    task = "classify" if classify else "regress"
    how = f"{len(class_names)} classes" if classify else "regression"
    notes = [f"target: column {target!r}, {how}" + (
        " (the last column, taken because no target was given; choose another with --target NAME)"
        if default_target else "")]
    if features:
        served = f"the {x.shape[1]} values of input {FEATURES!r}" if texts else f"{x.shape[1]} inputs"
        notes.append(f"features: {len(columns)} columns -> {served}; numeric (standardised): "
                     f"{_names(numeric) or 'none'}; categorical (one-hot): {_names(categorical) or 'none'}")
    # Text columns: token ids, each column with its own vocabulary learnt on its train cells.
    kind, vocab, max_len, side = text_settings("csv", opts)
    tokenizers = {}
    for name, values in raw_texts.items():
        _, missing = table.column(name, values, categorical=False, fill=fill == "mean", text=True)
        filled += int(missing.sum())
        cells = ["" if missing[i] else v for i, v in enumerate(values)]
        tok, inputs[name] = encode_texts([[cells[i] for i in idx] for idx in parts], kind, vocab, max_len, side)
        tokenizers[name] = tok
        notes.append(f"text: column {name!r} -> {max_len} {kind} ids, pad={side} (a vocabulary of "
                     f"{tok.vocab_size:,} learnt on the train split)")
    if filled:
        notes.append(f"filled: {filled} empty cell{'s' if filled != 1 else ''} (fill=mean: numeric ones get the "
                     f"train mean, categorical ones no category" + (", text ones no words" if texts else "") + ")")

    one_text = next(iter(tokenizers.values())) if len(tokenizers) == 1 else None
    shapes = {name: {"shape": list(tensors[0].shape[1:]), "dtype": "long" if name in tokenizers else "float"}
              | ({"vocab": tokenizers[name].vocab_size} if name in tokenizers else {})
              for name, tensors in inputs.items()}
    first = next(iter(shapes.values()))
    if len(inputs) == 1 and texts:  # one text column and nothing else: token ids, as imdb serves reviews
        preprocessing = {"kind": "reviews", "max_len": max_len, "pad": side, "column": texts[0], "target": target}
    else:
        preprocessing = {"kind": "table", "target": target, "fill": fill, "columns": encodings}
        if texts:
            preprocessing["text"] = [{"name": name, "tokenizer": tok.to_dict(), "max_len": max_len, "pad": side}
                                     for name, tok in tokenizers.items()]
    info = DataInfo(f"csv:{arg}", tuple(first["shape"]), first["dtype"], task, len(class_names) if classify else None,
                    class_names, source=str(path), notes=tuple(notes),
                    vocab_size=None if one_text is None else one_text.vocab_size,
                    tokenizer=None if one_text is None else one_text.to_dict(),
                    feature_names=tuple(names) if features else None, preprocessing=preprocessing,
                    inputs=shapes if len(inputs) > 1 else None)
    splits = []
    for p, idx in enumerate(parts):
        xs = {name: tensors[p] for name, tensors in inputs.items()}
        splits.append(Split(Inputs(xs) if len(xs) > 1 else next(iter(xs.values())), y_t[torch.from_numpy(idx)]))
    return Dataset(info, *splits)


def _check_text_columns(texts: list[str], declared: set[str], target: str, opts: Mapping[str, str | None],
                        path: Path) -> None:
    """Text columns are inputs a spec reads by name, neither the target nor categorical."""
    if not texts and (given := [k for k in TEXT_OPTIONS if opts[k] is not None]):
        raise DataError(f"csv: option{'s' * (len(given) > 1)} {', '.join(given)} set{'s' * (len(given) == 1)} how "
                        f"text columns are encoded, but no text column is named; add text=COLUMN, e.g. "
                        f"csv:{path}?text=review&{given[0]}={opts[given[0]]}")
    for name in texts:
        if name == target:
            raise DataError(f"csv: {path}: column {name!r} is the target and cannot also be a text input; drop it "
                            f"from text= or choose another target with --target")
        if name in declared:
            raise DataError(f"csv: {path}: column {name!r} is declared both categorical (one-hot values) and text "
                            f"(word ids); keep it in one of categorical= and text=")
        if not _INPUT_NAME.fullmatch(name):
            raise DataError(f"csv: {path}: text column {name!r} becomes an input of that name, which a spec reads "
                            f"as from: NAME, so it must be letters, digits and _ (not starting with a digit); "
                            f"rename the column in the header")
