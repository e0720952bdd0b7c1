"""The PostgreSQL backend of the run store: one database shared by many machines.

Selected by a URL, ``ARCHLAB_STORE=postgresql://user:password@host:5432/db`` (or
``open_store("postgresql://...")``, or ``--store URL`` on the command line). The records
(runs, epochs, and the claims of distributed work, see :mod:`archlab.runs._claims`) live in
four tables prefixed ``archlab_``, so the database can also hold Optuna's studies
(``archlab search --storage postgresql://...``).

**Artifacts stay in a folder** (``root``, default ``$ARCHLAB_HOME``): checkpoints and
weights are large (zoo:gpt2 writes ~1.5 GB a checkpoint), rewritten every epoch, and read
by path (safetensors is memory-mapped); a database row is the wrong place for them. Machines
that share one PostgreSQL store and must read each other's artifacts (``archlab show``'s
test report, ``evaluate``, ``generate``, resuming another machine's run) need the same
shared folder as ``ARCHLAB_HOME`` (NFS, a cluster file system). What a comparison or a
search needs from another machine's run — its metrics, and a fold's result — is in the
database, so ``archlab compare`` on several machines works without a shared folder.

Connections are opened lazily, one per process and thread (forked children open their
own), with a bounded connect timeout (:attr:`PostgresRunStorage.connect_timeout_s`, or the
URL's own ``connect_timeout``). Writes are single transactions; ids are random and the
primary key catches collisions, so concurrent writers never lose or duplicate a record.
Passwords are never shown: every message names the URL with the password masked.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..core import StoreError
from ._artifacts import RUNS_FOLDER
from ._base import RunStorage
from ._records import STATUSES, Claim, EpochRecord, RunRecord, StoreWarning, check_run_id, is_run_id
from ._rows import _claim, _Damaged, _dumps, _epoch_record, _metrics, _run_record, _shown
from ._sqlite import _new_run_id, default_root

__all__ = ["PostgresRunStorage", "is_postgres_url", "masked_url"]

SCHEMA_VERSION = 1
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS archlab_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS archlab_runs (
    run_id       TEXT PRIMARY KEY,
    seq          BIGSERIAL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
    duration_s   DOUBLE PRECISION,
    data         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    settings     TEXT NOT NULL,
    env          TEXT NOT NULL,
    params       BIGINT,
    test_metrics TEXT NOT NULL,
    tags         JSONB NOT NULL,
    message      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS archlab_runs_created ON archlab_runs (created_at);
CREATE INDEX IF NOT EXISTS archlab_runs_tags ON archlab_runs USING GIN (tags jsonb_path_ops);
CREATE TABLE IF NOT EXISTS archlab_epochs (
    run_id  TEXT NOT NULL REFERENCES archlab_runs (run_id) ON DELETE CASCADE,
    epoch   INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS archlab_claims (
    key          TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    state        TEXT NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    attempts     INTEGER NOT NULL,
    result       TEXT
)
"""

# Any constant: the advisory lock that serialises schema creation between processes.
_SCHEMA_LOCK = 0x61726368

_INHERITED: list[Any] = []  # connections a forked child inherited: never used nor closed


def is_postgres_url(text: object) -> bool:
    """Whether ``text`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``).

    >>> is_postgres_url("postgresql://u@db/x"), is_postgres_url("/tmp/store")
    (True, False)
    """
    return isinstance(text, str) and text.startswith(("postgresql://", "postgres://"))


