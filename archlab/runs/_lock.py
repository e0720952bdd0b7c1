"""Who is training a run right now: the run's ``.lock``, and the status a person sees.

A process that trains a run holds an OS file lock (``flock``) on ``<run folder>/.lock``
for the whole run; the OS releases it when the process dies, even by SIGKILL. So a run the
store records as ``"running"`` whose lock nobody holds was killed: it is shown as
``"stopped"``. The lock file is opened only if it is a regular file inside the run folder
(never through a symbolic link), so a planted link is refused instead of truncated.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ..core import StoreError, TrainingError
from ._artifacts import LOCK_FILE, open_regular
from ._base import RunStorage
from ._records import STATUSES, RunRecord

__all__ = ["LISTED_STATUSES", "check_lock_file", "current_status", "find_runs", "is_alive", "run_lock"]

# The statuses a person can ask for: the stored ones, "running" split by liveness.
STOPPED = "stopped"
LISTED_STATUSES = ("running", STOPPED, *(s for s in STATUSES if s != "running"))


@contextmanager
def run_lock(directory: str | os.PathLike, run_id: str) -> Iterator[None]:
    """Only one process trains a run at a time (two resumes would interleave checkpoints).

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with run_lock(folder, "r00000000"):
    ...     is_alive(folder)
    True
    >>> is_alive(folder)
    False
    """
    import fcntl

    fd = open_regular(Path(directory) / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TrainingError(f"run {run_id} is being trained by another process right now; "
                                f"wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def check_lock_file(directory: str | os.PathLike) -> None:
    """A StoreError if the run's ``.lock`` exists but is not a regular file (a planted link,
    a FIFO): training would refuse it, so say so before any work is done."""
    try:
        os.close(open_regular(Path(directory) / LOCK_FILE))
    except FileNotFoundError:
        pass


def is_alive(directory: str | os.PathLike) -> bool:
    """Whether a process holds the run's lock (i.e. is training it now). A missing lock, or
    one that is not a regular file, means nobody is."""
    import fcntl

    try:
        fd = open_regular(Path(directory) / LOCK_FILE)
    except (FileNotFoundError, StoreError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def current_status(store: RunStorage, record: RunRecord) -> str:
    """The stored status, except that a ``"running"`` run nobody is training is ``"stopped"``.

    >>> import tempfile
    >>> from archlab.runs import open_store
    >>> s = open_store(tempfile.mkdtemp())
    >>> rid = s.create_run(name="m", data="digits", spec={}, settings={}, env={}, params=None)
    >>> current_status(s, s.get_run(rid))
    'stopped'
    """
    if record.status != "running":
        return record.status
    try:
        folder = store.run_dir(record.run_id, create=False)
    except StoreError:  # a run folder that is a link: nobody trains there
        return STOPPED
    return "running" if is_alive(folder) else STOPPED


def find_runs(
    store: RunStorage,
    *,
    status: str | Iterable[str] | None = None,
    tags: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> list[RunRecord]:
    """Runs, newest first, by the status a person sees (one of :data:`LISTED_STATUSES`):
    ``"stopped"`` finds killed runs and ``"running"`` only runs a process is training now.

    >>> import tempfile
    >>> from archlab.runs import open_store
    >>> find_runs(open_store(tempfile.mkdtemp()), status="stopped")
    []
    """
    if status is None:
        return store.list_runs(tags=tags, limit=limit)
    wanted = [status] if isinstance(status, str) else list(status)
    for s in wanted:
        if s not in LISTED_STATUSES:
            raise StoreError(f"unknown run status {s!r}. Expected one of {', '.join(LISTED_STATUSES)}. "
                             f"Received: status={s!r}")
    stored = sorted({"running" if s == STOPPED else s for s in wanted})
    live_only = "running" in wanted and STOPPED not in wanted
    dead_only = STOPPED in wanted and "running" not in wanted
    # Liveness is known only after reading: filter first, then apply the limit.
    records = store.list_runs(status=stored, tags=tags,
                              limit=None if (live_only or dead_only) else limit)
    out = []
    for r in records:
        if r.status == "running" and (live_only or dead_only):
            if (current_status(store, r) == STOPPED) != dead_only:
                continue
        out.append(r)
        if limit is not None and len(out) >= limit:
            break
    return out
