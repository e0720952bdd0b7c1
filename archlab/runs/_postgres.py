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
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..core import StoreError
from ._records import RunRecord, check_run_id
from ._rows import _dumps
from ._sql import SQLRunStorage, _wanted_statuses
from ._sqlite import default_root

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


class PostgresRunStorage(SQLRunStorage):
    """Run storage in a PostgreSQL database; artifacts in the folder ``root``.

    >>> PostgresRunStorage("postgresql://ann:pw@db/runs", "/tmp/x")
    PostgresRunStorage('postgresql://ann:***@db/runs', '/tmp/x')
    """

    connect_timeout_s = 10  # libpq's connect_timeout (whole seconds, at least 2)

    # the shared statements (archlab.runs._sql) in PostgreSQL's words
    _NAMES = {"runs": "archlab_runs", "epochs": "archlab_epochs", "claims": "archlab_claims",
              "tags_in": "?::jsonb", "tags_out": "tags::text",  # tags are JSONB: queried by containment
              "seq": "seq"}
    _PARAM = "%s"

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

    _write = _read = _run  # one transaction either way (readers never wait on writers)

    @property
    def _store_name(self) -> str:
        return self.shown

    @property
    def _records_name(self) -> str:
        return self.shown

    def _clock(self, conn: Any) -> float:
        # The server's clock, so machines whose clocks disagree judge leases alike.
        return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])

    # -- what PostgreSQL says its own way -----------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        check_run_id(run_id, prefix=True)  # before asking the server whether the tables exist
        return super().get_run(run_id)

    def delete_run(self, run_id: str) -> None:
        check_run_id(run_id, prefix=True)
        super().delete_run(run_id)

    def list_runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        where, args = [], []
        if status is not None:
            where.append("status = ANY(%s)")
            args.append(_wanted_statuses(status))
        if tags:
            where.append("tags @> %s::jsonb")  # containment: every given key with its value
            args.append(_dumps({str(k): str(v) for k, v in tags.items()}, "tags"))
        if not self._exists():
            return []
        return self._newest_first(where, args, limit)

    def release_claims(self, owner: str, keys: Iterable[str]) -> None:
        keys = [str(k) for k in keys]  # as the shared claim statements take them
        if keys:
            self._run(lambda c: c.execute("DELETE FROM archlab_claims WHERE owner = %s AND state = 'claimed' "
                                          "AND key = ANY(%s)", (str(owner), keys)))

    def _prefix_rows(self, conn: Any, prefix: str) -> list[Any]:
        # the prefix is hex (checked by the caller): no LIKE wildcard can be in it
        return conn.execute("SELECT run_id FROM archlab_runs WHERE run_id LIKE %s ORDER BY run_id LIMIT 6",
                            (prefix + "%",)).fetchall()

    def _epoch_rows(self, conn: Any, run_ids: list[str]) -> Iterable[Any]:
        if not run_ids:
            return ()
        return conn.execute("SELECT run_id, epoch, metrics FROM archlab_epochs WHERE run_id = ANY(%s) "
                            "ORDER BY run_id, epoch", (run_ids,))
