"""Where studies live and what is read back from them: the storage a study opens (an Optuna
journal file by default, or a database URL) and the records built from its trials."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import ArchlabError, SpecError, freeze
from ._space import Objective

# ----------------------------------------------------------------------------- storage


def default_storage_path() -> Path:
    from ..runs import STUDIES_JOURNAL, default_root

    return default_root() / STUDIES_JOURNAL


_STORAGES: dict[str, Any] = {}


def storage_url(storage: str | Path | None = None) -> str:
    """The canonical form of a storage argument: `journal:/abs/path` or a database URL.

    >>> storage_url("/tmp/s.journal"), storage_url("postgresql://db/x")
    ('journal:/tmp/s.journal', 'postgresql://db/x')
    """
    text = str(storage) if storage is not None else _store_database()
    if text is None or text.startswith("journal:") or text.endswith((".journal", ".log")):
        path = Path(text[8:] if text and text.startswith("journal:") else text or default_storage_path())
        return f"journal:{path.expanduser().resolve()}"
    if "://" in text:
        return text
    if text.endswith((".db", ".sqlite", ".sqlite3")):
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    raise SpecError(f"--storage {text}: expected an Optuna storage URL (sqlite:///path.db, "
                    f"postgresql://..., mysql://...) or journal:PATH")


def _store_database() -> str | None:
    """The run store's PostgreSQL URL when $ARCHLAB_STORE names one: studies default to it."""
    import os

    from ..runs import STORE_ENV, is_postgres_url

    env = os.environ.get(STORE_ENV)
    return env if is_postgres_url(env) else None


def open_storage(storage: str | Path | Any | None = None) -> tuple[Any, str]:
    """An Optuna storage and its canonical URL (opened once per process).

    None: the run store's PostgreSQL database when $ARCHLAB_STORE is one, else the journal file
    in the run store; `journal:PATH` or a `*.journal`/`*.log` path:
    that journal file; `*.db`/`*.sqlite`: SQLite via RDBStorage; any other URL (postgresql://,
    mysql://, sqlite:///) goes to Optuna's RDBStorage as is (SQLite with a 60 s busy timeout).
    An Optuna storage object is used as is (in this process only: `jobs` must be 1).
    """
    import optuna

    if isinstance(storage, optuna.storages.BaseStorage):
        url = f"object:{id(storage)}"
        _STORAGES[url] = storage
        return storage, url
    url = storage_url(storage)
    if url not in _STORAGES:
        _STORAGES[url] = _open_storage(url)
    return _STORAGES[url], url


def _open_storage(url: str) -> Any:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("object:"):
        raise ArchlabError(f"{url}: an in-memory storage object cannot be shared with worker processes")
    if url.startswith("journal:"):
        path = Path(url[8:])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    from ..runs import masked_url

    kwargs: dict[str, Any] = {}
    shown = masked_url(url)
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if url.startswith(("postgresql", "postgres:")):
        # a server that is not there must not hang the command: libpq's connect timeout
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 10}}
        url = _postgres_driver(url)
    try:
        return _rdb_storage(url, kwargs)
    except ImportError as e:
        raise ArchlabError(f"--storage {shown}: the database driver is not installed ({e}); for PostgreSQL: "
                           f"pip install 'archlab[postgres]'") from None
    except Exception as e:  # sqlalchemy's errors: a bad URL, an unreachable server, a wrong password
        text = _first_line(e)
        password = _password(url)
        if password:
            text = text.replace(password, "***")
        raise ArchlabError(f"--storage {shown}: cannot open it ({type(e).__name__}: {text}); check the URL, "
                           f"the password, and that the server runs") from None


def _rdb_storage(url: str, kwargs: dict[str, Any]) -> Any:
    """Optuna's RDBStorage. Workers on several machines that open a fresh database at once race
    to create its tables ("already exists", "duplicate key"): the loser retries, and then finds
    them made."""
    import random
    import time

    import optuna

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as e:
            text = str(e).lower()
            if attempt == 4 or not ("already exists" in text or "duplicate key" in text):
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def _first_line(e: Exception) -> str:
    # sqlalchemy wraps the driver's error: "(psycopg.OperationalError) connection failed: ..."
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and not line.startswith("(Background")]
    return " ".join(lines[:2])[:300] if lines else type(e).__name__


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _postgres_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; archlab's PostgreSQL extra installs psycopg 3,
    so a bare URL uses psycopg 3 unless psycopg2 is the one installed."""
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    return f"postgresql://{rest}"


def _quiet_optuna() -> None:
    """Optuna's per-trial log lines and experimental-feature warnings would bury ours."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TrialSummary:
    """One trial as stored. `state`: complete, pruned, infeasible, duplicate (the same choices as
    trial `duplicate_of`, whose result it reuses), failed, interrupted (Ctrl-C, or its worker
    died: abandoned), surplus (it found the study's `trials` all taken, see _slots) or running."""

    number: int
    state: str
    params: Mapping[str, Any]                 # what Optuna chose (sub-block choices as labels)
    values: tuple[float, ...] | None          # objective values, in the study's order
    vars: Mapping[str, Any]                   # the var values (sub-blocks as blocks)
    train: Mapping[str, Any]                  # searched training settings
    costs: Mapping[str, float]
    curve: tuple[float, ...]                  # the trained objective per epoch
    epochs: int                               # epochs trained (all folds)
    run_ids: tuple[str, ...]
    infeasible: str | None = None
    message: str = ""
    duration_s: float | None = None
    duplicate_of: int | None = None

    @property
    def counted(self) -> bool:
        """Whether it spent the budget (`trials`): it was trained, or training was tried."""
        return self.state in ("complete", "pruned", "failed")

    @property
    def run_id(self) -> str | None:
        return self.run_ids[0] if self.run_ids else None


