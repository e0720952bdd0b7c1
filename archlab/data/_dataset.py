"""Data sets: read from disk (never downloaded), split, and served as in-memory tensors
(data larger than memory is streamed from disk instead: `_ondisk`).

Every loader returns a `Dataset` of three `Split`s whose tensors are already in their final
dtype and layout, so the training loop only slices them (`iterate_batches`). Loaders are
registered by name and addressed by a uri, ``NAME`` or ``NAME:ARG`` (`load_dataset`, in
`_load`):

    digits                      scikit-learn's bundled 8x8 digits (the default; no files)
    digits-qa[?n=4]             two inputs: a digits image and a question ("plus three"), answer
                                (digit + 3) mod 10; needs both inputs (no files)  (_multimodal)
    mnist[:PATH]                the four MNIST IDX files, plain or .gz
    fashion-mnist[:PATH]        the same format, Fashion-MNIST's class names
    cifar10[:PATH]              CIFAR-10 python batches: a folder or the .tar.gz
    csv:PATH[?categorical=A,B&fill=mean&text=C]   a table with a header row; `target` names the
                                target column, by default the last one; text columns
                                become named token inputs beside `features`      (_tables)
    synthetic:images?n=..&shape=1x28x28&classes=10   learnable random images for benchmarks
    imdb[:PATH]                 IMDB reviews: aclImdb folders or a text,label CSV  (_text)
    text:PATH | text:stdlib     language modelling on a text corpus                (_text)
    seq:copy|reverse|sort|add   synthetic seq2seq tasks                            (_text)
    npy:FOLDER                  .npy arrays, memory-mapped; streamed when larger than memory;
                                PART_x_NAME.npy for several named inputs            (_ondisk)

The image loaders live in `_images`, csv in `_tables`, digits-qa in `_multimodal`; this module
is the core they share (records, the registry, splitting, batching).

Splits: a data set without an official test split gives 20% of its rows to test and
``val_fraction`` (default 10%) to validation, stratified by class; each split asked for gets
at least one row, and a data set too small to leave a training row as well is refused.

Errors are one-line `DataError`s that name the file and, for missing files, where to put them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import DataError, Registry
from ..layers import Inputs

__all__ = [
    "DATASETS",
    "TASK_NAMES",
    "Augment",
    "MAX_CLASSES",
    "DataInfo",
    "Dataset",
    "Split",
    "iterate_batches",
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
# The most classes a data set may have: class names are made for each, and one bad label
# (a class id of 10**9) must be an error, not a 10**9-name tuple.
MAX_CLASSES = 100_000
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
    # What the loader decided that a user should hear about, one line each as "topic: text"
    # (csv: "target: column 'y' (the last column, ...)"); `archlab data` and training print them.
    notes: tuple[str, ...] = field(default=(), compare=False)
    # A table's input columns, one name per input (csv: a numeric column's header, or
    # "column=value" for each one-hot input of a categorical one); None where inputs are pixels or tokens.
    feature_names: tuple[str, ...] | None = field(default=None, compare=False)
    # JSON-able: what the loader fitted on the train split that a new input needs to become a
    # model input (csv: each column's mean and deviation or categories; imdb: length, padding).
    # `archlab.data.input_preprocessing` completes it; `archlab predict` applies it.
    preprocessing: Mapping[str, Any] | None = field(default=None, hash=False)
    # Several named inputs, in order: name -> {"shape": [...], "dtype": "float"|"long"} (and "vocab"
    # for token ids); then each split's x is an `archlab.layers.Inputs` of those tensors, and
    # input_shape / input_dtype describe the first. None where the data has one unnamed x.
    inputs: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.tokenizer is not None:  # a plain copy: read-only store records become dicts
            object.__setattr__(self, "tokenizer", _plain(self.tokenizer))
        if self.preprocessing is not None:
            object.__setattr__(self, "preprocessing", _plain(self.preprocessing))
        if self.inputs is not None:
            object.__setattr__(self, "inputs", _plain(self.inputs))
        object.__setattr__(self, "notes", tuple(self.notes))
        if self.feature_names is not None:
            object.__setattr__(self, "feature_names", tuple(self.feature_names))

    def named_inputs(self) -> dict[str, tuple[tuple[int, ...], str]] | None:
        """name -> (per-sample shape, dtype) of each named input, what `Spec.with_input(named=)` takes."""
        if self.inputs is None:
            return None
        return {name: (tuple(d["shape"]), d["dtype"]) for name, d in self.inputs.items()}

    def vars(self) -> dict[str, int]:
        """Spec vars derived from the data, e.g. ``{"num_classes": 10}`` (non-None only)."""
        found = {"num_classes": self.num_classes, "vocab_size": self.vocab_size}
        return {k: v for k, v in found.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # `inputs` is already plain data
        d["input_shape"] = list(self.input_shape)
        d["class_names"] = None if self.class_names is None else list(self.class_names)
        d["notes"] = list(self.notes)
        d["feature_names"] = None if self.feature_names is None else list(self.feature_names)
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
    """One split as two aligned tensors: x (N, *input_shape) and y (N,) or (N, k); x is an
    `Inputs` of named tensors where the data set has several inputs (`DataInfo.inputs`)."""

    x: Tensor | Inputs
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
    def take(self, indices: Tensor) -> tuple[Tensor | Inputs, Tensor]:
        """The rows at `indices`, in that order (one `index_select`: a fresh contiguous batch)."""
        return self.x.index_select(0, indices), self.y.index_select(0, indices)

    def slice(self, start: int, stop: int) -> tuple[Tensor | Inputs, Tensor]:
        return self.x[start:stop], self.y[start:stop]

    def targets(self) -> Tensor:
        return self.y

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes the split's tensors hold (every input and the targets), as `DiskSplit.nbytes`
        counts the decoded tensors of a split on disk."""
        xs = self.x.values() if isinstance(self.x, Inputs) else (self.x,)
        return sum(t.element_size() * t.numel() for t in (*xs, self.y))


