"""The run store: the storage contract (:class:`RunStorage`), its SQLite and PostgreSQL backends, the
records it hands out, the names of every artifact file, and who is training a run now.

No torch: listing and reading runs is cheap. Layout under the root (``$ARCHLAB_HOME``,
default ``./archlab-runs``): ``archlab.db`` and ``runs/<run_id>/`` (see ``_artifacts``).

>>> import tempfile
>>> store = open_store(tempfile.mkdtemp())
>>> rid = store.create_run(name="mlp", data="digits", spec={}, settings={}, env={}, params=10)
>>> store.log_epoch(rid, 1, {"val_acc": 0.5})
>>> store.set_status(rid, "finished", duration_s=1.0)
>>> store.get_run(rid[:5]).best("val_acc")
0.5
"""

from ._artifacts import (
    BEST_WEIGHTS,
    CHECKPOINT_FILES,
    CHECKPOINT_JSON,
    CHECKPOINT_OPTIMIZER,
    CHECKPOINT_WEIGHTS,
    DB_FILE,
    FOLD_FILE,
    LOCK_FILE,
    MAX_JSON_BYTES,
    PREPROCESSING_FILE,
    QUANTIZED_META,
    QUANTIZED_WEIGHTS,
    RUNS_FOLDER,
    SPEC_FILE,
    STUDIES_JOURNAL,
    TEST_REPORT,
    TOKENIZER_FILE,
    open_regular,
    read_bytes,
    read_json,
    read_text,
    write_text,
)
from ._base import RunStorage
from ._claims import DEFAULT_LEASE_S, Heartbeat, lease_seconds, new_owner
from ._factory import STORE_ENV, open_store
from ._lock import (
    LISTED_STATUSES,
    check_lock_file,
    current_status,
    find_runs,
    is_alive,
    run_lock,
)
from ._mlflow import Exported, export_mlflow
from ._postgres import PostgresRunStorage, is_postgres_url, masked_url
from ._records import (
    RUN_ID_FORMAT,
    STATUSES,
    Claim,
    EpochRecord,
    RunRecord,
    StoreWarning,
    check_run_id,
    is_run_id,
)
from ._sqlite import SQLiteRunStorage, default_root

__all__ = [
    "BEST_WEIGHTS",
    "CHECKPOINT_FILES",
    "CHECKPOINT_JSON",
    "CHECKPOINT_OPTIMIZER",
    "CHECKPOINT_WEIGHTS",
    "DB_FILE",
    "DEFAULT_LEASE_S",
    "FOLD_FILE",
    "LISTED_STATUSES",
    "LOCK_FILE",
    "MAX_JSON_BYTES",
    "PREPROCESSING_FILE",
    "QUANTIZED_META",
    "QUANTIZED_WEIGHTS",
    "RUNS_FOLDER",
    "RUN_ID_FORMAT",
    "SPEC_FILE",
    "STATUSES",
    "STORE_ENV",
    "STUDIES_JOURNAL",
    "TEST_REPORT",
    "TOKENIZER_FILE",
    "Claim",
    "EpochRecord",
    "Exported",
    "Heartbeat",
    "PostgresRunStorage",
    "RunRecord",
    "RunStorage",
    "SQLiteRunStorage",
    "StoreWarning",
    "check_lock_file",
    "check_run_id",
    "current_status",
    "default_root",
    "find_runs",
    "is_alive",
    "is_postgres_url",
    "is_run_id",
    "lease_seconds",
    "masked_url",
    "new_owner",
    "open_regular",
    "export_mlflow",
    "open_store",
    "read_bytes",
    "read_json",
    "read_text",
    "run_lock",
    "write_text",
]