@dataclass(frozen=True)
class SearchResult:
    """What `search` returns (and `load_search` rebuilds from storage)."""

    study: str
    storage: str
    objectives: tuple[Objective, ...]
    trials: tuple[TrialSummary, ...]
    best: tuple[TrialSummary, ...]               # the best trial, or the Pareto trials
    best_specs: tuple[Mapping[str, Any], ...]    # each as a concrete spec dict (no markers)
    spec: Mapping[str, Any]                      # the searchable spec
    data: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    budget: Mapping[str, Any] = field(default_factory=dict)
    exported: tuple[str, ...] = ()
    interrupted: bool = False
    seconds: float = 0.0                          # wall time of this call
    importances: Mapping[str, float] = field(default_factory=dict)
    stopped: str = ""                             # why this call stopped short of `trials`, if it did

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def trained_objective(self) -> Objective:
        return next(o for o in self.objectives if o.trained)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def epochs(self) -> int:
        return sum(t.epochs for t in self.trials)


def _summary(t: Any) -> TrialSummary:
    import optuna

    attrs = t.user_attrs
    state = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
             optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.RUNNING: "running",
             optuna.trial.TrialState.WAITING: "waiting"}[t.state]
    if attrs.get("infeasible"):
        state = "infeasible"
    elif attrs.get("duplicate_of") is not None and state in ("complete", "pruned"):
        state = "duplicate"
    elif (attrs.get("interrupted") or attrs.get("abandoned")) and state == "failed":
        state = "interrupted"
    elif attrs.get("surplus") and state == "failed":
        state = "surplus"
    run_ids = tuple(attrs.get("run_ids") or ([attrs["run_id"]] if attrs.get("run_id") else []))
    duration = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    return TrialSummary(
        number=t.number, state=state, params=freeze(dict(t.params)),
        # Optuna keeps a pruned trial's last intermediate value as its value; only a
        # completed trial has real objective values.
        values=tuple(t.values) if t.values is not None and t.state == optuna.trial.TrialState.COMPLETE else None,
        vars=freeze(attrs.get("vars") or {}), train=freeze(attrs.get("train") or {}),
        costs=freeze(attrs.get("costs") or {}), curve=tuple(attrs.get("curve") or ()),
        epochs=int(attrs.get("epochs") or 0), run_ids=run_ids, infeasible=attrs.get("infeasible"),
        message=str(attrs.get("message") or t.system_attrs.get("fail_reason") or ""), duration_s=duration,
        duplicate_of=attrs.get("duplicate_of"))


def _finished(t: Any) -> bool:
    """Ended: complete, pruned (infeasible and duplicates too) or failed, but not a trial
    stopped by Ctrl-C or whose worker died (re-running the command redoes it)."""
    import optuna

    s = optuna.trial.TrialState
    return t.state in (s.COMPLETE, s.PRUNED) or (t.state == s.FAIL and not t.user_attrs.get("interrupted")
                                                 and not t.user_attrs.get("abandoned"))


def _counted(t: Any) -> bool:
    """Counts toward `trials`: a finished trial that trained (or tried to). An infeasible
    candidate (never trained), a duplicate (its choices were tried before: the earlier
    result is reused) and a surplus trial (it found every slot taken) spend nothing, so they
    do not count."""
    attrs = t.user_attrs
    return (_finished(t) and not attrs.get("infeasible") and attrs.get("duplicate_of") is None
            and not attrs.get("surplus"))


def _original(t: Any) -> bool:
    """A completed trial that is not a copy of an earlier one's result."""
    import optuna

    return t.state == optuna.trial.TrialState.COMPLETE and bool(t.values) and t.user_attrs.get("duplicate_of") is None


def _distinct(trials: Sequence[Any]) -> list[Any]:
    """The first trial of each set of choices (two workers may train the same choices at once)."""
    seen: set[str] = set()
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        key = repr(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


@dataclass(frozen=True)
class StudyInfo:
    """One study in a storage, for `archlab studies`."""

    name: str
    spec: str
    data: str
    objectives: tuple[str, ...]
    trials: int
    complete: int
    best: tuple[float, ...] | None
    started: float | None

def _pareto(trials: Sequence[Any], directions: Sequence[Any]) -> list[Any]:
    """Non-dominated complete trials (Optuna's rule), without asking the storage again."""
    from optuna.study import StudyDirection

    signs = [1 if d == StudyDirection.MAXIMIZE else -1 for d in directions]

    def dominates(a: Any, b: Any) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values, strict=True)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]