@dataclass
class Dataset:
    """Three splits; each a `Split` in memory or, for data larger than memory, a DiskSplit."""

    info: DataInfo
    train: Split
    val: Split
    test: Split


# --------------------------------------------------------------------------- the contract


def _check(ds: Dataset) -> None:
    """Catch a loader (possibly a user's) that breaks the contract the trainer relies on."""
    info = ds.info
    x_dtype = torch.float32 if info.input_dtype == "float" else torch.int64
    for part, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        where = f"{info.name}: {part} split"
        if not isinstance(split, Split):  # on disk: its loader checked the ranges; probe the types
            split = Split(*split.slice(0, 1))
        if info.inputs is not None:
            _check_named(info, split, where)
        elif not isinstance(split.x, Tensor):
            raise DataError(f"{where}: x is {split.x!r}, several named inputs, but the data set's info "
                            f"declares none (DataInfo.inputs)")
        elif tuple(split.x.shape[1:]) != info.input_shape or split.x.dtype != x_dtype:
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
        if info.input_dtype == "long" and info.vocab_size is not None and info.inputs is None:
            if not _ids_in_range(split.x, info.vocab_size):
                raise DataError(f"{where}: input ids must be in 0..{info.vocab_size - 1}, got "
                                f"{int(split.x.min())}..{int(split.x.max())}")
    if info.task == "seq2seq":
        lengths = {s.y.shape[1] for s in (ds.train, ds.val, ds.test)}
        if len(lengths) > 1:
            raise DataError(f"{info.name}: seq2seq target length differs between splits: "
                            f"{sorted(lengths)}")


