"""One place that turns "a store, a URL, a path or nothing" into a run store (Optuna's
``get_storage()``): every function that takes ``store=`` passes it through :func:`open_store`."""

from __future__ import annotations

import os
from pathlib import Path

from ..core import StoreError
from ._base import RunStorage
from ._postgres import PostgresRunStorage, is_postgres_url
from ._sqlite import SQLiteRunStorage

__all__ = ["STORE_ENV", "open_store"]

#: The environment variable that selects the run store: a PostgreSQL URL or a folder.
STORE_ENV = "ARCHLAB_STORE"


def open_store(store: RunStorage | str | os.PathLike | None = None) -> RunStorage:
    """The run store for ``store``: a :class:`RunStorage` is returned as it is; a
    ``postgresql://`` URL is a PostgreSQL store (its artifacts under ``$ARCHLAB_HOME``); any
    other path is the root folder of an SQLite store. None is ``$ARCHLAB_STORE`` when set
    (a URL or a folder), else the SQLite store in ``$ARCHLAB_HOME`` (else ``./archlab-runs``).
    Nothing is created until the first write.

    >>> import tempfile
    >>> s = open_store(tempfile.mkdtemp())
    >>> open_store(s) is s, s.list_runs(status="finished")
    (True, [])
    >>> open_store("postgresql://ann:secret@db/runs")  # doctest: +ELLIPSIS
    PostgresRunStorage('postgresql://ann:***@db/runs', ...)
    """
    if isinstance(store, RunStorage):
        return store
    if store is None:
        store = os.environ.get(STORE_ENV) or None
    if is_postgres_url(store):
        return PostgresRunStorage(store)  # type: ignore[arg-type]
    if isinstance(store, str) and "://" in store:
        raise StoreError(f"store {store.split('://')[0]}://...: expected a postgresql:// URL or a folder. "
                         f"Received: a {store.split('://')[0]} URL; set {STORE_ENV} (or --store) to "
                         f"postgresql://USER:PASSWORD@HOST:PORT/DB, or to a folder for an SQLite store")
    if store is None or isinstance(store, str | os.PathLike):
        return SQLiteRunStorage(None if store is None else Path(store))
    raise StoreError(
        f"store: expected a run store, a folder path or None. Received: {type(store).__name__} "
        f"{store!r:.60}; pass the store's folder (e.g. store='archlab-runs')"
    )
