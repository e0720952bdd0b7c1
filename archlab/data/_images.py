"""Image data sets: scikit-learn's digits, MNIST and Fashion-MNIST (IDX files), CIFAR-10
(python batches, read through a restricted unpickler) and synthetic images for benchmarks.
Each loader registers itself in `archlab.data.DATASETS`; `archlab.data` imports this module."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
import zlib
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch
from torch import Tensor

from ..core import DataError
from ._dataset import (
    SPLIT_SEED,
    TEST_FRACTION,
    DataInfo,
    Dataset,
    Split,
    _data_folder,
    _no_arg,
    _split_indices,
    register_dataset,
)

# --------------------------------------------------------------------------- image helpers


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


# --------------------------------------------------------------------------- digits


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), sklearn.__version__


def _digits_images(val_fraction: float) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], str]:
    """Digits' images (N, 1, 8, 8) in [0, 1], labels (N,), the (train, val, test) image indices
    and the scikit-learn version; `digits-qa` (`_multimodal`) splits its images the same way."""
    x, y, version = _digits_arrays()
    x = x.reshape(-1, 1, 8, 8) / 16.0  # pixel counts 0..16 -> [0, 1]
    # The split ignores the run's seed: every run on digits is scored on the same test images.
    parts = _split_indices(len(y), TEST_FRACTION, val_fraction, SPLIT_SEED, labels=y)
    return x, y, parts, version


@register_dataset("digits")
def _load_digits(arg, *, seed, root, target, val_fraction) -> Dataset:
    _no_arg("digits", arg)
    x, y, parts, version = _digits_images(val_fraction)
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
