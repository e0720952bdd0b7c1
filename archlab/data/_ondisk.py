"""Data larger than memory: memory-mapped NumPy splits, streamed a batch at a time.

Data that fits in memory is served by slicing tensors (`archlab.data.Split`): the fast path.
This module is the other one. ``npy:FOLDER`` reads a folder of ``.npy`` arrays:

    train_x.npy  train_y.npy      required
    val_x.npy    val_y.npy        optional; else a fixed val_fraction of train (stratified)
    test_x.npy   test_y.npy       optional; else a fixed 20% of train (stratified)
    info.json                     optional: task, input, num_classes, class_names, vocab_size

x: uint8 arrays are images, served as float32 in [0, 1] (x / 255), which keeps the files 4x
smaller than float32; float arrays are served as float32; other integer arrays as int64 token
ids. y: integers are class ids (task classify), floats regression targets; (N, T) integer y
with (N, T) integer x is language modelling. `info.json` overrides any of these guesses.
Class ids, token ids and float values (no NaN or inf) are checked in one chunked pass at load
time, which reads the arrays once.

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

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core import DataError, format_size, parse_size
from ._dataset import (
    MAX_CLASSES,
    SPLIT_SEED,
    TASK_NAMES,
    TEST_FRACTION,
    DataInfo,
    Dataset,
    Split,
    _data_folder,
    _split_indices,
    register_dataset,
)

__all__ = ["DiskSplit", "memory_budget", "serve", "stream_batches", "write_npy"]

INPUT_KINDS = ("image", "float", "tokens")
_INFO_KEYS = ("task", "input", "num_classes", "class_names", "vocab_size")
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

    It answers what the trainer asks of a split - `len`, `take(indices)`, `slice(start, stop)`,
    `targets()` - by reading just those rows. Pickling sends the file paths, not the data, so
    DataLoader workers started by spawn reopen the files instead of copying them.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, kind: str, rows: np.ndarray | None = None,
                 paths: tuple[Path, Path] | None = None):
        if len(x) != len(y):
            raise DataError(f"split has {len(x)} inputs but {len(y)} targets")
        self.x, self.y, self.kind, self.rows, self.paths = x, y, kind, rows, paths

    @classmethod
    def from_split(cls, split: Split) -> DiskSplit:
        """An in-memory split served like a disk one (``stream=True`` on in-memory data)."""
        x, y = split.x.cpu().numpy(), split.y.cpu().numpy()
        return cls(x, y, "float" if x.dtype == np.float32 else "tokens")

    def __len__(self) -> int:
        return len(self.x) if self.rows is None else len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.paths is not None:  # reopen the maps in the new process; do not pickle the data
            state["x"] = state["y"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.x is None:
            self.x, self.y = (_open_array(p) for p in self.paths)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape[1:])

    @property
    def dtype(self) -> torch.dtype:
        return torch.int64 if self.kind == "tokens" else torch.float32

    @property
    def nbytes(self) -> int:
        """Bytes the decoded tensors would take in memory."""
        x_item = 8 if self.kind == "tokens" else 4
        y_item = 8 if _is_ids(self.y.dtype) else 4
        return len(self) * (x_item * math.prod(self.sample_shape) + y_item * math.prod(self.target_shape))

    def to(self, device: torch.device | str) -> DiskSplit:
        return self  # the data stays on disk; batches move to the device as they are read

    def take(self, indices: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """The rows at `indices` (positions in this split), in that order, decoded."""
        pos = indices.cpu().numpy() if isinstance(indices, Tensor) else np.asarray(indices)
        rows = pos if self.rows is None else self.rows[pos]
        order = np.argsort(rows, kind="stable")  # read in file order, then restore the batch order
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        sorted_rows = rows[order]
        return _decode_x(self.x[sorted_rows][back], self.kind), _decode_y(self.y[sorted_rows][back])

    def slice(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        stop = min(stop, len(self))
        if self.rows is None:  # one contiguous read
            return _decode_x(self.x[start:stop], self.kind), _decode_y(self.y[start:stop])
        return self.take(np.arange(start, stop))

    def targets(self) -> Tensor:
        return _decode_y(self.y[:] if self.rows is None else self.y[self.rows])

    def materialize(self) -> Split:
        """Read and decode everything into an in-memory Split, a chunk at a time."""
        n = len(self)
        x = torch.empty((n, *self.sample_shape), dtype=self.dtype)
        step = max(1, _CHUNK_BYTES // max(1, self.x.itemsize * math.prod(self.sample_shape)))
        for start in range(0, n, step):
            x[start:start + step] = self.slice(start, start + step)[0]
        return Split(x, self.targets())


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

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
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
                   ) -> Iterator[tuple[int, Tensor, Tensor]]:
    """(step, x, y) from `start` on, read ahead by DataLoader workers; the order is the caller's."""
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
        for x, y in zip(xs.split(batch_size), ys.split(batch_size), strict=True):
            if device is not None:
                x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            yield step, x, y
            step += 1


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
        value = info.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise DataError(f"npy: {path}: {key} must be an integer >= {least}. Received: {value!r}")
    names = info.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str | int) for n in names)):
        raise DataError(f"npy: {path}: class_names must be a list of names, e.g. [\"cat\", \"dog\"]. "
                        f"Received: {names!r}")
    return info


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


