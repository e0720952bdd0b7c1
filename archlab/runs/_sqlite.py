"""The SQLite backend of the run store: every run a row, its epochs in a second table.

One file, ``<root>/archlab.db``, in WAL mode; the artifacts lie beside it in
``<root>/runs/<run_id>/`` (see ``archlab.runs._artifacts``). Several processes may write to
one store at once: each process (and thread) opens its own connection lazily, writes are
short ``BEGIN IMMEDIATE`` transactions, and "database is locked" is retried with a busy
timeout and backoff.

>>> import tempfile
>>> store = SQLiteRunStorage(tempfile.mkdtemp())
>>> rid = store.create_run(name="mlp", data="digits", spec={}, settings={}, env={}, params=10)
>>> store.log_epoch(rid, 1, {"val_acc": 0.5})
>>> store.set_status(rid, "finished", duration_s=1.0)
>>> store.get_run(rid[:5]).best("val_acc")
0.5
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..core import StoreError
from ._artifacts import DB_FILE
from ._records import RunRecord
from ._sql import SQLRunStorage, _wanted_statuses

__all__ = ["SCHEMA_VERSION", "SQLiteRunStorage", "default_root"]

SCHEMA_VERSION = 1

_T = TypeVar("_T")


def default_root() -> Path:
    """The store's root folder: ``$ARCHLAB_HOME`` if set, else ``./archlab-runs``.

    >>> isinstance(default_root(), Path)
    True
    """
    env = os.environ.get("ARCHLAB_HOME")
    return Path(env).expanduser() if env else Path("archlab-runs")


# ----------------------------------------------------------------------------- SQLite backend

_SCHEMA = """
CREATE TABLE runs (
    run_id       TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    duration_s   REAL,
    data         TEXT NOT NULL,
    spec         TEXT NOT NULL,   -- JSON
    settings     TEXT NOT NULL,   -- JSON
    env          TEXT NOT NULL,   -- JSON
    params       INTEGER,
    test_metrics TEXT NOT NULL,   -- JSON
    tags         TEXT NOT NULL,   -- JSON object of str -> str
    message      TEXT NOT NULL
);
CREATE INDEX runs_created ON runs (created_at);
CREATE TABLE epochs (
    run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    epoch   INTEGER NOT NULL,
    metrics TEXT NOT NULL,        -- JSON
    PRIMARY KEY (run_id, epoch)
);
"""

# Added after schema 1 shipped; made when missing (an older store gains it on first use).
_CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
    key          TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    state        TEXT NOT NULL,   -- claimed | done
    heartbeat_at REAL NOT NULL,
    attempts     INTEGER NOT NULL,
    result       TEXT             -- JSON
)
"""

