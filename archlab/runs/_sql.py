"""The storage contract written once for the SQL backends (SQLite and PostgreSQL).

Both backends keep the same records in the same columns and run the same statements on them;
:class:`SQLRunStorage` holds those statements and the logic around them. What stays in each
backend's own module is what really differs: how a connection is opened and a transaction
run (SQLite's busy retries, PostgreSQL's lost connections), the schema and its setup, and
the few statements of its own dialect (an id prefix, a list of ids, the tag filter).

A statement here is written once, with ``?`` for each parameter and ``{runs}``, ``{epochs}``,
``{claims}`` for the tables; a backend's :attr:`~SQLRunStorage._NAMES` and
:attr:`~SQLRunStorage._PARAM` turn it into its own (PostgreSQL: ``%s``, ``archlab_runs``).
So a shared statement holds no literal ``{`` (write ``{{``), no ``%`` and no ``?`` but the
parameters (PostgreSQL's JSONB ``?`` operators belong in the backend's own statements).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from ..core import StoreError
from ._artifacts import RUNS_FOLDER
from ._base import RunStorage
from ._records import STATUSES, Claim, EpochRecord, RunRecord, StoreWarning, check_run_id, is_run_id
from ._rows import _claim, _Damaged, _dumps, _epoch_record, _metrics, _run_record, _shown

__all__ = ["SQLRunStorage"]

_T = TypeVar("_T")

_INSERT_RUN = (
    "INSERT INTO {runs} (run_id, name, status, created_at, updated_at, duration_s, data, spec, settings, env, "
    "params, test_metrics, tags, message) VALUES (?, ?, 'running', ?, ?, NULL, ?, ?, ?, ?, ?, '{{}}', {tags_in}, '') "
    "ON CONFLICT (run_id) DO NOTHING"
)
_SELECT_RUNS = (
    "SELECT run_id, name, status, created_at, updated_at, duration_s, data, spec, settings, env, params, "
    "test_metrics, {tags_out}, message FROM {runs} "
)


def _new_run_id() -> str:
    """ "r" + 8 random hex digits: short, and a few characters already make a unique prefix
    (a time-sortable id would share its first characters with every run of the day)."""
    return "r" + os.urandom(4).hex()


def _wanted_statuses(status: str | Iterable[str]) -> list[str]:
    """The statuses a listing asks for, each one of STATUSES (else a StoreError)."""
    wanted = [status] if isinstance(status, str) else list(status)
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise StoreError(f"unknown run status {unknown[0]!r}. Expected one of {', '.join(STATUSES)}. "
                         f"Received: status={unknown[0]!r}")
    return wanted


class SQLRunStorage(RunStorage):
    """The contract over an SQL database; a backend says how to reach it and its dialect.

    A backend sets :attr:`_NAMES` and :attr:`_PARAM`, runs transactions (:meth:`_write`,
    :meth:`_read`), says whether the store exists yet (:meth:`_exists`), what time it is
    (:meth:`_clock`), how messages name it (:attr:`_store_name`, :attr:`_records_name`), and
    gives the statements of its own dialect (:meth:`_prefix_rows`, :meth:`_epoch_rows`,
    the filters of :meth:`list_runs`, and :meth:`release_claims` whole).
    """

    #: The names in the shared statements, as this backend calls them: the tables
    #: ``runs``, ``epochs``, ``claims``; ``tags_in``, the parameter that writes the tags;
    #: ``tags_out``, the column expression that reads them back as JSON text; ``seq``, the
    #: column that numbers runs in the order they were written (ties of ``created_at``).
    _NAMES: ClassVar[Mapping[str, str]]
    #: How this backend's driver writes a parameter in a statement.
    _PARAM: ClassVar[str]

    # -- what a backend provides -------------------------------------------------------

    @abstractmethod
    def _write(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(connection)`` in one write transaction, committed when it returns."""

    @abstractmethod
    def _read(self, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(connection)`` on one consistent snapshot."""

    @abstractmethod
    def _exists(self) -> bool:
        """Whether the store holds any records yet (reads of a store that does not exist
        answer without creating it)."""

    @abstractmethod
    def _clock(self, conn: Any) -> float:
        """Now, in seconds since the epoch, by the clock that judges the leases of claims."""

    @property
    @abstractmethod
    def _store_name(self) -> str:
        """The store as "not found in ..." and "ambiguous in ..." name it."""

    @property
    @abstractmethod
    def _records_name(self) -> str:
        """Where the records lie, as reports of a damaged record name it."""

    @abstractmethod
    def _prefix_rows(self, conn: Any, prefix: str) -> Sequence[Any]:
        """The rows ``(run_id,)`` of at most 6 runs whose ids start with ``prefix``, in id order."""

    @abstractmethod
    def _epoch_rows(self, conn: Any, run_ids: list[str]) -> Iterable[Any]:
        """The rows ``(run_id, epoch, metrics)`` of these runs, by run id, then epoch."""

    def _sql(self, statement: str) -> str:
        """A shared statement in this backend's dialect (its table names and parameters)."""
        text = statement.format_map(self._NAMES)
        return text if self._PARAM == "?" else text.replace("?", self._PARAM)

    def _execute(self, conn: Any, statement: str, args: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(statement), args)

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
            # ids are random; the primary key catches the rare collision, and DO NOTHING
            # (not an error) keeps a PostgreSQL transaction usable for the next id
            while True:
                run_id = _new_run_id()
                if self._execute(conn, _INSERT_RUN, (run_id, row[0], now, now, *row[1:])).rowcount == 1:
                    return run_id

        return self._write(insert)

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
        check_run_id(run_id)
        text = _dumps(_metrics(metrics, "metrics"), "metrics")

        def upsert(conn: Any) -> None:
            cur = self._execute(conn, "UPDATE {runs} SET updated_at = ? WHERE run_id = ?", (time.time(), run_id))
            if cur.rowcount == 0:
                raise self._not_found(run_id)
            self._execute(conn, "INSERT INTO {epochs} (run_id, epoch, metrics) VALUES (?, ?, ?) "
                                "ON CONFLICT (run_id, epoch) DO UPDATE SET metrics = excluded.metrics",
                          (run_id, int(epoch), text))  # fmt: skip

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
            raise StoreError(f"run {run_id!r}: unknown status. Expected one of {', '.join(STATUSES)}. "
                             f"Received: status={status!r}")
        tm = None if test_metrics is None else _dumps(_metrics(test_metrics, "test_metrics"), "")

        def update(conn: Any) -> None:
            cur = self._execute(
                conn,
                "UPDATE {runs} SET status = ?, message = ?, updated_at = ?, "
                "test_metrics = COALESCE(?, test_metrics), duration_s = COALESCE(?, duration_s) "
                "WHERE run_id = ?",
                (status, str(message), time.time(), tm, None if duration_s is None else float(duration_s), run_id),
            )
            if cur.rowcount == 0:
                raise self._not_found(run_id)

        self._write(update)

    def get_run(self, run_id: str) -> RunRecord:
        if not self._exists():
            raise self._not_found(run_id)

        def read(conn: Any) -> RunRecord:
            full = self._resolve(conn, run_id)
            return self._records(conn, self._sql("WHERE run_id = ?"), [full], strict=True)[0]

        return self._read(read)

    def delete_run(self, run_id: str) -> None:
        if not self._exists():
            raise self._not_found(run_id)

        def delete(conn: Any) -> str:
            full = self._resolve(conn, run_id)
            self._execute(conn, "DELETE FROM {epochs} WHERE run_id = ?", (full,))
            self._execute(conn, "DELETE FROM {runs} WHERE run_id = ?", (full,))
            return full

        full = self._write(delete)
        folder = self.root / RUNS_FOLDER / full
        if folder.is_symlink():  # never follow a link out of the store: remove the link only
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)

    # -- claims (see archlab.runs._claims) ---------------------------------------------

    def claim(self, key: str, owner: str, *, lease_s: float) -> Claim:
        def claim(conn: Any) -> Claim:
            now = self._clock(conn)
            self._execute(
                conn,
                "INSERT INTO {claims} AS c (key, owner, state, heartbeat_at, attempts) VALUES (?, ?, 'claimed', ?, 1) "
                "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, heartbeat_at = excluded.heartbeat_at, "
                "attempts = c.attempts + 1 WHERE c.state = 'claimed' AND c.heartbeat_at < ?",
                (str(key), str(owner), now, now - float(lease_s)),
            )
            return _claim(key, owner, self._claim_row(conn, key))

        return self._write(claim)

    def heartbeat(self, owner: str) -> int:
        return self._write(lambda conn: self._execute(
            conn, "UPDATE {claims} SET heartbeat_at = ? WHERE owner = ? AND state = 'claimed'",
            (self._clock(conn), str(owner))).rowcount)  # fmt: skip

    def finish_claim(self, key: str, owner: str, result: Mapping[str, Any]) -> Claim:
        text = _dumps(dict(result), "result")

        def finish(conn: Any) -> Claim:
            self._execute(conn, "UPDATE {claims} SET state = 'done', owner = ?, heartbeat_at = ?, result = ? "
                                "WHERE key = ? AND state = 'claimed'", (str(owner), self._clock(conn), text, str(key)))
            return _claim(key, owner, self._claim_row(conn, key))

        return self._write(finish)

    def get_claim(self, key: str) -> Claim | None:
        if not self._exists():
            return None
        row = self._read(lambda conn: self._claim_row(conn, key))
        return None if row is None else _claim(key, "", row)

    def _claim_row(self, conn: Any, key: str) -> Any:
        return self._execute(conn, "SELECT state, owner, attempts, result FROM {claims} WHERE key = ?",
                             (str(key),)).fetchone()  # fmt: skip

    # -- helpers -----------------------------------------------------------------------

    def _not_found(self, run_id: str) -> StoreError:
        return StoreError(f"run {run_id!r} not found in {self._store_name}; list runs with `archlab runs`")

    def _resolve(self, conn: Any, run_id: str) -> str:
        """Full id from a full id or a unique prefix."""
        check_run_id(run_id, prefix=True)
        if self._execute(conn, "SELECT 1 FROM {runs} WHERE run_id = ?", (run_id,)).fetchone():
            return run_id
        rows = self._prefix_rows(conn, run_id)
        if len(rows) == 1:
            return rows[0][0]
        if len(rows) > 1:
            shown = ", ".join(r[0] for r in rows[:5])
            raise StoreError(f"run prefix {run_id!r} is ambiguous in {self._store_name}: matches {shown}"
                             f"{', ...' if len(rows) > 5 else ''}; give more characters of the id")
        raise self._not_found(run_id)

    def _newest_first(self, where: list[str], args: list, limit: int | None) -> list[RunRecord]:
        """The runs that every condition of ``where`` (this backend's dialect, its parameters
        in ``args``) selects, newest first; at most ``limit`` of them."""
        sql = ("WHERE " + " AND ".join(where)) if where else ""
        sql += self._sql(" ORDER BY created_at DESC, {seq} DESC")
        if limit is not None:
            sql += self._sql(" LIMIT ?")
            args.append(int(limit))
        return self._read(lambda conn: self._records(conn, sql, args))

    def _records(self, conn: Any, where: str, args: list, *, strict: bool = False) -> list[RunRecord]:
        """Decode the rows that ``where`` (in this backend's dialect) selects into records. A
        damaged row is skipped with a StoreWarning (or, with ``strict``, raises StoreError); a
        damaged epoch row is left out of its run's history."""
        rows = conn.execute(self._sql(_SELECT_RUNS) + where, args).fetchall()
        history: dict[str, list[EpochRecord]] = {r[0]: [] for r in rows if is_run_id(r[0])}
        for rid, epoch, metrics in self._epoch_rows(conn, list(history)):
            try:
                history[rid].append(_epoch_record(epoch, metrics))
            except _Damaged as exc:
                self._report(f"run {rid!r}: epoch {epoch!r} in {self._records_name} is damaged ({exc}); that "
                             f"epoch is left out of its history", strict=False)
        records = []
        for r in rows:
            try:
                records.append(_run_record(tuple(r), history.get(r[0], [])))
            except _Damaged as exc:
                self._report(f"run {_shown(r[0])} in {self._records_name}: damaged record ({exc}); "
                             f"{'skipped; ' if not strict else ''}restore the store from a backup, or delete "
                             f"the run's row", strict=strict)
        return records

    def _report(self, message: str, *, strict: bool) -> None:
        if strict:
            raise StoreError(message)
        warnings.warn(StoreWarning(message), stacklevel=4)