def _check_finite(given: dict[str, tuple[np.ndarray, np.ndarray, tuple[Path, Path]]]) -> None:
    """NaN or inf in float inputs or targets would surface as a diverging loss; name the file."""
    for x, y, paths in given.values():
        for a, path in ((x, paths[0]), (y, paths[1])):
            if not np.issubdtype(a.dtype, np.floating):
                continue
            rows = max(1, _CHUNK_BYTES // max(1, a.itemsize * math.prod(a.shape[1:])))
            for start in range(0, len(a), rows):
                bad = ~np.isfinite(a[start:start + rows].reshape(min(rows, len(a) - start), -1)).all(axis=1)
                if bad.any():
                    raise DataError(f"npy: {path} row {start + int(np.argmax(bad))} holds NaN or inf; clean or "
                                    f"drop those rows")


def _first_row(a: np.ndarray, value: int) -> int:
    """The first row of a (possibly huge, memory-mapped) 1-d array holding ``value``."""
    rows = max(1, _CHUNK_BYTES // max(1, a.itemsize))
    for start in range(0, len(a), rows):
        hit = np.flatnonzero(a[start:start + rows] == value)
        if len(hit):
            return start + int(hit[0])
    raise ValueError(value)  # not reached: the value came from the array


def _class_count(given: dict[str, tuple[np.ndarray, np.ndarray, tuple[Path, Path]]], info_json: dict[str, Any],
                 folder: Path) -> int:
    """num_classes from info.json, else the largest class id + 1, checked against every label.

    Without info.json the count must be sane: at most MAX_CLASSES and at most the number of
    labelled rows (more classes than rows means most have no sample: a bad label, not a class).
    A refusal names the file and the row of the offending label."""
    ranges = {part: _chunked_range(y) for part, (_, y, _) in given.items()}
    rows = sum(len(y) for _, y, _ in given.values())
    stated = info_json.get("num_classes")
    if stated is not None and stated > MAX_CLASSES:
        raise DataError(f"npy: {folder / 'info.json'}: num_classes must be at most {MAX_CLASSES:,}. Received: "
                        f"{stated:,}")
    limit = stated or min(MAX_CLASSES, max(2, rows))

    def where(part: str, value: int) -> str:
        y, path = given[part][1], given[part][2][1]
        return f"npy: {path} row {_first_row(y, value)}"

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


@register_dataset("npy")
def _load_npy(arg, *, seed, root, target, val_fraction) -> Dataset:
    folder = _data_folder("npy", arg, root, "train_x.npy and train_y.npy (optionally val_* and test_*)")
    if not (folder / "train_x.npy").exists():
        raise DataError(f"npy: {folder / 'train_x.npy'} not found. The folder needs train_x.npy and "
                        f"train_y.npy (optionally val_x/val_y, test_x/test_y .npy and info.json)")
    info_json = _read_info(folder)
    given: dict[str, tuple[np.ndarray, np.ndarray, tuple[Path, Path]]] = {}
    for part in ("train", "val", "test"):
        px, py = folder / f"{part}_x.npy", folder / f"{part}_y.npy"
        if px.exists() != py.exists():
            raise DataError(f"npy: {px if px.exists() else py} has no partner "
                            f"{py.name if px.exists() else px.name} in {folder}")
        if px.exists():
            x, y = _open_array(px), _open_array(py)
            if x.ndim < 2:
                raise DataError(f"npy: {px} is {x.shape}: x needs a sample axis after the row axis, (N, features) "
                                f"or (N, C, H, W); for one feature per row save x.reshape(-1, 1)")
            if len(x) != len(y) or y.ndim not in (1, 2):
                raise DataError(f"npy: {px.name} {x.shape} and {py.name} {y.shape} must be (N, ...) and "
                                f"(N,) or (N, k) with the same N")
            if len(x) == 0:
                raise DataError(f"npy: {px} has no rows; remove {part}_x.npy and {part}_y.npy to carve "
                                f"{part} out of train instead" if part != "train" else f"npy: {px} has no rows")
            given[part] = (x, y, (px, py))
    x_tr, y_tr, _ = given["train"]
    shapes = {p: a[0].shape[1:] for p, a in given.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"npy: the splits' samples differ in shape: {shapes}")
    int_y = _is_ids(y_tr.dtype)
    kind = info_json.get("input") or _kind_of(x_tr.dtype)
    if kind == "image" and "input" not in info_json and int_y and y_tr.ndim == 2 and y_tr.shape == x_tr.shape:
        kind = "tokens"  # (N, T) bytes with (N, T) integer targets: a byte-level corpus, not images
    if kind == "image" and x_tr.dtype != np.uint8:
        raise DataError(f"npy: info.json says input image, which means uint8 pixels; train_x.npy is {x_tr.dtype}")
    if kind == "tokens" and not np.issubdtype(x_tr.dtype, np.integer):
        raise DataError(f"npy: token input must be integers; train_x.npy is {x_tr.dtype}")
    task = info_json.get("task") or (
        "language_model" if int_y and y_tr.ndim == 2 and kind == "tokens" and y_tr.shape == x_tr.shape
        else "classify" if int_y and y_tr.ndim == 1 else "regress")

    num_classes = class_names = vocab_size = None
    if task in ("classify", "language_model", "seq2seq") and not int_y:
        raise DataError(f"npy: task {task} needs integer ids in y; train_y.npy is {y_tr.dtype}")
    if task == "classify" and y_tr.ndim != 1:
        raise DataError(f"npy: task classify needs y of shape (N,); train_y.npy is {y_tr.shape}")
    if kind != "tokens":
        _check_finite(given)
    if task == "classify":
        num_classes = _class_count(given, info_json, folder)
        names = info_json.get("class_names")
        class_names = tuple(str(c) for c in names) if names else tuple(str(c) for c in range(num_classes))
        if len(class_names) != num_classes:
            raise DataError(f"npy: info.json has {len(class_names)} class_names for {num_classes} classes")
    if kind == "tokens":
        ranges = [_chunked_range(x) for x, _, _ in given.values()]
        if task in ("language_model", "seq2seq"):
            ranges += [_chunked_range(y) for _, y, _ in given.values()]
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        if lo < 0:
            raise DataError(f"npy: token ids must be >= 0; found {lo} in {folder}")
        vocab_size = int(info_json.get("vocab_size") or hi + 1)
        if hi >= vocab_size:
            raise DataError(f"npy: token id {hi} is out of range for vocab_size {vocab_size} (info.json)")

    def split(part: str, rows: np.ndarray | None = None) -> DiskSplit:
        x, y, paths = given[part]
        return DiskSplit(x, y, kind, rows, paths)

    # Missing val/test parts come out of train at fixed positions (SPLIT_SEED), stratified for classes.
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
    info = DataInfo(f"npy:{arg}" if arg else "npy", tuple(int(d) for d in x_tr.shape[1:]),
                    "long" if kind == "tokens" else "float", task, num_classes, class_names,
                    vocab_size=vocab_size, source=str(folder))
    return Dataset(info, train, val, test)


def write_npy(folder: str | Path, dataset: Dataset, *, images_as_uint8: bool = False) -> Path:
    """Write a data set's three splits as ``npy:FOLDER`` files (and its info.json).

    ``images_as_uint8`` stores float images in [0, 1] as bytes (x * 255, rounded): 4x smaller,
    exact for data that came from bytes (MNIST, CIFAR-10), within 1/510 otherwise (digits has
    17 grey levels). Values outside [0, 1] are refused: those are features, not pixels.
    """
    folder = Path(folder)
    info = dataset.info
    parts = {}
    for part in ("train", "val", "test"):
        split = getattr(dataset, part)
        x, y = (split.x, split.y) if isinstance(split, Split) else split.slice(0, len(split))
        parts[part] = (x.cpu().numpy(), y.cpu().numpy())
    if images_as_uint8:
        if info.input_dtype != "float":
            raise DataError(f"--uint8 stores images as bytes; {info.name} has token input")
        lo = min(float(x.min()) for x, _ in parts.values() if x.size)
        hi = max(float(x.max()) for x, _ in parts.values() if x.size)
        if lo < 0 or hi > 1:
            raise DataError(f"--uint8 stores images with values in [0, 1] as bytes; {info.name} has values in "
                            f"[{lo:.3g}, {hi:.3g}] (features, not pixels): export without --uint8")
    folder.mkdir(parents=True, exist_ok=True)
    for part, (x, y) in parts.items():
        if images_as_uint8:
            x = np.rint(x * 255.0).astype(np.uint8)
        np.save(folder / f"{part}_x.npy", x)
        np.save(folder / f"{part}_y.npy", y)
    meta = {"task": info.task, "input": "tokens" if info.input_dtype == "long" else
            ("image" if images_as_uint8 else "float")}
    meta |= {k: v for k, v in (("num_classes", info.num_classes), ("vocab_size", info.vocab_size),
                               ("class_names", list(info.class_names or []) or None)) if v is not None}
    (folder / "info.json").write_text(json.dumps(meta, indent=1))
    return folder
