"""The data a comparison (and a cross-validated search) looks at: one data cache, the pooled
development split, and the k folds built from it. `compare` and `search --cv` both use these,
so a fold means the same samples in both.

Folds are stratified for classification (scikit-learn's StratifiedKFold, else KFold),
shuffled with `seed + repeat`; the test split is never part of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..core import DataError
from ..data import Dataset, Split, format_size, load_dataset
from ..layers import cat_inputs

# Data sets loaded in this process, by everything that determines them: a comparison or a
# search reads its data once, however many folds, candidates or trials use it.
_DATA_CACHE: dict[tuple[str, int, str | None, str | None], Dataset] = {}


def cached_dataset(uri: str, seed: int = 0, root: str | None = None, target: str | None = None) -> Dataset:
    """`load_dataset(uri, seed=seed, root=root, target=target)`, loaded once per process."""
    key = (uri, seed, root, target)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(uri, seed=seed, root=root, target=target)
    return _DATA_CACHE[key]


def development_split(ds: Dataset) -> Split:
    """Train and validation pooled: the data the comparison may look at."""
    if not (isinstance(ds.train, Split) and isinstance(ds.val, Split)):
        need = sum(p.nbytes for p in (ds.train, ds.val) if not isinstance(p, Split))
        raise DataError(f"{ds.info.name}: cross-validation pools the train and validation data in memory "
                        f"({format_size(need)} decoded), but this data set streams from disk; raise "
                        f"ARCHLAB_MEMORY_LIMIT above that (or, in `archlab search`, drop --cv; or train the "
                        f"candidates one by one with `archlab train`)")
    return Split(cat_inputs([ds.train.x, ds.val.x]), torch.cat([ds.train.y, ds.val.y]))


def fold_indices(y: torch.Tensor, cv: int, repeat: int, seed: int, stratified: bool) -> list[tuple[Any, Any]]:
    """(train indices, validation indices) of each of the `cv` folds of labels `y`."""
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = y.cpu().numpy()
    if stratified:
        counts = [c for c in torch.bincount(y.cpu()).tolist() if c > 0]
        smallest = min(counts) if counts else 0
        if smallest < cv:
            raise DataError(f"--cv {cv}: the smallest class has only {smallest} samples; use --cv {max(2, smallest)} or fewer")
        splitter: Any = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed + repeat)
    else:
        splitter = KFold(n_splits=cv, shuffle=True, random_state=seed + repeat)
    return list(splitter.split(labels.reshape(len(labels), -1), labels if stratified else None))


def fold_datasets(ds: Dataset, cv: int, *, repeat: int = 0, seed: int = 0, stratified: bool = True,
                  only: int | None = None) -> Iterator[Dataset]:
    """The `cv` fold data sets of `ds`, one at a time (each copies its part of the data):
    a fold's train part for training, its held-out part as the validation split, and an
    empty test split. `only=k` yields fold k alone.

    >>> from archlab.data import load_dataset
    >>> folds = list(fold_datasets(load_dataset("digits"), 3))
    >>> [len(f.train) + len(f.val) for f in folds] == [len(development_split(load_dataset("digits")))] * 3
    True
    """
    dev = development_split(ds)
    empty = Split(dev.x[:0], dev.y[:0])
    for k, (train_idx, val_idx) in enumerate(fold_indices(dev.y, cv, repeat, seed, stratified)):
        if only is not None and k != only:
            continue
        tr, va = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
        yield Dataset(ds.info, Split(dev.x[tr], dev.y[tr]), Split(dev.x[va], dev.y[va]), empty)
