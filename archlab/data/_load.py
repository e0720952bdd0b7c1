"""The entry point: `load_dataset(uri)` finds the uri's loader, checks what it returns, and
picks each split's path (in memory, or streamed from disk by `archlab.data._ondisk.serve`).

It sits above both the records (`_dataset`) and the on-disk path (`_ondisk`), so neither of
those imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from ..core import DataError
from ._dataset import DATASETS, Dataset, _check
from ._ondisk import serve

__all__ = ["load_dataset"]


def load_dataset(
    uri: str,
    *,
    seed: int = 0,
    root: str | Path | None = None,
    target: str | None = None,
    val_fraction: float = 0.1,
    stream: bool | None = None,
) -> Dataset:
    """Load a data set by uri (the forms are listed in `archlab.data._dataset`'s docstring).

    ``val_fraction`` is a fraction of all rows for data sets without an official test split
    (digits, csv, synthetic) and a fraction of the official train split otherwise; every split
    asked for gets at least one row. ``target`` names a csv file's target column (default: its
    last column). ``stream``: None reads data into memory when it fits the budget and streams
    larger ``npy:`` data from disk; True streams every split; False reads everything.

    >>> ds = load_dataset("digits")
    >>> ds.info.input_shape, ds.info.num_classes, len(ds.train) + len(ds.val) + len(ds.test)
    ((1, 8, 8), 10, 1797)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    name, sep, arg = uri.partition(":")
    if not sep and uri.partition("?")[0].lower().endswith(".csv"):  # a bare path to a table
        name, arg = "csv", uri
    elif "?" in name:  # options without an argument, `digits-qa?n=8`: the loader reads arg "?n=8"
        name, _, query = uri.partition("?")
        arg = "?" + query
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
    return serve(dataset, stream)
