"""Data larger than memory: memory-mapped NumPy splits, streamed a batch at a time.

Data that fits in memory is served by slicing tensors (`archlab.data.Split`): the fast path.
This module is the other one. ``npy:FOLDER`` reads a folder of ``.npy`` arrays:

    train_x.npy  train_y.npy      required
    val_x.npy    val_y.npy        optional; else a fixed val_fraction of train (stratified)
    test_x.npy   test_y.npy       optional; else a fixed 20% of train (stratified)
    info.json                     optional: task, input, num_classes, class_names, vocab_size,
                                  inputs (several named inputs, below)

x: uint8 arrays are images, served as float32 in [0, 1] (x / 255), which keeps the files 4x
smaller than float32; float arrays are served as float32; other integer arrays as int64 token
ids. y: integers are class ids (task classify), floats regression targets; (N, T) integer y
with (N, T) integer x is language modelling. `info.json` overrides any of these guesses.
Class ids, token ids and float values (no NaN or inf) are checked in one chunked pass at load
time, which reads the arrays once.

Several named inputs (an image and its caption): one x array per input instead of ``x``,

    train_x_image.npy  train_x_tokens.npy  train_y.npy     (val_ and test_ likewise, optional)

NAME is what a spec reads (``inputs: {image: ...}``, ``from: image``): letters, digits and _.
Each array is decoded by its own kind as above, every split must hold the same inputs with
one row per sample in each, and a val or test carved out of train takes the same rows of
every input. Then each split's x is an `archlab.layers.Inputs` in name order, and the data
set's `DataInfo.inputs` says each input's shape, dtype and (token ids) vocabulary. One
PART_x_NAME.npy alone is one unnamed x, like PART_x.npy; both in one folder is an error.
The tasks are classify or regress (y as above). info.json sets an input's kind and
vocabulary by name, in place of `input` and `vocab_size` (which describe one unnamed x):

    {"task": "classify", "inputs": {"tokens": {"kind": "tokens", "vocab": 5000},
                                    "image": {"kind": "image"}}}

"kind" is image (uint8 pixels), float or tokens; "vocab" (token ids 0..vocab-1, checked)
defaults to the largest id + 1. The data set's vocab_size (the spec's $vocab_size) is the
vocabulary of its token input where it has exactly one.

The arrays are memory-mapped (`np.load(mmap_mode="r")`): opening reads only the headers.
`serve` then picks the path. If the decoded tensors fit in the memory budget
(``ARCHLAB_MEMORY_LIMIT``, e.g. ``8G``; default half of the available memory) they are read
once into in-memory Splits. Otherwise each split stays a `DiskSplit` and the trainer streams
every epoch through a `torch.utils.data.DataLoader` whose worker processes read whole batches
(rows sorted for locality, one decode per batch, no per-sample collate) while the model
trains. ``stream=True`` / ``False`` (``--stream`` / ``--no-stream``) force either path. Both
paths give bit-identical batches: the same permutation, the same decode.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core import DataError, format_size, parse_size
from ..layers import Inputs
from ._dataset import (
    MAX_CLASSES,
    SPLIT_SEED,
    TASK_NAMES,
    TEST_FRACTION,
    TOKEN_TASKS,
    DataInfo,
    Dataset,
    Split,
    _data_folder,
    _split_indices,
    register_dataset,
)

__all__ = ["DiskSplit", "memory_budget", "serve", "stream_batches", "write_npy"]

INPUT_KINDS = ("image", "float", "tokens")
_INFO_KEYS = ("task", "input", "num_classes", "class_names", "vocab_size", "inputs")
_CHUNK_BYTES = 64 << 20  # whole-array passes (decode, max) read this much at a time


# ------------------------------------------------------------------------ decoding


def _decode_x(raw: np.ndarray, kind: str) -> Tensor:
    """Stored rows -> the tensor the model reads. The one place both paths decode.

    Always a fresh copy: a slice of a read-only memory map must not become a tensor."""
    t = torch.from_numpy(np.array(raw, dtype=np.int64 if kind == "tokens" else np.float32))
    return t.div_(255.0) if kind == "image" else t


def _is_ids(dtype: np.dtype) -> bool:
    """Integer (or bool) targets are ids (classes, tokens) and decode to int64; others to float32."""
    return np.issubdtype(dtype, np.integer) or dtype == np.bool_


def _decode_y(raw: np.ndarray) -> Tensor:
    return torch.from_numpy(np.array(raw, dtype=np.int64 if _is_ids(raw.dtype) else np.float32))


# What each kind of stored input becomes in memory.
_DECODED = {"image": torch.float32, "float": torch.float32, "tokens": torch.int64}


def _served_kind(a: np.ndarray) -> str:
    """The kind of an already decoded array: float32 stays as it is, int64 ids are tokens."""
    return "float" if a.dtype == np.float32 else "tokens"


def _kind_of(dtype: np.dtype) -> str:
    if dtype == np.uint8:
        return "image"
    if np.issubdtype(dtype, np.floating):
        return "float"
    if np.issubdtype(dtype, np.integer):
        return "tokens"
    raise DataError(f"dtype {dtype} is neither integer nor floating point")


# ------------------------------------------------------------------------ the split


class DiskSplit:
    """One split left on disk: memory-mapped x and y, optionally a subset of their rows.

    x is one array, or one array per named input (a mapping name -> array, served as `Inputs`
    batches); every input is read at the same rows, so a sample's inputs never part.
    It answers what the trainer asks of a split - `len`, `take(indices)`, `slice(start, stop)`,
    `targets()` - by reading just those rows. Pickling sends the file paths, not the data, so
    DataLoader workers started by spawn reopen the files instead of copying them.
    """

    def __init__(self, x: np.ndarray | Mapping[str, np.ndarray], y: np.ndarray, kind: str | Mapping[str, str],
                 rows: np.ndarray | None = None, paths: tuple[Path | Mapping[str, Path], Path] | None = None):
        self.named = isinstance(x, Mapping)
        # One unnamed x is kept as the input "": every read below then serves both cases.
        self.xs: dict[str, np.ndarray] = dict(x) if self.named else {"": x}  # type: ignore[arg-type]
        self.kinds: dict[str, str] = dict(kind) if self.named else {"": kind}  # type: ignore[arg-type]
        assert self.kinds.keys() == self.xs.keys(), "one kind per input"
        for a in self.xs.values():
            if len(a) != len(y):
                raise DataError(f"split has {len(a)} inputs but {len(y)} targets")
        self.y, self.rows = y, rows
        self.paths = None if paths is None else (
            dict(paths[0]) if self.named else {"": paths[0]}, paths[1])  # type: ignore[arg-type]

    @classmethod
    def from_split(cls, split: Split) -> DiskSplit:
        """An in-memory split served like a disk one (``stream=True`` on in-memory data)."""
        y = split.y.cpu().numpy()
        if isinstance(split.x, Inputs):
            xs = {name: t.cpu().numpy() for name, t in split.x.items()}
            return cls(xs, y, {name: _served_kind(a) for name, a in xs.items()})
        x = split.x.cpu().numpy()
        return cls(x, y, _served_kind(x))

    def __len__(self) -> int:
        return len(self.y) if self.rows is None else len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.paths is not None:  # reopen the maps in the new process; do not pickle the data
            state["xs"] = state["y"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.xs is None:
            self.xs = {name: _open_array(p) for name, p in self.paths[0].items()}
            self.y = _open_array(self.paths[1])

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes the decoded tensors would take in memory."""
        x_row = sum(_DECODED[self.kinds[name]].itemsize * math.prod(a.shape[1:]) for name, a in self.xs.items())
        y_row = (8 if _is_ids(self.y.dtype) else 4) * math.prod(self.target_shape)
        return len(self) * (x_row + y_row)

    def to(self, device: torch.device | str) -> DiskSplit:
        return self  # the data stays on disk; batches move to the device as they are read

    def _x(self, read: Callable[[np.ndarray], np.ndarray]) -> Tensor | Inputs:
        """x decoded from the same rows of every input (`read` picks them from one array)."""
        xs = {name: _decode_x(read(a), self.kinds[name]) for name, a in self.xs.items()}
        return Inputs(xs) if self.named else xs[""]

    def take(self, indices: Tensor | np.ndarray) -> tuple[Tensor | Inputs, Tensor]:
        """The rows at `indices` (positions in this split), in that order, decoded."""
        pos = indices.cpu().numpy() if isinstance(indices, Tensor) else np.asarray(indices)
        rows = pos if self.rows is None else self.rows[pos]
        order = np.argsort(rows, kind="stable")  # read in file order, then restore the batch order
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        sorted_rows = rows[order]
        return self._x(lambda a: a[sorted_rows][back]), _decode_y(self.y[sorted_rows][back])

    def slice(self, start: int, stop: int) -> tuple[Tensor | Inputs, Tensor]:
        stop = min(stop, len(self))
        if self.rows is None:  # one contiguous read
            return self._x(lambda a: a[start:stop]), _decode_y(self.y[start:stop])
        return self.take(np.arange(start, stop))

    def targets(self) -> Tensor:
        return _decode_y(self.y[:] if self.rows is None else self.y[self.rows])

    def materialize(self) -> Split:
        """Read and decode everything into an in-memory Split, a chunk at a time."""
        n = len(self)
        xs = {name: torch.empty((n, *a.shape[1:]), dtype=_DECODED[self.kinds[name]]) for name, a in self.xs.items()}
        row_bytes = sum(a.itemsize * math.prod(a.shape[1:]) for a in self.xs.values())
        step = max(1, _CHUNK_BYTES // max(1, row_bytes))
        for start in range(0, n, step):
            chunk = self.slice(start, start + step)[0]
            for name, x in xs.items():
                x[start:start + step] = chunk[name] if self.named else chunk
        return Split(Inputs(xs) if self.named else xs[""], self.targets())


# ------------------------------------------------------------------------ batches


class _BatchReader(torch.utils.data.Dataset):
    """Item i is `per_item` consecutive batches of the epoch's order, from batch `start` on,
    as one (x, y) pair.

    Workers hand items to the trainer through shared memory at a fixed cost per item (~1 ms:
    pickling, a file descriptor, a queue), so an item carries several batches: with one
    small batch per item that cost alone made an epoch 1.7x slower than in memory."""

    def __init__(self, split: DiskSplit, order: Tensor, batch_size: int, start: int, per_item: int):
        self.split, self.order, self.batch_size = split, order.cpu(), batch_size
        self.start, self.per_item = start, per_item
        self.end = math.ceil(len(split) / batch_size)  # one past the last batch

    def __len__(self) -> int:
        return max(0, math.ceil((self.end - self.start) / self.per_item))

    def __getitem__(self, i: int) -> tuple[Tensor | Inputs, Tensor]:
        # One read and two tensors for all of the item's batches: every tensor that crosses to
        # the trainer costs a shared-memory segment; the trainer cuts the batches out as views.
        first = (self.start + i * self.per_item) * self.batch_size
        return self.split.take(self.order[first:first + self.per_item * self.batch_size])


ITEM_BYTES = 4 << 20  # what one worker item carries: a few MiB amortises its transfer cost


def default_workers() -> int:
    """Reader processes: half the cores, at least 1, at most 4 (more rarely helps one GPU)."""
    return min(4, max(1, (os.cpu_count() or 2) // 2))


def stream_batches(split: DiskSplit, order: Tensor, batch_size: int, start: int, *,
                   device: torch.device | None = None, workers: int | None = None
                   ) -> Iterator[tuple[int, Tensor | Inputs, Tensor]]:
    """(step, x, y) from `start` on, read ahead by DataLoader workers; the order is the caller's.
    x is an `Inputs` where the split has several named inputs (pinned and moved input by input)."""
    workers = default_workers() if workers is None else workers
    pin = device is not None and device.type == "cuda"
    per_batch = batch_size * split.nbytes / max(1, len(split))  # decoded: that is what travels
    per_item = max(1, int(ITEM_BYTES // max(1.0, per_batch))) if workers else 1
    loader = torch.utils.data.DataLoader(
        _BatchReader(split, order, batch_size, start, per_item), batch_size=None, shuffle=False,
        num_workers=workers, pin_memory=pin, prefetch_factor=2 if workers else None,
        # A private generator: the loader draws its workers' base seed from it, and drawing it
        # from the global RNG would shift the model's dropout masks away from the in-memory path.
        generator=torch.Generator().manual_seed(0))
    step = start
    for xs, ys in loader:
        for x, y in zip(_batches_of(xs, batch_size), ys.split(batch_size), strict=True):
            if device is not None:
                x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            yield step, x, y
            step += 1


def _batches_of(x: Tensor | Inputs, batch_size: int) -> list[Tensor | Inputs]:
    """An item's batches, cut out as views (`Tensor.split` for one x; the same rows of every input)."""
    if isinstance(x, Tensor):
        return list(x.split(batch_size))
    # As Tensor.split, an empty item gives one empty batch: it pairs with y's (a rank's reader
    # reads past its part of the order, and the trainer stops at its own count).
    return [x[start:start + batch_size] for start in range(0, max(1, len(x)), batch_size)]


# ------------------------------------------------------------------------ the decision


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget() -> int:
    """How many bytes of decoded data may be held in memory: $ARCHLAB_MEMORY_LIMIT, else half
    of the memory available now (the model, its gradients and the optimizer need the rest)."""
    limit = os.environ.get("ARCHLAB_MEMORY_LIMIT")
    return parse_size(limit, "ARCHLAB_MEMORY_LIMIT", error=DataError) if limit else _available_memory() // 2


def serve(dataset: Dataset, stream: bool | None) -> Dataset:
    """Pick each split's path: in memory (Split) or streamed from disk (DiskSplit).

    stream None: disk data that fits the budget is read into memory, the rest streams;
    True: every split streams (in-memory data too); False: everything is read into memory.
    """
    parts = (dataset.train, dataset.val, dataset.test)
    if stream is True:
        parts = tuple(p if isinstance(p, DiskSplit) else DiskSplit.from_split(p) for p in parts)
    elif any(isinstance(p, DiskSplit) for p in parts):
        need = sum(p.nbytes for p in parts if isinstance(p, DiskSplit))
        if stream is False or need <= memory_budget():
            parts = tuple(p.materialize() if isinstance(p, DiskSplit) else p for p in parts)
    return Dataset(dataset.info, *parts)


def describe_data_path(dataset: Dataset) -> str | None:
    """A one-line note when a split streams, for the progress output; None when all in memory."""
    if not isinstance(dataset.train, DiskSplit):
        return None
    size = sum(p.nbytes for p in (dataset.train, dataset.val, dataset.test) if isinstance(p, DiskSplit))
    budget = memory_budget()
    why = (f"more than the in-memory budget of {format_size(budget)}; set ARCHLAB_MEMORY_LIMIT or --no-stream to change"
           if size > budget else "--stream asked for it; it would fit in memory")
    return f"streaming {dataset.info.name} from disk through a DataLoader ({format_size(size)} decoded, {why})"


# ------------------------------------------------------------------------ npy:FOLDER

PARTS = ("train", "val", "test")
_INPUT_KEYS = ("kind", "vocab")  # what info.json may say about one named input
_INPUT_NAME = re.compile(r"[A-Za-z_]\w*")  # a name a spec can read (`from: NAME`)


def _open_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"npy: file not found: {path}") from None
    except (ValueError, OSError, EOFError) as e:  # a bad header, object arrays, a truncated body
        raise DataError(f"npy: {path} is not a readable .npy array ({e}); write it with numpy.save "
                        f"(numeric dtypes only)") from None


def _read_info(folder: Path) -> dict[str, Any]:
    path = folder / "info.json"
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        raise DataError(f"npy: {path} is not valid JSON ({e})") from None
    if not isinstance(info, dict):
        raise DataError(f"npy: {path} must hold a JSON object with keys {', '.join(_INFO_KEYS)}")
    if unknown := sorted(set(info) - set(_INFO_KEYS)):
        raise DataError(f"npy: {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_INFO_KEYS)}")
    if info.get("task") is not None and info["task"] not in TASK_NAMES:
        raise DataError(f"npy: {path}: task must be one of {', '.join(TASK_NAMES)}. Received: {info['task']!r}")
    if info.get("input") is not None and info["input"] not in INPUT_KINDS:
        raise DataError(f"npy: {path}: input must be one of {', '.join(INPUT_KINDS)}. Received: {info['input']!r}")
    for key, least in (("num_classes", 2), ("vocab_size", 1)):
        _check_count(info.get(key), least, f"npy: {path}: {key}")
    names = info.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str | int) for n in names)):
        raise DataError(f"npy: {path}: class_names must be a list of names, e.g. [\"cat\", \"dog\"]. "
                        f"Received: {names!r}")
    _check_input_settings(info.get("inputs"), path)
    return info


def _check_count(value: Any, least: int, where: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
        raise DataError(f"{where} must be an integer >= {least}. Received: {value!r}")


def _check_input_settings(inputs: Any, path: Path) -> None:
    """info.json's "inputs": {"NAME": {"kind": "image"|"float"|"tokens", "vocab": N}} (the names are
    checked against the folder's files once those are known)."""
    if inputs is None:
        return
    if not isinstance(inputs, dict) or not all(isinstance(v, dict) for v in inputs.values()):
        raise DataError(f"npy: {path}: inputs must map each input's name to its settings, e.g. \"inputs\": "
                        f"{{\"tokens\": {{\"kind\": \"tokens\", \"vocab\": 5000}}}}. Received: {inputs!r}")
    for name, given in inputs.items():
        if unknown := sorted(set(given) - set(_INPUT_KEYS)):
            raise DataError(f"npy: {path}: inputs.{name}: unknown key(s) {', '.join(unknown)}; "
                            f"known: {', '.join(_INPUT_KEYS)}")
        kind = given.get("kind")
        if kind is not None and kind not in INPUT_KINDS:
            raise DataError(f"npy: {path}: inputs.{name}.kind must be one of {', '.join(INPUT_KINDS)}. "
                            f"Received: {kind!r}")
        _check_count(given.get("vocab"), 1, f"npy: {path}: inputs.{name}.vocab")


def _x_path(folder: Path, part: str, name: str) -> Path:
    """A split's x file: PART_x.npy for the one unnamed x (name ""), PART_x_NAME.npy for a named input."""
    return folder / (f"{part}_x.npy" if name == "" else f"{part}_x_{name}.npy")


def _x_names(folder: Path, part: str) -> list[str]:
    """The inputs a split's files hold: [""] for PART_x.npy, else each NAME of PART_x_NAME.npy in
    name order; [] where the split has no x file."""
    plain = _x_path(folder, part, "")
    named = sorted(p.name[len(f"{part}_x_"):-len(".npy")] for p in folder.glob(f"{part}_x_*.npy"))
    if plain.exists() and named:
        raise DataError(f"npy: {plain} and {_x_path(folder, part, named[0])} both hold the {part} split's x: give "
                        f"one unnamed x ({plain.name}) or one array per named input ({part}_x_NAME.npy), not both; "
                        f"remove or rename one of them")
    for name in named:
        if not _INPUT_NAME.fullmatch(name):
            raise DataError(f"npy: {_x_path(folder, part, name)}: {name!r} is not an input name (letters, digits "
                            f"and _, not starting with a digit), so no spec could read it; rename the file")
    return [""] if plain.exists() else named


class _Part:
    """One split's files as found: x arrays by input name ("" for one unnamed x), y, their paths."""

    def __init__(self, folder: Path, part: str, names: list[str]):
        self.name = part
        self.x_paths = {name: _x_path(folder, part, name) for name in names}
        self.y_path = folder / f"{part}_y.npy"
        self.xs = {name: _open_array(p) for name, p in self.x_paths.items()}
        self.y = _open_array(self.y_path)
        for name, x in self.xs.items():
            if x.ndim < 2:
                raise DataError(f"npy: {self.x_paths[name]} is {x.shape}: x needs a sample axis after the row axis, "
                                f"(N, features) or (N, C, H, W); for one feature per row save x.reshape(-1, 1)")
        if any(len(x) != len(self.y) for x in self.xs.values()) or self.y.ndim not in (1, 2):
            shown = ", ".join(f"{self.x_paths[n].name} {x.shape}" for n, x in self.xs.items())
            raise DataError(f"npy: {shown} and {self.y_path.name} {self.y.shape} must be (N, ...) and (N,) or "
                            f"(N, k) with the same N")
        if len(self.y) == 0:
            *xs, last = [p.name for p in (*self.x_paths.values(), self.y_path)]
            files = f"{', '.join(xs)} and {last}"
            raise DataError(f"npy: {next(iter(self.x_paths.values()))} has no rows; remove {files} to carve "
                            f"{part} out of train instead" if part != "train"
                            else f"npy: {next(iter(self.x_paths.values()))} has no rows")

    def arrays(self, names: list[str]) -> list[tuple[np.ndarray, Path]]:
        return [(self.xs[n], self.x_paths[n]) for n in names]


def _find_parts(folder: Path) -> tuple[list[str], dict[str, _Part]]:
    """The folder's inputs (as train has them) and its splits; val and test must hold the same inputs."""
    names = {part: _x_names(folder, part) for part in PARTS}
    inputs = names["train"]
    if not inputs:
        raise DataError(f"npy: {folder / 'train_x.npy'} not found. The folder needs train_x.npy (or one "
                        f"train_x_NAME.npy per named input) and train_y.npy (optionally the same for val and "
                        f"test, and info.json)")
    found = {}
    for part in PARTS:
        y_path = folder / f"{part}_y.npy"
        if not names[part]:
            if y_path.exists():
                raise DataError(f"npy: {y_path} has no partner {_x_path(folder, part, inputs[0]).name} in {folder}")
            continue
        if not y_path.exists():
            raise DataError(f"npy: {_x_path(folder, part, names[part][0])} has no partner {y_path.name} in {folder}")
        train_files = ", ".join(_x_path(folder, "train", n).name for n in inputs)
        if missing := [n for n in inputs if n not in names[part]]:
            raise DataError(f"npy: {_x_path(folder, part, missing[0])} not found: train has {train_files}, so "
                            f"{part} needs the same inputs; add it, or remove {part}'s files to carve {part} "
                            f"out of train")
        if extra := [n for n in names[part] if n not in inputs]:
            raise DataError(f"npy: {_x_path(folder, part, extra[0])} has no counterpart "
                            f"{_x_path(folder, 'train', extra[0]).name}: every split holds the inputs train has "
                            f"({train_files}); add it to train or remove it")
        found[part] = _Part(folder, part, inputs)
    return inputs, found


def _chunked_range(a: np.ndarray) -> tuple[int, int]:
    """min and max of a (possibly huge, memory-mapped) integer array, a chunk at a time."""
    if a.size == 0:
        return 0, -1
    rows = max(1, _CHUNK_BYTES // max(1, a.itemsize * math.prod(a.shape[1:])))
    lo, hi = None, None
    for start in range(0, len(a), rows):
        chunk = a[start:start + rows]
        lo = int(chunk.min()) if lo is None else min(lo, int(chunk.min()))
        hi = int(chunk.max()) if hi is None else max(hi, int(chunk.max()))
    return lo, hi


def _check_finite(arrays: list[tuple[np.ndarray, Path]]) -> None:
    """NaN or inf in float inputs or targets would surface as a diverging loss; name the file."""
    for a, path in arrays:
        if np.issubdtype(a.dtype, np.floating):
            bad = _first_row(a, lambda chunk: ~np.isfinite(chunk))
            if bad is not None:
                raise DataError(f"npy: {path} row {bad} holds NaN or inf; clean or drop those rows")


def _first_row(a: np.ndarray, hit: Callable[[np.ndarray], np.ndarray]) -> int | None:
    """The first row of a (possibly huge, memory-mapped) array where `hit` holds for some value;
    None where no row has one."""
    rows = max(1, _CHUNK_BYTES // max(1, a.itemsize * math.prod(a.shape[1:])))
    for start in range(0, len(a), rows):
        flags = hit(a[start:start + rows])
        found = np.flatnonzero(flags.reshape(len(flags), -1).any(axis=1))
        if len(found):
            return start + int(found[0])
    return None


def _class_count(given: dict[str, _Part], info_json: dict[str, Any], folder: Path) -> int:
    """num_classes from info.json, else the largest class id + 1, checked against every label.

    Without info.json the count must be sane: at most MAX_CLASSES and at most the number of
    labelled rows (more classes than rows means most have no sample: a bad label, not a class).
    A refusal names the file and the row of the offending label."""
    ranges = {part: _chunked_range(p.y) for part, p in given.items()}
    rows = sum(len(p.y) for p in given.values())
    stated = info_json.get("num_classes")
    if stated is not None and stated > MAX_CLASSES:
        raise DataError(f"npy: {folder / 'info.json'}: num_classes must be at most {MAX_CLASSES:,}. Received: "
                        f"{stated:,}")
    limit = stated or min(MAX_CLASSES, max(2, rows))

    def where(part: str, value: int) -> str:
        return f"npy: {given[part].y_path} row {_first_row(given[part].y, lambda c: c == value)}"

    low_part = min(ranges, key=lambda p: ranges[p][0])
    if (lo := ranges[low_part][0]) < 0:
        raise DataError(f"{where(low_part, lo)}: class ids must be >= 0. Received: {lo}. Fix that label")
    high_part = max(ranges, key=lambda p: ranges[p][1])
    hi = ranges[high_part][1]
    if hi >= limit:
        if stated:
            raise DataError(f"{where(high_part, hi)}: class id {hi:,} is out of range for num_classes {stated} "
                            f"(info.json): ids must be in 0..{stated - 1}. Fix that label, or the num_classes")
        why = (f"at most {MAX_CLASSES:,} classes" if limit == MAX_CLASSES else
               f"no more classes than the {rows:,} labelled rows")
        raise DataError(f"{where(high_part, hi)}: expected a class id in 0..{limit - 1:,} ({why}). Received: "
                        f"{hi:,}, which would make {hi + 1:,} classes. Fix that label, or state num_classes "
                        f"(at most {MAX_CLASSES:,}) in {folder / 'info.json'}")
    return int(stated or hi + 1)


def _token_vocab(arrays: list[tuple[np.ndarray, Path]], stated: int | None, setting: str) -> int:
    """A token input's vocabulary: `stated` (info.json's `setting`) or the largest id + 1. Every
    id is checked in one chunked pass; a refusal names the file and the row."""
    ranges = [(_chunked_range(a), a, path) for a, path in arrays]
    (lo, _), a, path = min(ranges, key=lambda r: r[0][0])
    if lo < 0:
        raise DataError(f"npy: {path} row {_first_row(a, lambda c: c < 0)}: token ids must be >= 0. "
                        f"Received: {lo}. Fix that id")
    (_, hi), a, path = max(ranges, key=lambda r: r[0][1])
    vocab = stated or max(1, hi + 1)
    if hi >= vocab:
        raise DataError(f"npy: {path} row {_first_row(a, lambda c: c >= vocab)}: token id {hi:,} is out of range "
                        f"for {setting} {vocab:,} (info.json): ids must be in 0..{vocab - 1:,}. Fix that id, or "
                        f"the {setting}")
    return int(vocab)


def _input_kind(name: str, x: np.ndarray, stated: str | None, y: np.ndarray, file: str) -> str:
    """How one x array is served: info.json's kind, else by dtype (uint8 image, float, other ints tokens)."""
    kind = stated or _kind_of(x.dtype)
    if (kind == "image" and not stated and name == "" and _is_ids(y.dtype) and y.ndim == 2
            and y.shape == x.shape):
        kind = "tokens"  # (N, T) bytes with (N, T) integer targets: a byte-level corpus, not images
    if kind == "image" and x.dtype != np.uint8:
        raise DataError(f"npy: info.json says input image, which means uint8 pixels; {file} is {x.dtype}")
    if kind == "tokens" and not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"npy: token input must be integers; {file} is {x.dtype}")
    return kind


@register_dataset("npy")
def _load_npy(arg, *, seed, root, target, val_fraction) -> Dataset:
    folder = _data_folder("npy", arg, root, "train_x.npy and train_y.npy (optionally val_* and test_*)")
    inputs, given = _find_parts(folder)
    info_json = _read_info(folder)
    info_path = folder / "info.json"
    named = len(inputs) > 1  # one named array is one unnamed x, as train_x.npy is
    settings = info_json.get("inputs") or {}
    if unknown := [n for n in settings if n not in inputs]:
        close = difflib.get_close_matches(unknown[0], inputs, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        have = (f"its inputs are {', '.join(inputs)}" if inputs != [""] else
                "it has one unnamed x (train_x.npy), set by input and vocab_size")
        raise DataError(f"npy: {info_path}: inputs.{unknown[0]}: the folder has no train_x_{unknown[0]}.npy.{hint} "
                        f"Of the folder, {have}")
    if named:
        for key, setting in (("input", "kind"), ("vocab_size", "vocab")):
            if info_json.get(key) is not None:
                raise DataError(f"npy: {info_path}: {key} describes one unnamed x, but the folder has the named "
                                f"inputs {', '.join(inputs)}; set it per input: \"inputs\": {{\"{inputs[0]}\": "
                                f"{{\"{setting}\": {json.dumps(info_json[key])}}}}}")
    train_part = given["train"]
    for name in inputs:
        shapes = {p: g.xs[name].shape[1:] for p, g in given.items()}
        if len(set(shapes.values())) > 1:
            raise DataError("npy: the splits' samples differ in shape" + (f" for input {name!r}" if name else "")
                            + f": {shapes}")
    y_tr = train_part.y
    int_y = _is_ids(y_tr.dtype)
    kinds = {}
    for name in inputs:
        stated = settings.get(name, {}).get("kind") or (None if named else info_json.get("input"))
        file = train_part.x_paths[name].name
        kinds[name] = _input_kind(name, train_part.xs[name], stated, y_tr, file)
        if settings.get(name, {}).get("vocab") is not None and kinds[name] != "tokens":
            raise DataError(f"npy: {info_path}: inputs.{name}.vocab applies to token ids, but {file} is served as "
                            f"{kinds[name]} ({train_part.xs[name].dtype}); set \"kind\": \"tokens\" or drop vocab")
    x_tr = train_part.xs[inputs[0]]
    task = info_json.get("task") or (
        "language_model" if (not named and int_y and y_tr.ndim == 2 and kinds[inputs[0]] == "tokens"
                             and y_tr.shape == x_tr.shape)
        else "classify" if int_y and y_tr.ndim == 1 else "regress")
    if named and task in TOKEN_TASKS:
        raise DataError(f"npy: {info_path}: task {task} reads one x of token ids, but the folder has the named inputs "
                        f"{', '.join(inputs)}; several inputs serve classify or regress")

    num_classes = class_names = None
    if task in ("classify", "language_model", "seq2seq") and not int_y:
        raise DataError(f"npy: task {task} needs integer ids in y; train_y.npy is {y_tr.dtype}")
    if task == "classify" and y_tr.ndim != 1:
        raise DataError(f"npy: task classify needs y of shape (N,); train_y.npy is {y_tr.shape}")
    floats = [n for n in inputs if kinds[n] != "tokens"]
    _check_finite([a for g in given.values() for a in g.arrays(floats)] + [(g.y, g.y_path) for g in given.values()])
    if task == "classify":
        num_classes = _class_count(given, info_json, folder)
        names = info_json.get("class_names")
        class_names = tuple(str(c) for c in names) if names else tuple(str(c) for c in range(num_classes))
        if len(class_names) != num_classes:
            raise DataError(f"npy: info.json has {len(class_names)} class_names for {num_classes} classes")
    vocabs = {}
    for name in (n for n in inputs if kinds[n] == "tokens"):
        arrays = [a for g in given.values() for a in g.arrays([name])]
        if task in TOKEN_TASKS:  # targets are ids of the same vocabulary
            arrays += [(g.y, g.y_path) for g in given.values()]
        stated = settings.get(name, {}).get("vocab") or (None if named else info_json.get("vocab_size"))
        vocabs[name] = _token_vocab(arrays, stated, f"inputs.{name}.vocab" if named else "vocab_size")

    def split(part: str, rows: np.ndarray | None = None) -> DiskSplit:
        g = given[part]
        if named:
            return DiskSplit(g.xs, g.y, kinds, rows, (g.x_paths, g.y_path))
        (name,) = inputs
        return DiskSplit(g.xs[name], g.y, kinds[name], rows, (g.x_paths[name], g.y_path))

    # Missing val/test parts come out of train at fixed positions (SPLIT_SEED), stratified for classes;
    # one DiskSplit holds every input, so each input gives the same rows.
    test_fraction = 0.0 if "test" in given else TEST_FRACTION
    fraction = 0.0 if "val" in given else val_fraction
    if test_fraction or fraction:
        labels = np.asarray(y_tr) if task == "classify" else None
        tr, va, te = _split_indices(len(y_tr), test_fraction, fraction, SPLIT_SEED, labels=labels,
                                    what=f"npy: {folder / 'train_y.npy'}")
        train = split("train", tr)
        val = split("val") if "val" in given else split("train", va)
        test = split("test") if "test" in given else split("train", te)
    else:
        train, val, test = split("train"), split("val"), split("test")
    described = None
    if named:
        described = {n: {"shape": [int(d) for d in train_part.xs[n].shape[1:]],
                         "dtype": "long" if kinds[n] == "tokens" else "float"}
                     | ({"vocab": vocabs[n]} if n in vocabs else {}) for n in inputs}
    info = DataInfo(f"npy:{arg}" if arg else "npy", tuple(int(d) for d in x_tr.shape[1:]),
                    "long" if kinds[inputs[0]] == "tokens" else "float", task, num_classes, class_names,
                    # $vocab_size: the one token input's vocabulary (several: each input has its own)
                    vocab_size=next(iter(vocabs.values())) if len(vocabs) == 1 else None,
                    source=str(folder), inputs=described)
    return Dataset(info, train, val, test)


def write_npy(folder: str | Path, dataset: Dataset, *, images_as_uint8: bool = False) -> Path:
    """Write a data set's three splits as ``npy:FOLDER`` files (and its info.json); several named
    inputs become one PART_x_NAME.npy each.

    ``images_as_uint8`` stores float images in [0, 1] as bytes (x * 255, rounded): 4x smaller,
    exact for data that came from bytes (MNIST, CIFAR-10), within 1/510 otherwise (digits has
    17 grey levels). Values outside [0, 1] are refused: those are features, not pixels. With
    several inputs it applies to every float input (token inputs stay ids).
    """
    folder = Path(folder)
    info = dataset.info
    parts = {}
    for part in PARTS:
        split = getattr(dataset, part)
        x, y = (split.x, split.y) if isinstance(split, Split) else split.slice(0, len(split))
        xs = {n: t.cpu().numpy() for n, t in x.items()} if isinstance(x, Inputs) else {"": x.cpu().numpy()}
        parts[part] = (xs, y.cpu().numpy())
    kinds = {n: _served_kind(a) for n, a in parts["train"][0].items()}
    floats = [n for n, kind in kinds.items() if kind == "float"]
    if images_as_uint8:
        if not floats:
            raise DataError(f"--uint8 stores images as bytes; {info.name} has token input")
        for name in floats:
            lo = min(float(xs[name].min()) for xs, _ in parts.values() if xs[name].size)
            hi = max(float(xs[name].max()) for xs, _ in parts.values() if xs[name].size)
            if lo < 0 or hi > 1:
                raise DataError(f"--uint8 stores images with values in [0, 1] as bytes; {info.name} has "
                                + (f"input {name!r} with " if name else "") + f"values in [{lo:.3g}, {hi:.3g}] "
                                f"(features, not pixels): export without --uint8")
        kinds |= dict.fromkeys(floats, "image")
    folder.mkdir(parents=True, exist_ok=True)
    for part, (xs, y) in parts.items():
        for name, x in xs.items():
            np.save(_x_path(folder, part, name), np.rint(x * 255.0).astype(np.uint8) if kinds[name] == "image" else x)
        np.save(folder / f"{part}_y.npy", y)
    meta: dict[str, Any] = {"task": info.task}
    if info.inputs is None:
        meta["input"] = kinds[""]
        meta |= {"vocab_size": info.vocab_size} if info.vocab_size is not None else {}
    else:
        meta["inputs"] = {n: {"kind": kinds[n]} | ({"vocab": d["vocab"]} if d.get("vocab") is not None else {})
                          for n, d in info.inputs.items()}
    meta |= {k: v for k, v in (("num_classes", info.num_classes),
                               ("class_names", list(info.class_names or []) or None)) if v is not None}
    (folder / "info.json").write_text(json.dumps(meta, indent=1))
    return folder