def masked_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (what every message shows).

    >>> masked_url("postgresql://ann:s3cret@db:5432/runs")
    'postgresql://ann:***@db:5432/runs'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r":[^:@/]*@", ":***@", url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class PostgresRunStorage(RunStorage):
    """Run storage in a PostgreSQL database; artifacts in the folder ``root``.

    >>> PostgresRunStorage("postgresql://ann:pw@db/runs", "/tmp/x")
    PostgresRunStorage('postgresql://ann:***@db/runs', '/tmp/x')
    """

    connect_timeout_s = 10  # libpq's connect_timeout (whole seconds, at least 2)

    def __init__(self, url: str, root: str | Path | None = None):
        if not is_postgres_url(url):
            raise StoreError(f"store URL {masked_url(str(url))!r}: expected postgresql://USER:PASSWORD@HOST:PORT/DB")
        self.url = url
        self.shown = masked_url(url)
        self.root = Path(root).expanduser() if root is not None else default_root()
        self._local = threading.local()
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresRunStorage({self.shown!r}, {str(self.root)!r})"

    @property
    def location(self) -> str:
        return f"{self.shown} (artifacts in {self.root})"

    def __reduce__(self):  # pickles as its URL and folder, for spawned workers
        return (type(self), (self.url, self.root))

    # -- connections -------------------------------------------------------------------

    def _error(self, exc: Exception, doing: str) -> StoreError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        password = urlsplit(self.url).password
        if password:
            text = text.replace(password, "***")
        return StoreError(f"{self.shown}: {doing} ({text}); check the URL (ARCHLAB_STORE or --store), "
                          f"the password, and that the server runs and accepts connections")

    def _connect(self) -> Any:
        local = self._local
        pid = os.getpid()
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == pid and not conn.closed:
            return conn
        if conn is not None and local.pid != pid:
            _INHERITED.append(conn)
        local.conn = None
        try:
            import psycopg
        except ImportError:
            raise StoreError(f"{self.shown}: a PostgreSQL run store needs psycopg; install it with "
                             f"pip install 'archlab[postgres]'") from None
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self.url:
            kwargs["connect_timeout"] = max(2, int(self.connect_timeout_s))
        try:
            conn = psycopg.connect(self.url, **kwargs)
        except psycopg.Error as exc:
            raise self._error(exc, "cannot connect to the run store") from None
        except Exception as exc:  # a malformed URL (port not a number, ...)
            raise self._error(exc, "not a usable PostgreSQL URL") from None
        local.conn, local.pid = conn, pid
        return conn

    def _run(self, fn: Callable[[Any], _T], *, setup: bool = True) -> _T:
        import psycopg

        conn = self._connect()
        try:
            if setup and not self._ready:
                self._setup(conn)
            with conn.transaction():
                return fn(conn)
        except psycopg.OperationalError as exc:
            self.close()
            raise self._error(exc, "lost the connection to the run store") from None
        except psycopg.errors.UndefinedTable:
            raise StoreError(f"{self.shown}: the archlab tables are missing (dropped while in use?); "
                             f"run the command again to create them") from None
        except psycopg.Error as exc:
            raise self._error(exc, "the run store refused a statement") from None

    def _setup(self, conn: Any) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            exists = conn.execute("SELECT to_regclass('archlab_meta')").fetchone()[0]
            version = None
            if exists:
                row = conn.execute("SELECT value FROM archlab_meta WHERE key = 'schema'").fetchone()
                version = int(row[0]) if row else None
            if version is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO archlab_meta VALUES ('schema', %s) ON CONFLICT (key) DO NOTHING",
                             (str(SCHEMA_VERSION),))
            elif version > SCHEMA_VERSION:
                raise StoreError(f"{self.shown}: written by a newer archlab (schema {version}, this one reads "
                                 f"up to {SCHEMA_VERSION}); upgrade archlab")
        self._ready = True

    def _exists(self) -> bool:
        """Whether the tables exist (reads of a fresh database create nothing)."""
        if self._ready:
            return True
        return bool(self._run(lambda c: c.execute("SELECT to_regclass('archlab_runs')").fetchone()[0],
                              setup=False))

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

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
        row = (str(name), str(data), _dumps(spec, "spec"), _dumps(settings, "settings"), _dumps(env, "env"),
               None if params is None else int(params),
               _dumps({str(k): str(v) for k, v in (tags or {}).items()}, "tags"))

        def insert(conn: Any) -> str:
            now = time.time()
            while True:
                run_id = _new_run_id()
                cur = conn.execute(
                    "INSERT INTO archlab_runs (run_id, name, status, created_at, updated_at, duration_s, data, "
                    "spec, settings, env, params, test_metrics, tags, message) VALUES (%s, %s, 'running', %s, "
                    "%s, NULL, %s, %s, %s, %s, %s, '{}', %s::jsonb, '') ON CONFLICT (run_id) DO NOTHING",
                    (run_id, row[0], now, now, *row[1:]),
                )
                if cur.rowcount == 1:
                    return run_id

        return self._run(insert)

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
        check_run_id(run_id)
        text = _dumps(_metrics(metrics, "metrics"), "metrics")

        def upsert(conn: Any) -> None:
            cur = conn.execute("UPDATE archlab_runs SET updated_at = %s WHERE run_id = %s", (time.time(), run_id))
            if cur.rowcount == 0:
                raise self._not_found(run_id)
            conn.execute("INSERT INTO archlab_epochs (run_id, epoch, metrics) VALUES (%s, %s, %s) "
                         "ON CONFLICT (run_id, epoch) DO UPDATE SET metrics = EXCLUDED.metrics",
                         (run_id, int(epoch), text))

        self._run(upsert)

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
            raise StoreError(f"run {run_id!r}: unknown status. Expected one of {', '.join(STATUSES)}. "
                             f"Received: status={status!r}")
        tm = None if test_metrics is None else _dumps(_metrics(test_metrics, "test_metrics"), "")

        def update(conn: Any) -> None:
            cur = conn.execute(
                "UPDATE archlab_runs SET status = %s, message = %s, updated_at = %s, "
                "test_metrics = COALESCE(%s, test_metrics), duration_s = COALESCE(%s, duration_s) "
                "WHERE run_id = %s",
                (status, str(message), time.time(), tm, None if duration_s is None else float(duration_s), run_id),
            )
            if cur.rowcount == 0:
                raise self._not_found(run_id)

        self._run(update)

    def get_run(self, run_id: str) -> RunRecord:
        check_run_id(run_id, prefix=True)
        if not self._exists():
            raise self._not_found(run_id)

        def read(conn: Any) -> RunRecord:
            full = self._resolve(conn, run_id)
            return self._records(conn, "WHERE run_id = %s", [full], strict=True)[0]

        return self._run(read)

    def list_runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        where, args = [], []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            unknown = [s for s in wanted if s not in STATUSES]
            if unknown:
                raise StoreError(f"unknown run status {unknown[0]!r}. Expected one of {', '.join(STATUSES)}. "
                                 f"Received: status={unknown[0]!r}")
            where.append("status = ANY(%s)")
            args.append(wanted)
        if tags:
            where.append("tags @> %s::jsonb")  # containment: every given key with its value
            args.append(_dumps({str(k): str(v) for k, v in tags.items()}, "tags"))
        if not self._exists():
            return []
        sql = ("WHERE " + " AND ".join(where)) if where else ""
        sql += " ORDER BY created_at DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT %s"
            args.append(int(limit))
        return self._run(lambda conn: self._records(conn, sql, args))

    def delete_run(self, run_id: str) -> None:
        check_run_id(run_id, prefix=True)
        if not self._exists():
            raise self._not_found(run_id)

        def delete(conn: Any) -> str:
            full = self._resolve(conn, run_id)
            conn.execute("DELETE FROM archlab_epochs WHERE run_id = %s", (full,))
            conn.execute("DELETE FROM archlab_runs WHERE run_id = %s", (full,))
            return full

        full = self._run(delete)
        folder = self.root / RUNS_FOLDER / full
        if folder.is_symlink():
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)

    # -- claims (see archlab.runs._claims) ---------------------------------------------

    def _claims(self, fn: Callable[[Any, float], Any]) -> Any:
        # The server's clock, so machines whose clocks disagree judge leases alike.
        return self._run(lambda c: fn(c, float(c.execute("SELECT extract(epoch FROM clock_timestamp())")
                                                  .fetchone()[0])))

    def claim(self, key: str, owner: str, *, lease_s: float) -> Claim:
        def claim(conn: Any, now: float) -> Claim:
            conn.execute(
                "INSERT INTO archlab_claims AS c (key, owner, state, heartbeat_at, attempts) "
                "VALUES (%s, %s, 'claimed', %s, 1) ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, "
                "heartbeat_at = EXCLUDED.heartbeat_at, attempts = c.attempts + 1 "
                "WHERE c.state = 'claimed' AND c.heartbeat_at < %s",
                (key, owner, now, now - float(lease_s)),
            )
            return _claim(key, owner, self._claim_row(conn, key))

        return self._claims(claim)

    def heartbeat(self, owner: str) -> int:
        return self._claims(lambda c, now: c.execute(
            "UPDATE archlab_claims SET heartbeat_at = %s WHERE owner = %s AND state = 'claimed'",
            (now, owner)).rowcount)

    def finish_claim(self, key: str, owner: str, result: Mapping[str, Any]) -> Claim:
        text = _dumps(dict(result), "result")

        def finish(conn: Any, now: float) -> Claim:
            conn.execute("UPDATE archlab_claims SET state = 'done', owner = %s, heartbeat_at = %s, result = %s "
                         "WHERE key = %s AND state = 'claimed'", (owner, now, text, key))
            return _claim(key, owner, self._claim_row(conn, key))

        return self._claims(finish)

    def release_claims(self, owner: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self._run(lambda c: c.execute("DELETE FROM archlab_claims WHERE owner = %s AND state = 'claimed' "
                                          "AND key = ANY(%s)", (owner, keys)))

    def get_claim(self, key: str) -> Claim | None:
        if not self._exists():
            return None
        row = self._run(lambda c: self._claim_row(c, key))
        return None if row is None else _claim(key, "", row)

    @staticmethod
    def _claim_row(conn: Any, key: str) -> Any:
        return conn.execute("SELECT state, owner, attempts, result FROM archlab_claims WHERE key = %s",
                            (key,)).fetchone()

    # -- helpers -----------------------------------------------------------------------

    def _not_found(self, run_id: str) -> StoreError:
        return StoreError(f"run {run_id!r} not found in {self.shown}; list runs with `archlab runs`")

    def _resolve(self, conn: Any, run_id: str) -> str:
        check_run_id(run_id, prefix=True)
        if conn.execute("SELECT 1 FROM archlab_runs WHERE run_id = %s", (run_id,)).fetchone():
            return run_id
        # the prefix is hex (checked above): no LIKE wildcard can be in it
        rows = conn.execute("SELECT run_id FROM archlab_runs WHERE run_id LIKE %s ORDER BY run_id LIMIT 6",
                            (run_id + "%",)).fetchall()
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:5])
            raise StoreError(f"run prefix {run_id!r} is ambiguous in {self.shown}: matches {shown}"
                             f"{', ...' if len(rows) > 5 else ''}; give more characters of the id")
        raise self._not_found(run_id)

    def _records(self, conn: Any, where: str, args: list, *, strict: bool = False) -> list[RunRecord]:
        rows = conn.execute(
            "SELECT run_id, name, status, created_at, updated_at, duration_s, data, spec, settings, env, "
            f"params, test_metrics, tags::text, message FROM archlab_runs {where}", args).fetchall()
        history: dict[str, list[EpochRecord]] = {r[0]: [] for r in rows if is_run_id(r[0])}
        if history:
            for rid, epoch, metrics in conn.execute(
                    "SELECT run_id, epoch, metrics FROM archlab_epochs WHERE run_id = ANY(%s) "
                    "ORDER BY run_id, epoch", (list(history),)):
                try:
                    history[rid].append(_epoch_record(epoch, metrics))
                except _Damaged as exc:
                    self._report(f"run {rid!r}: epoch {epoch!r} in {self.shown} is damaged ({exc}); that "
                                 f"epoch is left out of its history", strict=False)
        records = []
        for r in rows:
            try:
                records.append(_run_record(tuple(r), history.get(r[0], [])))
            except _Damaged as exc:
                self._report(f"run {_shown(r[0])} in {self.shown}: damaged record ({exc}); "
                             f"{'skipped; ' if not strict else ''}restore the store from a backup, or delete "
                             f"the run's row", strict=strict)
        return records

    def _report(self, message: str, *, strict: bool) -> None:
        import warnings

        if strict:
            raise StoreError(message)
        warnings.warn(StoreWarning(message), stacklevel=5)
