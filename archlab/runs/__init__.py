"""The run store: the storage contract and its SQLite backend. No torch."""

from ._mlflow import Exported, export_mlflow
from ._store import EpochRecord, RunRecord, RunStorage, SQLiteRunStorage, default_root, open_store

__all__ = [
    "EpochRecord",
    "Exported",
    "RunRecord",
    "RunStorage",
    "SQLiteRunStorage",
    "default_root",
    "export_mlflow",
    "open_store",
]