# Connections a forked child inherited from its parent. They are never used nor closed in
# the child (closing could disturb the parent's locks); holding them stops finalisation.
_INHERITED: list[sqlite3.Connection] = []


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteRunStorage(SQLRunStorage):
    """Run storage in one SQLite file (WAL mode) under ``root``; artifacts beside it.

    Safe to share between threads and forked or spawned processes: each (process, thread)
    opens its own connection on first use.

    >>> import tempfile
    >>> s = SQLiteRunStorage(tempfile.mkdtemp())
    >>> s.list_runs()
    []
    """

    busy_timeout_s = 30.0  # how long SQLite waits on a lock before reporting "locked"
    retries = 20  # then how many more times a transaction is retried, with backoff

    # the shared statements (archlab.runs._sql) in SQLite's words
    _NAMES = {"runs": "runs", "epochs": "epochs", "claims": "claims", "tags_in": "?", "tags_out": "tags",
              "seq": "rowid"}
    _PARAM = "?"

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.db_path = self.root / DB_FILE
        self._local = threading.local()
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLiteRunStorage({str(self.root)!r})"

    def __reduce__(self):  # pickles as its root, so it can be handed to spawned workers
        return (type(self), (self.root,))

    # -- connections -------------------------------------------------------------------

    def _corrupt(self, exc: Exception) -> StoreError:
        return StoreError(
            f"{self.db_path}: not a readable archlab run store ({exc}); move the file "
            f"aside or set ARCHLAB_HOME to another folder"
        )

    def _connect(self) -> sqlite3.Connection:
        """This process's and thread's connection, opened (and the schema made) lazily."""
        local = self._local
        pid = os.getpid()
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == pid:
            return conn
        if conn is not None:  # inherited through fork: never touch it
            _INHERITED.append(conn)
            local.conn = None
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.db_path, timeout=self.busy_timeout_s, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.db_path}: cannot open the run store ({exc}); check that the folder "
                f"exists and is writable, or set ARCHLAB_HOME"
            ) from None
        try:
            self._retry(lambda: self._setup(conn))
        except BaseException:
            conn.close()
            raise
        local.conn, local.pid = conn, pid
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # NORMAL in WAL mode: a commit survives any crash of the process and the file is
        # never corrupted; only a power cut may lose the last commits. FULL would fsync on
        # every commit, which makes many small writers (searches) ~30x slower.
        conn.execute("PRAGMA synchronous = NORMAL")
        if self._ready:
            return
        # WAL lets readers run beside one writer; the setting is stored in the file.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
                if tables:
                    raise StoreError(
                        f"{self.db_path}: an SQLite file that is not an archlab run store "
                        f"(tables {tables[:5]}); move the file aside or set ARCHLAB_HOME"
                    )
                # one statement at a time: executescript() would COMMIT our transaction
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.db_path}: written by a newer archlab (schema {version}, this one "
                    f"reads up to {SCHEMA_VERSION}); upgrade archlab"
                )
            # Migrations from older schema versions go here: `if version < 2: ...`.
            conn.execute(_CLAIMS)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._ready = True

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    def _retry(self, fn: Callable[[], _T]) -> _T:
        delay = 0.01
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StoreError(
                        f"{self.db_path}: {exc}; check the folder is writable and the disk "
                        f"not full, or set ARCHLAB_HOME to another folder"
                    ) from None
                if attempt == self.retries:
                    raise StoreError(
                        f"{self.db_path}: {exc} (still, after {self.retries} retries); "
                        f"another process holds the store locked, try again"
                    ) from None
            except sqlite3.IntegrityError:
                raise
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from None
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in one short write transaction, retried while the store is locked."""
        conn = self._connect()

        def attempt() -> _T:
            # IMMEDIATE takes the write lock up front, so a transaction never has to
            # upgrade a read lock (the one case where SQLite skips the busy handler).
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return self._retry(attempt)

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` on one consistent snapshot (a read transaction)."""
        conn = self._connect()

        def attempt() -> _T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

        return self._retry(attempt)

    def _exists(self) -> bool:
        return self.db_path.exists()

    @property
    def _store_name(self) -> str:
        return str(self.root)

    @property
    def _records_name(self) -> str:
        return str(self.db_path)

    def _clock(self, conn: sqlite3.Connection) -> float:
        return time.time()  # the machine's: an SQLite store is shared by one machine's processes

    # -- what SQLite says its own way ---------------------------------------------------

    def list_runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        if not self._exists():
            return []
        where, args = [], []
        if status is not None:
            wanted = _wanted_statuses(status)
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args += wanted
        for key, value in (tags or {}).items():
            # json_each over the tags object: exact key match, no JSON-path quoting issues
            where.append(
                "EXISTS (SELECT 1 FROM json_each(runs.tags) AS t WHERE t.key = ? AND t.value = ?)"
            )
            args += [str(key), str(value)]
        return self._newest_first(where, args, limit)

    def release_claims(self, owner: str, keys: Iterable[str]) -> None:
        keys = [str(k) for k in keys]
        if keys and self._exists():
            self._write(lambda conn: conn.execute(
                f"DELETE FROM claims WHERE owner = ? AND state = 'claimed' AND key IN ({', '.join('?' * len(keys))})",
                (str(owner), *keys)))

    def _prefix_rows(self, conn: sqlite3.Connection, prefix: str) -> list[Any]:
        return conn.execute(
            "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id LIMIT 6",
            (len(prefix), prefix),
        ).fetchall()

    def _epoch_rows(self, conn: sqlite3.Connection, run_ids: list[str]) -> Iterator[Any]:
        for i in range(0, len(run_ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = run_ids[i : i + 500]
            yield from conn.execute(
                f"SELECT run_id, epoch, metrics FROM epochs WHERE run_id IN "
                f"({', '.join('?' * len(chunk))}) ORDER BY run_id, epoch",
                chunk,
            )
