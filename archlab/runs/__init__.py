"""The run store: the storage contract and its SQLite backend. No torch."""

from ._store import EpochRecord, RunRecord, RunStorage, SQLiteRunStorage, default_root, open_store

__all__ = [
    "EpochRecord",
    "RunRecord",
    "RunStorage",
    "SQLiteRunStorage",
    "default_root",
    "open_store",
]
