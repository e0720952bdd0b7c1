"""One place that turns "a store, a path or nothing" into a run store (Optuna's
``get_storage()``): every function that takes ``store=`` passes it through :func:`open_store`."""

from __future__ import annotations

import os
from pathlib import Path

from ..core import StoreError
from ._base import RunStorage
from ._sqlite import SQLiteRunStorage

__all__ = ["open_store"]


def open_store(store: RunStorage | str | os.PathLike | None = None) -> RunStorage:
    """The run store for ``store``: a :class:`RunStorage` is returned as it is, a path is the
    root folder of an SQLite store, and None is the default root (``$ARCHLAB_HOME``, else
    ``./archlab-runs``). Nothing is created until the first write.

    >>> import tempfile
    >>> s = open_store(tempfile.mkdtemp())
    >>> open_store(s) is s, s.list_runs(status="finished")
    (True, [])
    """
    if isinstance(store, RunStorage):
        return store
    if store is None or isinstance(store, str | os.PathLike):
        return SQLiteRunStorage(None if store is None else Path(store))
    raise StoreError(
        f"store: expected a run store, a folder path or None. Received: {type(store).__name__} "
        f"{store!r:.60}; pass the store's folder (e.g. store='archlab-runs')"
    )
