"""Data sets: read from disk (never downloaded), split, and served as in-memory tensors
(data larger than memory is streamed from disk instead: `archlab.ondisk`).

Every loader returns a `Dataset` of three `Split`s whose tensors are already in their final
dtype and layout, so the training loop only slices them (`iterate_batches`). Loaders are
registered by name and addressed by a uri, ``NAME`` or ``NAME:ARG``:

    digits                      scikit-learn's bundled 8x8 digits (the default; no files)
    mnist[:PATH]                the four MNIST IDX files, plain or .gz
    fashion-mnist[:PATH]        the same format, Fashion-MNIST's class names
    cifar10[:PATH]              CIFAR-10 python batches: a folder or the .tar.gz
    csv:PATH                    a table with a header row; `target` names the target column
    synthetic:images?n=..&shape=1x28x28&classes=10   learnable random images for benchmarks
    imdb[:PATH]                 IMDB reviews: aclImdb folders or a text,label CSV  (archlab.text)
    text:PATH | text:stdlib     language modelling on a text corpus                (archlab.text)
    seq:copy|reverse|sort|add   synthetic seq2seq tasks                            (archlab.text)
    npy:FOLDER                  .npy arrays, memory-mapped; streamed when larger than memory (archlab.ondisk)

Errors are one-line `DataError`s that name the file and, for missing files, where to put them.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import math
import os
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DataError
from .registry import Registry

__all__ = [
    "DATASETS",
    "TASK_NAMES",
    "Augment",
    "DataInfo",
    "Dataset",
    "Split",
    "iterate_batches",
    "load_dataset",
    "num_batches",
    "register_dataset",
]

# A loader is called as loader(arg, seed=, root=, target=, val_fraction=) -> Dataset, where
# `arg` is the part of the uri after the first ':' (None when there is none).
Loader = Callable[..., "Dataset"]
DATASETS: Registry[Loader] = Registry("data set", DataError)

# The tasks the built-in loaders produce. classify: y (N,) int64 class ids; regress: y (N,) or
# (N, k) float32; language_model: x and y (N, T) int64 token ids, y = x shifted by one token;
# seq2seq: x (N, S) and y (N, U) int64 token ids (see archlab.text for the conventions).
TASK_NAMES = ("classify", "regress", "language_model", "seq2seq")
TOKEN_TASKS = ("language_model", "seq2seq")

TEST_FRACTION = 0.2  # for data sets without an official test split (digits, csv, synthetic)
SPLIT_SEED = 0  # fixed splits (digits, val of mnist/cifar) must not move when the run seed does


def register_dataset(name: str, *aliases: str) -> Callable[[Loader], Loader]:
    """Register a loader under ``name`` so ``load_dataset("name:ARG")`` finds it.

    >>> @register_dataset("ones")                                       # doctest: +SKIP
    ... def _ones(arg, *, seed, root, target, val_fraction): ...
    """
    return DATASETS.register(name, *aliases)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class DataInfo:
    """What a model and a run record need to know about a data set (no tensors)."""

    name: str
    input_shape: tuple[int, ...]
    input_dtype: str  # "float" or "long"
    task: str  # one of TASK_NAMES
    num_classes: int | None
    class_names: tuple[str, ...] | None = None
    vocab_size: int | None = None
    source: str = ""
    # JSON-able description of the tokenizer (archlab.text.tokenizer_from_dict rebuilds it).
    tokenizer: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.tokenizer is not None:  # a plain copy: read-only store records become dicts
            object.__setattr__(self, "tokenizer", _plain(self.tokenizer))

    def vars(self) -> dict[str, int]:
        """Spec vars derived from the data, e.g. ``{"num_classes": 10}`` (non-None only)."""
        found = {"num_classes": self.num_classes, "vocab_size": self.vocab_size}
        return {k: v for k, v in found.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["class_names"] = None if self.class_names is None else list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataInfo:
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        if d.get("class_names") is not None:
            d["class_names"] = tuple(d["class_names"])
        return cls(**d)


@dataclass
class Split:
    """One split as two aligned tensors: x (N, *input_shape) and y (N,) or (N, k)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"split has {self.x.shape[0]} inputs but {self.y.shape[0]} targets")
        # Slices of contiguous tensors are contiguous views: batching then costs no copy.
        self.x = self.x.contiguous()
        self.y = self.y.contiguous()

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> Split:
        """The split on ``device``: small data sets train fastest when moved once, up front."""
        return Split(self.x.to(device), self.y.to(device))

    # What the trainer asks of any split; `archlab.ondisk.DiskSplit` answers the same from disk.
    def take(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """The rows at `indices`, in that order (one `index_select`: a fresh contiguous batch)."""
        return self.x.index_select(0, indices), self.y.index_select(0, indices)

    def slice(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return self.x[start:stop], self.y[start:stop]

    def targets(self) -> Tensor:
        return self.y

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape[1:])


@dataclass
class Dataset:
    """Three splits; each a `Split` in memory or, for data larger than memory, a DiskSplit."""

    info: DataInfo
    train: Split
    val: Split
    test: Split


# --------------------------------------------------------------------------- entry point


def load_dataset(
    uri: str,
    *,
    seed: int = 0,
    root: str | Path | None = None,
    target: str | None = None,
    val_fraction: float = 0.1,
    stream: bool | None = None,
) -> Dataset:
    """Load a data set by uri (see the module docstring for the forms).

    ``val_fraction`` is a fraction of all rows for data sets without an official test split
    (digits, csv, synthetic) and a fraction of the official train split otherwise.
    ``stream``: None reads data into memory when it fits the budget and streams larger
    ``npy:`` data from disk; True streams every split; False reads everything (archlab.ondisk).

    >>> ds = load_dataset("digits")
    >>> ds.info.input_shape, ds.info.num_classes, len(ds.train) + len(ds.val) + len(ds.test)
    ((1, 8, 8), 10, 1797)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    name, sep, arg = uri.partition(":")
    if not sep and name.lower().endswith(".csv"):  # a bare path to a table
        name, arg = "csv", uri
    loader = DATASETS.get(name)
    if target is not None and name != "csv":
        raise DataError(f"{name}: target={target!r} only applies to csv data sets")
    dataset = loader(
        arg or None,
        seed=seed,
        root=None if root is None else Path(root).expanduser(),
        target=target,
        val_fraction=val_fraction,
    )
    _check(dataset)
    from .ondisk import serve

    return serve(dataset, stream)


def _check(ds: Dataset) -> None:
    """Catch a loader (possibly a user's) that breaks the contract the trainer relies on."""
    info = ds.info
    x_dtype = torch.float32 if info.input_dtype == "float" else torch.int64
    for part, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        where = f"{info.name}: {part} split"
        if not isinstance(split, Split):  # on disk: its loader checked the ranges; probe the types
            split = Split(*split.slice(0, 1))
        if tuple(split.x.shape[1:]) != info.input_shape or split.x.dtype != x_dtype:
            raise DataError(f"{where}: x is {tuple(split.x.shape)} {split.x.dtype}, "
                            f"expected (N, {', '.join(map(str, info.input_shape))}) {x_dtype}")
        if info.task == "classify" and (split.y.dtype != torch.int64 or split.y.ndim != 1):
            raise DataError(f"{where}: classify targets must be (N,) int64, got {split.y.dtype}")
        if info.task in TOKEN_TASKS:
            if info.vocab_size is None or info.input_dtype != "long":
                raise DataError(f"{info.name}: task {info.task} needs input_dtype 'long' and a "
                                f"vocab_size")
            if split.y.dtype != torch.int64 or split.y.ndim != 2:
                raise DataError(f"{where}: {info.task} targets must be (N, L) int64 token ids, "
                                f"got {tuple(split.y.shape)} {split.y.dtype}")
            if info.task == "language_model" and split.y.shape != split.x.shape:
                raise DataError(f"{where}: language_model targets must have the inputs' shape "
                                f"{tuple(split.x.shape)}, got {tuple(split.y.shape)}")
            if not _ids_in_range(split.y, info.vocab_size):
                raise DataError(f"{where}: target ids must be in 0..{info.vocab_size - 1}, got "
                                f"{int(split.y.min())}..{int(split.y.max())}")
        if info.input_dtype == "long" and info.vocab_size is not None:
            if not _ids_in_range(split.x, info.vocab_size):
                raise DataError(f"{where}: input ids must be in 0..{info.vocab_size - 1}, got "
                                f"{int(split.x.min())}..{int(split.x.max())}")
    if info.task == "seq2seq":
        lengths = {s.y.shape[1] for s in (ds.train, ds.val, ds.test)}
        if len(lengths) > 1:
            raise DataError(f"{info.name}: seq2seq target length differs between splits: "
                            f"{sorted(lengths)}")


def _ids_in_range(t: Tensor, vocab_size: int) -> bool:
    return t.numel() == 0 or (int(t.min()) >= 0 and int(t.max()) < vocab_size)


def _plain(value: Any) -> Any:
    """A JSON-like copy: mappings become dicts, tuples and lists become lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- shared helpers


def _split_indices(
    n: int, test_fraction: float, val_fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test), each sorted; stratified by ``labels`` when given.

    Stratification without per-class rounding drift: each class's members, in random order,
    get keys spread evenly over [0, 1); sorting by key interleaves the classes, so any prefix
    (the test part, then the val part) holds every class in proportion, to within one sample.
    """
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_test - n_val < 1:
        raise DataError(f"too few rows ({n}) to split off {test_fraction:.0%} test and "
                        f"{val_fraction:.0%} validation")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if labels is not None:
        _, cls, counts = np.unique(labels[order], return_inverse=True, return_counts=True)
        by_class = np.argsort(cls, kind="stable")
        rank = np.empty(n)
        rank[by_class] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        key = (rank + rng.random(len(counts))[cls]) / counts[cls]
        order = order[np.argsort(key, kind="stable")]
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return np.sort(train), np.sort(val), np.sort(test)


def _images(u8: np.ndarray) -> Tensor:
    """uint8 pixels -> float32 in [0, 1], in one pass."""
    return torch.from_numpy(np.ascontiguousarray(u8)).to(torch.float32).div_(255.0)


def _labels(y: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))


def _image_dataset(info: DataInfo, x_tr, y_tr, x_te, y_te, val_fraction: float) -> Dataset:
    """Train/val/test from an official train/test pair; val is stratified out of train."""
    train, val, _ = _split_indices(len(y_tr), 0.0, val_fraction, SPLIT_SEED, labels=y_tr)
    return Dataset(
        info,
        train=Split(_images(x_tr[train]), _labels(y_tr[train])),
        val=Split(_images(x_tr[val]), _labels(y_tr[val])),
        test=Split(_images(x_te), _labels(y_te)),
    )


def _resolve(arg: str, root: Path | None) -> Path:
    """A user-given path; a relative one is tried under ``root`` first."""
    path = Path(arg).expanduser()
    if not path.is_absolute() and root is not None and (root / path).exists():
        return root / path
    return path


def _data_folder(name: str, arg: str | None, root: Path | None, what: str) -> Path:
    """Where a file-based data set lives: PATH, else $ARCHLAB_DATA/<name>, else root."""
    if arg:
        path = _resolve(arg, root)
        if not path.exists():
            raise DataError(f"{name}: folder not found: {path}. Put {what} there or pass "
                            f"--data {name}:PATH (nothing is downloaded).")
        return path
    tried = []
    if os.environ.get("ARCHLAB_DATA"):
        tried.append(Path(os.environ["ARCHLAB_DATA"]).expanduser() / name)
    if root is not None:
        tried += [root / name, root]
    for path in tried:
        if path.is_dir():
            return path
    where = f"looked in {' and '.join(map(str, tried))}" if tried else "$ARCHLAB_DATA is not set"
    raise DataError(f"{name}: no data folder found ({where}). Put {what} in "
                    f"$ARCHLAB_DATA/{name} or pass --data {name}:PATH (nothing is downloaded).")


def _no_arg(name: str, arg: str | None) -> None:
    if arg:
        raise DataError(f"{name}: takes no argument, got {name}:{arg}")


# --------------------------------------------------------------------------- digits


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), sklearn.__version__