def _check_named(info: DataInfo, split: Split, where: str) -> None:
    """Each named input: present, of its declared shape and dtype, token ids within its vocabulary."""
    assert info.inputs is not None
    if not isinstance(split.x, Inputs) or split.x.names != tuple(info.inputs):
        got = split.x.names if isinstance(split.x, Inputs) else "one unnamed tensor"
        raise DataError(f"{where}: x holds {got}, expected the named inputs {', '.join(info.inputs)}")
    for name, d in info.inputs.items():
        t = split.x[name]
        want = torch.float32 if d["dtype"] == "float" else torch.int64
        if tuple(t.shape[1:]) != tuple(d["shape"]) or t.dtype != want:
            raise DataError(f"{where}: input {name!r} is {tuple(t.shape)} {t.dtype}, "
                            f"expected (N, {', '.join(map(str, d['shape']))}) {want}")
        vocab = d.get("vocab")
        if vocab is not None and not _ids_in_range(t, vocab):
            raise DataError(f"{where}: input {name!r} ids must be in 0..{vocab - 1}, got "
                            f"{int(t.min())}..{int(t.max())}")


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
    n: int, test_fraction: float, val_fraction: float, seed: int, labels: np.ndarray | None = None,
    *, what: str = "data",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test), each sorted; stratified by ``labels`` when given.

    A fraction above 0 gives that split round(n * fraction) rows, and at least one (a 5-row
    table still gets a validation row); a data set with no row left to train on is refused,
    with ``what`` (the file) named in the message.

    Stratification without per-class rounding drift: each class's members, in random order,
    get keys spread evenly over [0, 1); sorting by key interleaves the classes, so any prefix
    (the test part, then the val part) holds every class in proportion, to within one sample.

    >>> [len(p) for p in _split_indices(5, 0.2, 0.1, seed=0)]
    [3, 1, 1]
    """
    n_test, n_val = (max(1, round(n * f)) if f > 0 else 0 for f in (test_fraction, val_fraction))
    if n - n_test - n_val < 1:
        asked = " and ".join(f"{f:.0%} {name}" for f, name in ((test_fraction, "test"), (val_fraction, "validation"))
                             if f > 0)
        raise DataError(f"{what}: too few rows to split off {asked} and keep a row to train on: each of those "
                        f"splits takes at least one row, so {n_test + n_val + 1} rows are needed. Received: {n} "
                        f"row{'s' if n != 1 else ''}. Add rows.")
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


def _options(name: str, query: str, defaults: Mapping[str, str | None]) -> dict[str, str | None]:
    """The uri's ``?a=1&b=2`` over ``defaults``; unknown keys are an error."""
    try:
        given = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError:
        raise DataError(f"{name}: bad options {query!r}; use e.g. "
                        f"{'&'.join(f'{k}={v}' for k, v in defaults.items() if v)}") from None
    if unknown := sorted(set(given) - set(defaults)):
        raise DataError(f"{name}: unknown option(s) {', '.join(unknown)}; "
                        f"known: {', '.join(defaults)}")
    return dict(defaults) | given


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

    def __call__(self, x: Tensor, generator: torch.Generator | None,
                 part: tuple[int, int] | None = None) -> Tensor:
        """`part` (start, total): x is rows start.. of a batch of `total` samples (one rank's part
        of the global batch). The draws are made for the whole batch and this part's are used,
        so every rank draws the same numbers and a sample gets what one process would give it."""
        if x.ndim != 4:
            raise DataError(f"augment: expects image batches (B, C, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        start, total = part if part is not None else (0, b)
        rows_ = slice(start, start + b)
        # Random draws come from the (CPU) generator so runs are reproducible, then move to x.
        if self.hflip:
            flip = (torch.rand(total, generator=generator)[rows_] < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if p := self.crop_padding:
            padded = F.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p)
            dy, dx = (torch.randint(0, 2 * p + 1, (2, total), generator=generator)[:, rows_]).to(x.device)
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

    >>> from archlab.data import load_dataset
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


