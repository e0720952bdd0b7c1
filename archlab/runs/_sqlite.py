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
import shutil
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..core import StoreError
from ._artifacts import DB_FILE, RUNS_FOLDER
from ._base import RunStorage
from ._records import STATUSES, Claim, EpochRecord, RunRecord, StoreWarning, check_run_id, is_run_id
from ._rows import _claim, _Damaged, _dumps, _epoch_record, _metrics, _run_record, _shown

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


def _new_run_id() -> str:
    """ "r" + 8 random hex digits: short, and a few characters already make a unique prefix
    (a time-sortable id would share its first characters with every run of the day)."""
    return "r" + os.urandom(4).hex()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteRunStorage(RunStorage):
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

    # -- the contract ------------------------------------------------------------------

    def create_run(
        self,
        *,
        name: str,
        data: str,
        spec: Mapping[str, Any],
        settings: Mapping[str, Any],
        env: Mapping[str, Any],
        params: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        row = {
            "name": str(name),
            "data": str(data),
            "spec": _dumps(spec, "spec"),
            "settings": _dumps(settings, "settings"),
            "env": _dumps(env, "env"),
            "params": None if params is None else int(params),
            "tags": _dumps({str(k): str(v) for k, v in (tags or {}).items()}, "tags"),
        }

        def insert(conn: sqlite3.Connection) -> str:
            now = time.time()
            while True:  # ids are random; the primary key catches the rare collision
                run_id = _new_run_id()
                try:
                    conn.execute(
                        "INSERT INTO runs (run_id, name, status, created_at, updated_at, "
                        "duration_s, data, spec, settings, env, params, test_metrics, tags, "
                        "message) VALUES (?, ?, 'running', ?, ?, NULL, ?, ?, ?, ?, ?, '{}', ?, '')",
                        (run_id, row["name"], now, now, row["data"], row["spec"],
                         row["settings"], row["env"], row["params"], row["tags"]),
                    )  # fmt: skip
                    return run_id
                except sqlite3.IntegrityError:
                    continue

        return self._write(insert)

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
        check_run_id(run_id)
        text = _dumps(_metrics(metrics, "metrics"), "metrics")

        def upsert(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE runs SET updated_at = ? WHERE run_id = ?", (time.time(), run_id)
            )
            if cur.rowcount == 0:
                raise self._not_found(run_id)
            conn.execute(
                "INSERT OR REPLACE INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                (run_id, int(epoch), text),
            )

        self._write(upsert)

    def set_status(
        self,
        run_id: str,
        status: str,
        *,
        message: str = "",
        test_metrics: Mapping[str, float] | None = None,
        duration_s: float | None = None,
    ) -> None:
        check_run_id(run_id)
        if status not in STATUSES:
            raise StoreError(
                f"run {run_id!r}: unknown status. Expected one of {', '.join(STATUSES)}. "
                f"Received: status={status!r}"
            )
        tm = None if test_metrics is None else _dumps(_metrics(test_metrics, "test_metrics"), "")

        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE runs SET status = ?, message = ?, updated_at = ?, "
                "test_metrics = COALESCE(?, test_metrics), duration_s = COALESCE(?, duration_s) "
                "WHERE run_id = ?",
                (status, str(message), time.time(), tm,
                 None if duration_s is None else float(duration_s), run_id),
            )  # fmt: skip
            if cur.rowcount == 0:
                raise self._not_found(run_id)

        self._write(update)

    def get_run(self, run_id: str) -> RunRecord:
        if not self._exists():
            raise self._not_found(run_id)

        def read(conn: sqlite3.Connection) -> RunRecord:
            full = self._resolve(conn, run_id)
            return self._records(conn, "WHERE run_id = ?", [full], strict=True)[0]

        return self._read(read)

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
            wanted = [status] if isinstance(status, str) else list(status)
            unknown = [s for s in wanted if s not in STATUSES]
            if unknown:
                raise StoreError(
                    f"unknown run status {unknown[0]!r}. Expected one of "
                    f"{', '.join(STATUSES)}. Received: status={unknown[0]!r}"
                )
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args += wanted
        for key, value in (tags or {}).items():
            # json_each over the tags object: exact key match, no JSON-path quoting issues
            where.append(
                "EXISTS (SELECT 1 FROM json_each(runs.tags) AS t WHERE t.key = ? AND t.value = ?)"
            )
            args += [str(key), str(value)]
        sql = ("WHERE " + " AND ".join(where)) if where else ""
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return self._read(lambda conn: self._records(conn, sql, args))

    def delete_run(self, run_id: str) -> None:
        if not self._exists():
            raise self._not_found(run_id)

        def delete(conn: sqlite3.Connection) -> str:
            full = self._resolve(conn, run_id)
            conn.execute("DELETE FROM epochs WHERE run_id = ?", (full,))
            conn.execute("DELETE FROM runs WHERE run_id = ?", (full,))
            return full

        full = self._write(delete)
        folder = self.root / RUNS_FOLDER / full
        if folder.is_symlink():  # never follow a link out of the store: remove the link only
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)

    # -- claims ------------------------------------------------------------------------

    def claim(self, key: str, owner: str, *, lease_s: float) -> Claim:
        def claim(conn: sqlite3.Connection) -> Claim:
            now = time.time()
            conn.execute(
                "INSERT INTO claims (key, owner, state, heartbeat_at, attempts) VALUES (?, ?, 'claimed', ?, 1) "
                "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, heartbeat_at = excluded.heartbeat_at, "
                "attempts = claims.attempts + 1 WHERE claims.state = 'claimed' AND claims.heartbeat_at < ?",
                (str(key), str(owner), now, now - float(lease_s)),
            )
            return _claim(key, owner, _claim_row(conn, key))

        return self._write(claim)

    def heartbeat(self, owner: str) -> int:
        return self._write(lambda conn: conn.execute(
            "UPDATE claims SET heartbeat_at = ? WHERE owner = ? AND state = 'claimed'",
            (time.time(), str(owner))).rowcount)

    def finish_claim(self, key: str, owner: str, result: Mapping[str, Any]) -> Claim:
        text = _dumps(dict(result), "result")

        def finish(conn: sqlite3.Connection) -> Claim:
            conn.execute("UPDATE claims SET state = 'done', owner = ?, heartbeat_at = ?, result = ? "
                         "WHERE key = ? AND state = 'claimed'", (str(owner), time.time(), text, str(key)))
            return _claim(key, owner, _claim_row(conn, key))

        return self._write(finish)

    def release_claims(self, owner: str, keys: Iterable[str]) -> None:
        keys = [str(k) for k in keys]
        if keys and self._exists():
            self._write(lambda conn: conn.execute(
                f"DELETE FROM claims WHERE owner = ? AND state = 'claimed' AND key IN ({', '.join('?' * len(keys))})",
                (str(owner), *keys)))

    def get_claim(self, key: str) -> Claim | None:
        if not self._exists():
            return None
        row = self._read(lambda conn: _claim_row(conn, key))
        return None if row is None else _claim(key, "", row)

    # -- helpers -----------------------------------------------------------------------

    def _not_found(self, run_id: str) -> StoreError:
        return StoreError(f"run {run_id!r} not found in {self.root}; list runs with `archlab runs`")

    def _resolve(self, conn: sqlite3.Connection, run_id: str) -> str:
        """Full id from a full id or a unique prefix."""
        check_run_id(run_id, prefix=True)
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
            return run_id
        if run_id:
            rows = conn.execute(
                "SELECT run_id FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY run_id LIMIT 6",
                (len(run_id), run_id),
            ).fetchall()
            if len(rows) == 1:
                return rows[0][0]
            if len(rows) > 1:
                shown = ", ".join(r[0] for r in rows[:5])
                raise StoreError(
                    f"run prefix {run_id!r} is ambiguous in {self.root}: matches {shown}"
                    f"{', ...' if len(rows) > 5 else ''}; give more characters of the id"
                )
        raise self._not_found(run_id)

    def _records(
        self, conn: sqlite3.Connection, where: str, args: list, *, strict: bool = False
    ) -> list[RunRecord]:
        """Decode rows into records. A damaged row is skipped with a StoreWarning (or, with
        ``strict``, raises StoreError); a damaged epoch row is left out of its run's history."""
        rows = conn.execute(
            "SELECT run_id, name, status, created_at, updated_at, duration_s, data, spec, "
            f"settings, env, params, test_metrics, tags, message FROM runs {where}",
            args,
        ).fetchall()
        history: dict[str, list[EpochRecord]] = {r[0]: [] for r in rows if is_run_id(r[0])}
        ids = list(history)
        for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[i : i + 500]
            for rid, epoch, metrics in conn.execute(
                f"SELECT run_id, epoch, metrics FROM epochs WHERE run_id IN "
                f"({', '.join('?' * len(chunk))}) ORDER BY run_id, epoch",
                chunk,
            ):
                try:
                    history[rid].append(_epoch_record(epoch, metrics))
                except _Damaged as exc:
                    self._report(f"run {rid!r}: epoch {epoch!r} in {self.db_path} is damaged "
                                 f"({exc}); that epoch is left out of its history", strict=False)
        records = []
        for r in rows:
            try:
                records.append(_run_record(r, history.get(r[0], [])))
            except _Damaged as exc:
                self._report(f"run {_shown(r[0])} in {self.db_path}: damaged record ({exc}); "
                             f"{'skipped; ' if not strict else ''}restore the store from a "
                             f"backup, or delete the run's row", strict=strict)
        return records

    def _report(self, message: str, *, strict: bool) -> None:
        if strict:
            raise StoreError(message)
        warnings.warn(StoreWarning(message), stacklevel=4)


def _claim_row(conn: Any, key: str) -> Any:
    return conn.execute("SELECT state, owner, attempts, result FROM claims WHERE key = ?", (str(key),)).fetchone()