@register_dataset("digits")
def _load_digits(arg, *, seed, root, target, val_fraction) -> Dataset:
    _no_arg("digits", arg)
    x, y, version = _digits_arrays()
    x = x.reshape(-1, 1, 8, 8) / 16.0  # pixel counts 0..16 -> [0, 1]
    # The split ignores `seed`: every run on digits is scored on the same test images.
    parts = _split_indices(len(y), TEST_FRACTION, val_fraction, SPLIT_SEED, labels=y)
    # torch.tensor copies, so callers may modify their tensors without touching the cache.
    train, val, test = (Split(torch.tensor(x[i]), torch.tensor(y[i])) for i in parts)
    info = DataInfo("digits", (1, 8, 8), "float", "classify", 10,
                    tuple(str(d) for d in range(10)),
                    source=f"sklearn.datasets.load_digits (scikit-learn {version})")
    return Dataset(info, train, val, test)


# --------------------------------------------------------------------------- MNIST (IDX)

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _read_idx(folder: Path, base: str, name: str, title: str) -> np.ndarray:
    """One IDX file (``base`` or ``base.gz``) as a uint8 array, validated against its header."""
    path = folder / base
    if not path.is_file():
        path = folder / (base + ".gz")
    if not path.is_file():
        raise DataError(f"{name}: file not found: {folder / base}(.gz). Put the four {title} "
                        f"IDX files in {folder} or pass --data {name}:PATH (nothing is downloaded).")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: cannot read {path}: {e}") from None

    # Header: two zero bytes, a type code (0x08 = uint8), the number of dims, then each dim
    # as a big-endian uint32. Images are 0x00000803, labels 0x00000801.
    ndim = 3 if "images" in base else 1
    expected = 0x0800 | ndim
    if len(data) < 4:
        raise DataError(f"{name}: {path} is truncated: {len(data)} bytes, no IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected:
        raise DataError(f"{name}: wrong magic number in {path}: expected 0x{expected:08X} "
                        f"(uint8, {ndim}-D), got 0x{magic:08X}; is it an IDX {base} file?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: {path} is truncated: {len(data)} bytes, header needs {header}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = header + math.prod(dims)
    if len(data) != size:
        problem = "is truncated" if len(data) < size else "has trailing bytes"
        raise DataError(f"{name}: {path} {problem}: header declares dims {dims} = {size} bytes, "
                        f"file has {len(data)}")
    # bytearray: a writable buffer, so torch.from_numpy later needs no extra copy or warning.
    return np.frombuffer(bytearray(data), np.uint8, offset=header).reshape(dims)


def _load_idx_set(name: str, title: str, class_names: tuple[str, ...], arg, root, val_fraction):
    folder = _data_folder(name, arg, root, f"the four {title} IDX files")
    x_tr, y_tr, x_te, y_te = (_read_idx(folder, base, name, title) for base in _IDX_FILES)
    for (x, y), part in (((x_tr, y_tr), "train"), ((x_te, y_te), "t10k")):
        if len(x) != len(y):
            raise DataError(f"{name}: {folder}: {part} has {len(x)} images but {len(y)} labels")
        if len(y) and y.max() >= len(class_names):
            raise DataError(f"{name}: {folder}: {part} label {y.max()} is out of range "
                            f"0..{len(class_names) - 1}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{name}: {folder}: train images are {x_tr.shape[1:]} but t10k images "
                        f"are {x_te.shape[1:]}")
    h, w = x_tr.shape[1:]
    info = DataInfo(name, (1, h, w), "float", "classify", len(class_names), class_names,
                    source=str(folder))
    return _image_dataset(info, x_tr[:, None], y_tr, x_te[:, None], y_te, val_fraction)


@register_dataset("mnist")
def _load_mnist(arg, *, seed, root, target, val_fraction) -> Dataset:
    names = tuple(str(d) for d in range(10))
    return _load_idx_set("mnist", "MNIST", names, arg, root, val_fraction)


@register_dataset("fashion-mnist", "fashion_mnist")
def _load_fashion_mnist(arg, *, seed, root, target, val_fraction) -> Dataset:
    return _load_idx_set("fashion-mnist", "Fashion-MNIST", _FASHION, arg, root, val_fraction)


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_DIR, _CIFAR_TAR = "cifar-10-batches-py", "cifar-10-python.tar.gz"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck")

try:  # numpy >= 2 moved numpy.core to numpy._core (the old name still appears in old pickles)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

# The only globals a CIFAR batch needs: a numpy array is rebuilt from ndarray + dtype by
# _reconstruct (pickle protocols 2-4) or _frombuffer (protocol 5). Anything else is refused
# *before* it is called, so a hostile pickle cannot run code.
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    (module, "_reconstruct"): _np_multiarray._reconstruct
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
} | {
    (module, "_frombuffer"): _np_numeric._frombuffer
    for module in ("numpy.core.numeric", "numpy._core.numeric")
} | {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}") from None


def _unpickle(blob: bytes, where: str) -> dict:
    try:
        # encoding="bytes": the batches were written by Python 2, their str keys become bytes.
        obj = _SafeUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as e:  # any failure inside a corrupt pickle is the file's fault
        msg = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cifar10: corrupt or unsafe pickle {where}: {msg}") from None
    if not isinstance(obj, dict):
        raise DataError(f"cifar10: {where} holds a {type(obj).__name__}, expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


class _CifarSource:
    """The batch files, from a folder or from inside the .tar.gz (read in one streaming pass,
    never extracted to disk)."""

    def __init__(self, location: Path):
        self.folder: Path | None = None
        self.blobs: dict[str, bytes] = {}
        tar = None
        if location.is_file() and location.name.endswith((".tar.gz", ".tgz")):
            tar = location
        elif (location / "data_batch_1").exists() or (location / "test_batch").exists():
            self.folder = location
        elif (location / _CIFAR_DIR).is_dir():
            self.folder = location / _CIFAR_DIR
        elif (location / _CIFAR_TAR).is_file():
            tar = location / _CIFAR_TAR
        else:
            raise DataError(f"cifar10: no CIFAR-10 batches in {location}. Put {_CIFAR_DIR}/ or "
                            f"{_CIFAR_TAR} there or pass --data cifar10:PATH (nothing is downloaded).")
        self.source = str(self.folder or tar)
        if tar is not None:
            self._read_tar(tar)

    def _read_tar(self, tar_path: Path) -> None:
        wanted = {*_CIFAR_TRAIN, "test_batch", "batches.meta"}
        try:
            with tarfile.open(tar_path, "r|gz") as tar:  # "|": a stream, no backward seeks
                for member in tar:
                    base = PurePosixPath(member.name).name
                    if member.isfile() and base in wanted:
                        self.blobs[base] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DataError(f"cifar10: cannot read {tar_path}: {' '.join(str(e).split())}") from None

    def where(self, base: str) -> str:
        return str(self.folder / base) if self.folder else f"{self.source}:{_CIFAR_DIR}/{base}"

    def read(self, base: str, required: bool = True) -> dict | None:
        if self.folder is not None and (self.folder / base).is_file():
            blob: bytes | None = (self.folder / base).read_bytes()
        else:
            blob = self.blobs.get(base)
        if blob is None:
            if not required:
                return None
            raise DataError(f"cifar10: file not found: {self.where(base)}. Put the CIFAR-10 "
                            f"python batches ({_CIFAR_DIR}/) there or pass --data cifar10:PATH "
                            f"(nothing is downloaded).")
        return _unpickle(blob, self.where(base))

    def batch(self, base: str) -> tuple[np.ndarray, np.ndarray]:
        d, where = self.read(base), self.where(base)
        data, labels = d.get("data"), d.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
                or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"cifar10: {where}: 'data' must be a uint8 array (N, 3072), got {got}")
        y = np.asarray(labels if labels is not None else [], dtype=np.int64)
        if y.shape != (len(data),) or (len(y) and (y.min() < 0 or y.max() > 9)):
            raise DataError(f"cifar10: {where}: 'labels' must be {len(data)} ints in 0..9")
        # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major: (3, 32, 32).
        return data.reshape(-1, 3, 32, 32), y


@register_dataset("cifar10", "cifar-10")
def _load_cifar10(arg, *, seed, root, target, val_fraction) -> Dataset:
    src = _CifarSource(_data_folder("cifar10", arg, root, f"{_CIFAR_DIR}/ or {_CIFAR_TAR}"))
    parts = [src.batch(base) for base in _CIFAR_TRAIN]
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_te, y_te = src.batch("test_batch")
    names = _CIFAR_NAMES
    meta = src.read("batches.meta", required=False)
    if meta is not None and meta.get("label_names") is not None:
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"])
        if len(names) != 10:
            raise DataError(f"cifar10: {src.where('batches.meta')}: expected 10 label_names, "
                            f"got {len(names)}")
    info = DataInfo("cifar10", (3, 32, 32), "float", "classify", 10, names, source=src.source)
    return _image_dataset(info, x_tr, y_tr, x_te, y_te, val_fraction)


# --------------------------------------------------------------------------- CSV

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


# --------------------------------------------------------------------------- synthetic


@register_dataset("synthetic")
def _load_synthetic(arg, *, seed, root, target, val_fraction) -> Dataset:
    """``synthetic:images?n=2000&shape=1x28x28&classes=10&noise=0.5``: class templates + noise.

    The templates are fixed (a property of the task); ``seed`` draws the samples, so runs with
    different seeds see fresh samples of the same problem.
    """
    kind, _, query = (arg or "images").partition("?")
    if kind != "images":
        raise DataError(f"synthetic: unknown kind {kind!r}; supported: images")
    opts = {"n": "2000", "shape": "1x28x28", "classes": "10", "noise": "0.5"}
    try:
        given = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError:
        raise DataError(f"synthetic: bad options {query!r}; use e.g. n=2000&shape=1x28x28") from None
    if unknown := sorted(set(given) - set(opts)):
        raise DataError(f"synthetic: unknown option(s) {', '.join(unknown)}; known: {', '.join(opts)}")
    opts |= given
    try:
        n, classes, noise = int(opts["n"]), int(opts["classes"]), float(opts["noise"])
        shape = tuple(int(d) for d in opts["shape"].lower().split("x"))
    except ValueError:
        raise DataError(f"synthetic: bad option value in {arg!r}") from None
    if n < classes or classes < 2 or min(shape) < 1 or noise < 0:
        raise DataError(f"synthetic: need n >= classes >= 2, positive shape dims and noise >= 0, "
                        f"got {arg!r}")

    templates = torch.rand((classes, *shape), generator=torch.Generator().manual_seed(12345))
    g = torch.Generator().manual_seed(seed)
    y = torch.randperm(n, generator=g) % classes  # balanced classes, in random order
    x = (templates[y] + noise * torch.randn((n, *shape), generator=g)).clamp_(0.0, 1.0)
    parts = _split_indices(n, TEST_FRACTION, val_fraction, seed)
    train, val, test = (Split(x[torch.from_numpy(i)], y[torch.from_numpy(i)]) for i in parts)
    info = DataInfo(f"synthetic:{arg or 'images'}", shape, "float", "classify", classes,
                    tuple(str(c) for c in range(classes)), source="synthetic (generated)")
    return Dataset(info, train, val, test)


# --------------------------------------------------------------------------- batching


@dataclass(frozen=True)
class Augment:
    """Image augmentation on whole batches (B, C, H, W): a few tensor ops, no per-sample loop.

    >>> Augment(crop_padding=4, hflip=True)(torch.rand(8, 3, 32, 32), None).shape
    torch.Size([8, 3, 32, 32])
    """

    crop_padding: int = 0  # random crop of the zero-padded image, as RandomCrop(size, padding)
    hflip: bool = False  # mirror left-right with probability 0.5

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise DataError(f"augment: crop_padding must be >= 0, got {self.crop_padding}")

    def to_dict(self) -> dict[str, Any]:
        return {"crop_padding": self.crop_padding, "hflip": self.hflip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Augment:
        return cls(int(d.get("crop_padding", 0)), bool(d.get("hflip", False)))

    def __bool__(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def __call__(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if x.ndim != 4:
            raise DataError(f"augment: expects image batches (B, C, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        # Random draws come from the (CPU) generator so runs are reproducible, then move to x.
        if self.hflip:
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if p := self.crop_padding:
            padded = F.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p)
            dy, dx = (torch.randint(0, 2 * p + 1, (2, b), generator=generator)).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
            batch = torch.arange(b, device=x.device)[:, None, None]
            # Advanced indexing on dims 0, 2, 3 puts the broadcast (B, H, W) first: (B, H, W, C).
            x = padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()
        return x


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """How many batches `iterate_batches` yields for ``n`` samples.

    >>> num_batches(10, 4, drop_last=False), num_batches(10, 4, drop_last=True)
    (3, 2)
    """
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    augment: Augment | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of (x, y) batches, sliced from the split's tensors.

    Shuffling draws one permutation per epoch; each batch is then a single ``index_select``
    (a fresh contiguous tensor, no full-size shuffled copy held). Without shuffling, batches are
    zero-copy views. Batches move to ``device`` and are augmented there.

    >>> ds = load_dataset("digits")
    >>> sum(len(y) for _, y in iterate_batches(ds.train, 64, shuffle=True)) == len(ds.train)
    True
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    x, y, n = split.x, split.y, len(split)
    end = n - n % batch_size if drop_last else n
    order = None
    if shuffle:
        # randperm on the CPU: a CPU generator cannot draw on CUDA; move the indices once.
        order = torch.randperm(n, generator=generator).to(x.device)
    device = None if device is None else torch.device(device)
    # Host-to-GPU copies may overlap compute; pageable sources are staged safely by torch.
    non_blocking = device is not None and device.type == "cuda"
    for start in range(0, end, batch_size):
        if order is None:
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        if device is not None:
            xb = xb.to(device, non_blocking=non_blocking)
            yb = yb.to(device, non_blocking=non_blocking)
        if augment:
            xb = augment(xb, generator)
        yield xb, yb


# The text and sequence loaders (imdb, text, seq) and npy (archlab.ondisk) register
# themselves on import. Imported last: they import this module's names.
from . import ondisk as _ondisk  # noqa: E402, F401
from . import text as _text  # noqa: E402, F401
