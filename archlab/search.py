"""Architecture search on Optuna: depth, width, layer types and connections, under budgets.

    result = archlab.search.search("zoo:search-digits", data="digits", trials=40)
    result.best[0].values, result.best_specs[0]          # the winner, as a concrete spec

Optuna samples, prunes and stores; this module only connects it to archlab. The pieces, in
the order a trial meets them:

**Search spaces** are the spec's `vars` markers (`{int: [lo, hi], log, step}`, `{float: ...}`,
`{choice: [...]}`) and the same markers in its `train:` section (`lr: {float: [1e-4, 1e-2],
log: true}`), mapped to `trial.suggest_int/float/categorical`. A choice between scalars
(`[3, 5]`, `[relu, gelu]`, or block names `[plain, residual]` used as `- $block`) is
suggested as is; a choice between whole sub-blocks written inline (lists or mappings) is
suggested by a short label and mapped back. A training setting given explicitly to
`search` (e.g. `epochs=5`) is fixed, not searched.

**Costs and budgets** come from the inspector on the meta device before any training:
parameters, forward FLOPs per sample, training memory at the batch size, and (only when
asked for) CPU latency at batch 1. A candidate over `max_params`, `max_flops` or
`max_latency_ms`, or one that cannot be built for the data (a shape error), is *infeasible*:
no run is created, no epoch is trained, the reason is kept in the trial's user attribute
`infeasible`, and the trial ends as PRUNED with no intermediate value. Why PRUNED and not an
Optuna constraint or FAIL: TPE ranks pruned trials below every completed one, so it learns
to avoid the infeasible region at once; FAIL trials are ignored by the samplers, and
constraints would need objective values, which an untrained candidate has not got.

**Objectives**: one trained objective, `val_acc` (or `val_<metric>`, maximised; `val_loss`
minimised; a `:max`/`:min` suffix overrides), plus any cost objectives `params:min`,
`flops:min`, `memory:min`, `latency:min`. The trained value is the best validation value
over the epochs (the trainer keeps those weights); with `cv=K`, its mean over K folds of the
pooled train+validation data. The test split is never looked at.

**Pruning.** One objective: Optuna's pruners (`median`: MedianPruner, `hyperband`). Each
epoch's validation value is reported with `trial.report(value, step)` (step = epoch - 1, and
fold * epochs + epoch - 1 with `cv`) and `trial.should_prune()` stops the run through the
trainer's `on_epoch` callback (`StopRun("pruned")`, then `optuna.TrialPruned`).
Several objectives: Optuna cannot prune those, but cost objectives are known before
training, so only the accuracy curve is uncertain. `ParetoMedianPruner` prunes a trial at
epoch e when, among the COMPLETED trials whose every cost objective is <= this trial's (they
are at least as cheap on every axis), this trial's best value so far is worse than the median
(`percentile`) of theirs at epoch e. A trial that ends no better than such cheaper trials is
dominated and cannot be on the Pareto front; a trial with no cheaper completed trial is never
pruned. As in MedianPruner, nothing is pruned during the first `n_warmup_steps` epochs or
before `n_startup_trials` cheaper trials have reached epoch e. Curves are kept in the trial
user attribute `curve` (Optuna refuses `report` in multi-objective studies).

**Storage.** By default an Optuna journal file, `<ARCHLAB_HOME>/studies.journal`
(JournalStorage + JournalFileBackend, writes appended under a file lock). Measured on this
project's machine (bench/search_efficiency.md): Optuna's RDBStorage on SQLite failed most
worker starts when several processes opened a fresh database at once ("table studies
already exists"), with or without a 60 s busy timeout, and under load lost trials to commit
errors with 12 concurrent workers; the journal file had no error in any run. Any Optuna URL
passes through (`postgresql://...`, `mysql://...`, `sqlite:///path`, the latter with a 60 s
busy timeout), and `journal:PATH` names another journal file. The study name defaults to
the spec's name, the data, the objectives and a hash of everything that defines the
trials, so re-running the same command (on this or another machine sharing the storage)
joins and resumes the same study; `trials` is the study's total (finished trials: complete,
pruned, infeasible or failed; interrupted ones do not count). `jobs=N` starts N worker
processes that share a counter, so one command never runs more than `trials`; workers on
other machines are stopped by the shared count, overshooting by at most the trials already
under way.

Each trained trial is a run in the run store, tagged `{"study": NAME, "trial": "7"}` (and
`"fold"` with cv); the trial's user attribute `run_id` (`run_ids` with cv) links back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .errors import ArchlabError, SpecError, TrainingError
from .frozen import FrozenDict
from .spec import (
    ChoiceSpace,
    FloatSpace,
    IntSpace,
    SearchSpace,
    Spec,
    freeze,
    load_spec,
    parse_space,
    thaw,
)

__all__ = [
    "COSTS",
    "Budget",
    "Objective",
    "ParetoMedianPruner",
    "SearchResult",
    "SearchSpaces",
    "StudyInfo",
    "TrialSummary",
    "export_specs",
    "load_search",
    "open_storage",
    "parse_count",
    "parse_duration",
    "parse_objectives",
    "search",
    "search_spaces",
    "studies",
]

# Cost objectives: name -> the key in a trial's `costs` attribute. All but latency come
# from the meta-device inspector; latency is a timed CPU forward pass at batch 1.
COSTS = {"params": "params", "flops": "flops", "memory": "memory", "latency": "latency_ms"}
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("none", "median", "hyperband")
DEFAULT_TRIALS = 20
_MARKERS = ("int", "float", "choice")


# ----------------------------------------------------------------------------- parsing


def parse_duration(text: str | float | int | None) -> float | None:
    """Seconds from `90`, `90s`, `10m`, `1.5h`.

    >>> parse_duration("10m"), parse_duration("1.5h"), parse_duration(30)
    (600.0, 5400.0, 30.0)
    """
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text).lower())
        if not m:
            raise SpecError(f"--timeout: expected a duration such as 90s, 10m or 1.5h. Received: {text!r}")
        value = float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]
    if not value > 0:
        raise SpecError(f"--timeout: must be positive. Received: {text!r}")
    return value


def parse_count(text: str | float | int | None, what: str = "--max-params") -> float | None:
    """A count with an optional k/M/G suffix (powers of 1000).

    >>> parse_count("100k"), parse_count("5M"), parse_count("1.5G"), parse_count(2000)
    (100000, 5000000, 1500000000, 2000)
    """
    if text is None:
        return None
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kKmMgGtT]?)\s*", str(text))
        if not m:
            raise SpecError(f"{what}: expected a number with an optional k, M or G suffix, e.g. 100k. "
                            f"Received: {text!r}")
        value = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m[2].lower()]
    if not value > 0:
        raise SpecError(f"{what}: must be positive. Received: {text!r}")
    return int(value) if float(value).is_integer() else value


# -------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Objective:
    """One thing the search optimises: a validation metric (trained) or a cost (inspected)."""

    name: str             # as written, e.g. "val_acc" or "params:min"
    key: str              # "val_acc" (a history key) or a cost: "params", "flops", "memory", "latency"
    direction: str        # "maximize" | "minimize"

    @property
    def trained(self) -> bool:
        return self.key not in COSTS

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "key": self.key, "direction": self.direction}


def parse_objectives(items: str | Sequence[str]) -> tuple[Objective, ...]:
    """`["val_acc", "params:min"]` -> Objectives; exactly one must be a `val_*` metric.

    >>> [o.direction for o in parse_objectives(["val_acc", "params:min"])]
    ['maximize', 'minimize']
    """
    if isinstance(items, str):
        items = [items]
    out: list[Objective] = []
    for item in items:
        key, _, way = str(item).strip().partition(":")
        if key in COSTS:
            direction = {"": "minimize", "min": "minimize", "max": "maximize"}.get(way)
        elif key.startswith("val_") and len(key) > 4:
            default = "minimize" if key.endswith("loss") else "maximize"
            direction = {"": default, "min": "minimize", "max": "maximize"}.get(way)
        else:
            raise SpecError(f"--objective {item}: expected val_<metric> (e.g. val_acc) or a cost: "
                            f"{', '.join(c + ':min' for c in COSTS)}")
        if direction is None:
            raise SpecError(f"--objective {item}: the direction must be :min or :max. Received: {way!r}")
        if any(o.key == key for o in out):
            raise SpecError(f"--objective {item}: {key} is given twice")
        out.append(Objective(str(item), key, direction))
    trained = [o for o in out if o.trained]
    if len(trained) != 1:
        raise SpecError(f"--objective: give exactly one validation metric (e.g. val_acc) to train for, "
                        f"plus any costs ({', '.join(COSTS)}). Received: {', '.join(map(str, items)) or 'none'}")
    return tuple(out)


# ------------------------------------------------------------------------------ spaces


def _is_marker(value: Any) -> bool:
    return isinstance(value, Mapping) and any(k in value for k in _MARKERS)


@dataclass(frozen=True)
class SearchSpaces:
    """What a trial chooses: search-space vars, and searchable training settings."""

    vars: Mapping[str, SearchSpace]
    train: Mapping[str, SearchSpace]

    def __len__(self) -> int:
        return len(self.vars) + len(self.train)


def search_spaces(spec: Spec, fixed: Mapping[str, Any] | None = None) -> SearchSpaces:
    """The spec's var spaces and the markers in its `train:` section (settings in `fixed`,
    e.g. given on the command line, are not searched).

    >>> s = load_spec({"vars": {"w": {"int": [4, 8]}}, "model": ["relu"],
    ...                "train": {"lr": {"float": [1e-4, 1e-2], "log": True}}})
    >>> sorted(search_spaces(s).vars), sorted(search_spaces(s).train)
    (['w'], ['lr'])
    """
    fixed = fixed or {}
    train: dict[str, SearchSpace] = {}
    for name, value in spec.train.items():
        if not _is_marker(value) or fixed.get(name) is not None:
            continue
        try:
            train[name] = parse_space(name, thaw(value))
        except SpecError as e:  # parse_space names vars.NAME; this one lives in train:
            raise SpecError(re.sub(rf"^vars\.{re.escape(name)}", f"train.{name}", str(e))) from None
    clash = sorted(set(train) & set(spec.spaces))
    if clash:
        raise SpecError(f"train.{clash[0]}: a var of the same name is searched too; rename one "
                        f"(Optuna needs one name per searched value)")
    return SearchSpaces(FrozenDict(dict(spec.spaces)), FrozenDict(train))


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, bool | int | float | str)


def choice_labels(space: ChoiceSpace) -> list[Any]:
    """What Optuna is offered for a choice: the options themselves when all are scalars,
    else one short, unique label per option (whole sub-blocks), mapped back by position.

    >>> choice_labels(ChoiceSpace(freeze([[{"linear": 8}], [{"residual": [{"linear": 8}]}]])))
    ['linear', 'residual']
    """
    options = list(space.options)
    if all(_is_scalar(o) for o in options):
        return options
    labels = [_short(o) for o in options]
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    return labels


def _short(option: Any, width: int = 40) -> str:
    if _is_scalar(option):
        return str(option)
    if isinstance(option, Mapping):
        text = "+".join(str(k) for k in option)
    else:
        parts = [next(iter(x)) if isinstance(x, Mapping) and x else str(x) for x in option]
        text = "+".join(str(p) for p in parts)
    return text if len(text) <= width else text[:width - 1] + "…"


def suggest(trial: Any, name: str, space: SearchSpace) -> Any:
    """Ask an Optuna trial for a value of one space; a sub-block choice comes back as the block."""
    if isinstance(space, IntSpace):
        return trial.suggest_int(name, space.low, space.high, step=space.step, log=space.log)
    if isinstance(space, FloatSpace):
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    labels = choice_labels(space)
    picked = trial.suggest_categorical(name, labels)
    return thaw(space.options[labels.index(picked)])


def sample(trial: Any, spaces: SearchSpaces) -> tuple[dict[str, Any], dict[str, Any]]:
    """(var values, training settings) for one trial, as plain data."""
    return ({n: suggest(trial, n, s) for n, s in spaces.vars.items()},
            {n: suggest(trial, n, s) for n, s in spaces.train.items()})


def concrete_spec(spec: Spec, vars: Mapping[str, Any], train: Mapping[str, Any],
                  settings: Mapping[str, Any] | None = None) -> Spec:
    """The spec at one point: no search marker left, in `vars` or in `train:`.

    Remaining var spaces take their defaults; remaining train markers (not searched because
    `settings` fixes them) are replaced by those settings.
    """
    out = spec.with_vars(dict(vars))
    if out.spaces:
        out = out.with_defaults()
    fixed = {k: v for k, v in (settings or {}).items() if v is not None}
    merged = {**{k: v for k, v in thaw(spec.train).items() if not _is_marker(v)}, **dict(train), **fixed}
    leftover = [k for k, v in spec.train.items() if _is_marker(v) and k not in merged]
    if leftover:
        raise SpecError(f"train.{leftover[0]}: is a search space; search it or set it")
    return Spec.from_dict({**out.to_dict(), "train": merged})


# ------------------------------------------------------------------- costs and budgets


@dataclass(frozen=True)
class Budget:
    """Limits checked by the inspector before training; None means no limit."""

    max_params: float | None = None
    max_flops: float | None = None
    max_latency_ms: float | None = None

    def violation(self, costs: Mapping[str, float]) -> str | None:
        """Why `costs` break the budget, or None.

        >>> Budget(max_params=1000).violation({"params": 1500, "flops": 1})
        'params 1,500 > max 1,000'
        """
        for key, limit, what in (("params", self.max_params, "params"), ("flops", self.max_flops, "FLOPs"),
                                 ("latency_ms", self.max_latency_ms, "latency ms")):
            if limit is not None and costs.get(key) is not None and costs[key] > limit:
                fmt = (lambda v: f"{v:,.2f}") if key == "latency_ms" else (lambda v: f"{v:,.0f}")
                return f"{what} {fmt(costs[key])} > max {fmt(limit)}"
        return None

    def to_dict(self) -> dict[str, float | None]:
        return {"max_params": self.max_params, "max_flops": self.max_flops, "max_latency_ms": self.max_latency_ms}


def measure_costs(spec: Spec, *, batch_size: int = 1, optimizer: str = "adamw", precision: str = "fp32",
                  latency: bool = False, task: str | None = None, num_classes: int | None = None) -> dict[str, float]:
    """Params, forward FLOPs per sample and training memory (bytes) at `batch_size`, from the
    meta-device inspector; with `latency`, the median CPU forward time at batch 1 (ms).
    With `task`, the output must suit it (else SpecError, like any shape error).

    >>> measure_costs(load_spec({"input": [4], "model": [{"linear": 2}]}))["params"]
    10
    """
    from .measure import inspect

    report = inspect(spec, batch=batch_size, optimizer=optimizer, dtype=precision)
    if task is not None:
        from .tasks import make_task

        make_task(task, num_classes).check_output(report.output_shape)
    costs: dict[str, float] = {"params": report.params, "flops": report.flops_per_sample,
                               "memory": report.memory.total}
    if latency:
        from .compare import latency_ms

        costs["latency_ms"] = latency_ms(spec, 1, 30)
    return costs


# ----------------------------------------------------------------------------- pruning


@dataclass(frozen=True)
class ParetoMedianPruner:
    """Pruning for "accuracy vs cost" searches; see the module docstring for the rule.

    >>> p = ParetoMedianPruner(n_startup_trials=2, n_warmup_steps=0)
    >>> peers = [((100,), [0.9, 0.95]), ((200,), [0.8, 0.97]), ((300,), [0.99, 0.99])]
    >>> p.should_prune([0.5], (250,), peers)     # two cheaper trials had 0.9 and 0.8 at epoch 1
    True
    >>> p.should_prune([0.5], (50,), peers)      # nothing completed is cheaper: may be on the front
    False
    """

    percentile: float = 50.0
    n_startup_trials: int = 3      # cheaper completed trials needed at that epoch
    n_warmup_steps: int = 1        # epochs never pruned at the start

    def __post_init__(self) -> None:
        if not 0 <= self.percentile <= 100:
            raise SpecError(f"ParetoMedianPruner: percentile must be in [0, 100]. Received: {self.percentile}")

    def threshold(self, step: int, costs: Sequence[float],
                  peers: Iterable[tuple[Sequence[float], Sequence[float]]], maximize: bool = True) -> float | None:
        """The percentile of the cheaper peers' values at `step` (1-based), or None if too few."""
        import numpy as np

        values = [curve[step - 1] for peer_costs, curve in peers
                  if len(curve) >= step and math.isfinite(curve[step - 1])
                  and all(p <= c for p, c in zip(peer_costs, costs, strict=True))]
        if len(values) < max(1, self.n_startup_trials):
            return None
        return float(np.percentile(values, self.percentile if maximize else 100 - self.percentile))

    def should_prune(self, curve: Sequence[float], costs: Sequence[float],
                     peers: Iterable[tuple[Sequence[float], Sequence[float]]], maximize: bool = True) -> bool:
        """Whether a trial with this validation `curve` (one value per epoch so far) and these
        cost-objective values should stop, given completed `peers` as (costs, curve)."""
        step = len(curve)
        finite = [v for v in curve if math.isfinite(v)]
        if step <= self.n_warmup_steps or not finite:
            return False
        limit = self.threshold(step, costs, peers, maximize)
        if limit is None:
            return False
        best = max(finite) if maximize else min(finite)
        return best < limit if maximize else best > limit


# ----------------------------------------------------------------------------- storage


def default_storage_path() -> Path:
    from .store import default_root

    return default_root() / "studies.journal"


_STORAGES: dict[str, Any] = {}


def storage_url(storage: str | Path | None = None) -> str:
    """The canonical form of a storage argument: `journal:/abs/path` or a database URL.

    >>> storage_url("/tmp/s.journal"), storage_url("postgresql://db/x")
    ('journal:/tmp/s.journal', 'postgresql://db/x')
    """
    text = str(storage) if storage is not None else None
    if text is None or text.startswith("journal:") or text.endswith((".journal", ".log")):
        path = Path(text[8:] if text and text.startswith("journal:") else text or default_storage_path())
        return f"journal:{path.expanduser().resolve()}"
    if "://" in text:
        return text
    if text.endswith((".db", ".sqlite", ".sqlite3")):
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    raise SpecError(f"--storage {text}: expected an Optuna storage URL (sqlite:///path.db, "
                    f"postgresql://..., mysql://...) or journal:PATH")


def open_storage(storage: str | Path | Any | None = None) -> tuple[Any, str]:
    """An Optuna storage and its canonical URL (opened once per process).

    None: the journal file in the run store; `journal:PATH` or a `*.journal`/`*.log` path:
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
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("object:"):
        raise ArchlabError(f"{url}: an in-memory storage object cannot be shared with worker processes")
    if url.startswith("journal:"):
        path = Path(url[8:])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except ImportError as e:
        raise ArchlabError(f"--storage {url}: the database driver is not installed ({e})") from None
    except Exception as e:  # sqlalchemy's errors: a bad URL, an unreachable server
        raise ArchlabError(f"--storage {url}: cannot open it ({type(e).__name__}: "
                           f"{str(e).splitlines()[0]})") from None


def _quiet_optuna() -> None:
    """Optuna's per-trial log lines and experimental-feature warnings would bury ours."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TrialSummary:
    """One trial as stored. `state`: complete, pruned, infeasible, failed, interrupted or running."""

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
    elif attrs.get("interrupted") and state == "failed":
        state = "interrupted"
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
        message=str(attrs.get("message") or t.system_attrs.get("fail_reason") or ""), duration_s=duration)


def _finished(t: Any) -> bool:
    """Counts toward `trials`: complete, pruned (infeasible too) or failed, but not a trial
    stopped by Ctrl-C (re-running the command redoes it)."""
    import optuna

    s = optuna.trial.TrialState
    return t.state in (s.COMPLETE, s.PRUNED) or (t.state == s.FAIL and not t.user_attrs.get("interrupted"))


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


# ------------------------------------------------------------------------ the objective


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to run trials of one study (picklable, for spawn)."""

    spec: Mapping[str, Any]
    data: str
    data_root: str | None
    settings: Mapping[str, Any]       # fixed training settings (explicit overrides, seed)
    objectives: tuple[Objective, ...]
    budget: Budget
    cv: int | None
    sampler: str
    pruner: Any                       # a name, or a pruner object
    study: str
    storage: str
    store_root: str
    seed: int
    total: int | None
    deadline: float | None            # time.time() after which no trial starts
    threads: int = 0
    worker: int = 0
    population: int = 50


_DATA_CACHE: dict[tuple, Any] = {}


def _dataset(uri: str, seed: int, root: str | None, target: str | None) -> Any:
    from .data import load_dataset

    key = (uri, seed, root, target)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(uri, seed=seed, root=root, target=target)
    return _DATA_CACHE[key]


class TrialObjective:
    """The function Optuna calls for each trial: sample, inspect, check budgets, train.

    Kept free of storage concerns: it talks to the trial (suggest, report, user attributes)
    and reads completed trials through `trial.study` for the Pareto pruner.
    """

    def __init__(self, job: _Job):
        from .store import open_store

        self.job = job
        self.spec = Spec.from_dict(job.spec)
        self.spaces = search_spaces(self.spec, job.settings)
        self.trained = next(o for o in job.objectives if o.trained)
        self.costs = [o for o in job.objectives if not o.trained]
        self.multi = len(job.objectives) > 1
        self.store = open_store(job.store_root)
        self.pareto = _pareto_pruner(job.pruner) if self.multi else None
        self.need_latency = job.budget.max_latency_ms is not None or any(o.key == "latency" for o in self.costs)

    def __call__(self, trial: Any) -> float | tuple[float, ...]:
        import optuna

        try:
            vars_, train = sample(trial, self.spaces)
            trial.set_user_attr("vars", vars_)
            trial.set_user_attr("train", train)
            spec = concrete_spec(self.spec, vars_, train, self.job.settings)
            from .train import resolve_settings

            settings = resolve_settings(spec, self.job.settings)
            ds = _dataset(self.job.data, settings.seed, self.job.data_root, settings.target)
            info = ds.info
            bound = spec.with_vars(info.vars(), strict=False).with_input(info.input_shape, info.input_dtype)
            try:
                costs = measure_costs(bound, batch_size=settings.batch_size, optimizer=settings.optimizer,
                                      precision=settings.precision, latency=self.need_latency,
                                      task=settings.task or info.task, num_classes=info.num_classes)
            except SpecError as e:  # ShapeError included: this point of the space cannot be built
                reason = f"cannot be built: {e}"
                trial.set_user_attr("infeasible", reason)
                raise optuna.TrialPruned(reason) from None
            _STOP.check()  # a Ctrl-C while inspecting: stop before training
            trial.set_user_attr("costs", costs)
            reason = self.job.budget.violation(costs)
            if reason:
                trial.set_user_attr("infeasible", reason)
                raise optuna.TrialPruned(reason)
            value = self._train(trial, spec, settings, ds, costs)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        if not self.multi:
            return value
        return tuple(value if o.trained else float(costs[COSTS[o.key]]) for o in self.job.objectives)

    def _folds(self, ds: Any, settings: Any) -> list[Any]:
        if not self.job.cv:
            return [ds]
        import torch

        from .compare import development_split, fold_indices
        from .data import Dataset, Split

        dev = development_split(ds)
        stratified = (settings.task or ds.info.task) == "classify"
        empty = Split(dev.x[:0], dev.y[:0])
        out = []
        for train_idx, val_idx in fold_indices(dev.y, self.job.cv, 0, settings.seed, stratified):
            tr, va = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
            out.append(Dataset(ds.info, Split(dev.x[tr], dev.y[tr]), Split(dev.x[va], dev.y[va]), empty))
        return out

    def _train(self, trial: Any, spec: Spec, settings: Any, ds: Any, costs: Mapping[str, float]) -> float:
        import optuna

        from .train import StopRun, Trainer

        key, maximize = self.trained.key, self.trained.direction == "maximize"
        curve: list[float] = []
        run_ids: list[str] = []
        bests: list[float] = []
        epochs = 0
        cost_vector = [float(costs[COSTS[o.key]]) for o in self.costs]
        for fold, fold_ds in enumerate(self._folds(ds, settings)):
            tags = {"study": self.job.study, "trial": str(trial.number)}
            if self.job.cv:
                tags.update(fold=str(fold), cv=str(self.job.cv))
            offset = fold * settings.epochs

            def on_epoch(record: dict[str, float], offset: int = offset) -> None:
                if key not in record:
                    known = ", ".join(k for k in record if k.startswith("val_"))
                    raise SpecError(f"--objective {self.trained.name}: the validation metrics are {known}")
                value = float(record[key])
                curve.append(value)
                trial.set_user_attr("curve", curve)
                epoch = int(record["epoch"])
                if self.pareto is not None:
                    if self._pareto_prune(trial, curve, cost_vector, maximize):
                        raise StopRun("pruned", f"pruned at epoch {epoch}: worse than cheaper trials")
                elif not self.multi:
                    trial.report(value, offset + epoch - 1)
                    if trial.should_prune():
                        raise StopRun("pruned", f"pruned by Optuna at epoch {epoch}")

            trainer = Trainer(spec, fold_ds, settings, self.store, data_uri=self.job.data, quiet=True, tags=tags,
                              evaluate_test=False, on_epoch=on_epoch)
            run_ids.append(trainer.run_id)
            trial.set_user_attr("run_ids" if self.job.cv else "run_id", run_ids if self.job.cv else trainer.run_id)
            try:
                run = trainer.run()
            except StopRun as e:
                trial.set_user_attr("message", e.message)
                raise optuna.TrialPruned(e.message) from None
            except TrainingError as e:
                trial.set_user_attr("message", str(e))
                raise
            finally:  # pruned, failed, interrupted or finished: the epochs it cost
                epochs += len(trainer.history)
                trial.set_user_attr("epochs", epochs)
            values = [e[key] for e in run.history if key in e and math.isfinite(e[key])]
            if not values:
                raise TrainingError(f"trial {trial.number}: no finite {key} was recorded")
            bests.append(max(values) if maximize else min(values))
        return statistics.fmean(bests)

    def _pareto_prune(self, trial: Any, curve: list[float], costs: list[float], maximize: bool) -> bool:
        import optuna

        assert self.pareto is not None
        peers = []
        for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            peer_costs = t.user_attrs.get("costs") or {}
            if all(COSTS[o.key] in peer_costs for o in self.costs):
                peers.append(([float(peer_costs[COSTS[o.key]]) for o in self.costs],
                              t.user_attrs.get("curve") or []))
        return self.pareto.should_prune(curve, costs, peers, maximize)


def _pareto_pruner(pruner: Any) -> ParetoMedianPruner | None:
    if isinstance(pruner, ParetoMedianPruner):
        return pruner
    if pruner in (None, "none"):
        return None
    if pruner == "median":
        return ParetoMedianPruner()
    raise SpecError(f"--pruner {pruner}: a multi-objective study is pruned by the Pareto-aware median "
                    f"rule (--pruner median) or not at all (--pruner none)")


def _make_pruner(pruner: Any, steps: int) -> Any:
    import optuna

    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    if pruner in (None, "none"):
        return optuna.pruners.NopPruner()
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, steps), reduction_factor=3)
    raise SpecError(f"--pruner: expected one of {', '.join(PRUNERS)}. Received: {pruner!r}")


def _make_sampler(name: str, seed: int, multi: bool, population: int) -> Any:
    import optuna

    if isinstance(name, optuna.samplers.BaseSampler):
        return name
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    raise SpecError(f"--sampler: expected one of {', '.join(SAMPLERS)}. Received: {name!r}")


# --------------------------------------------------------------------------- workers


def _load_study(job: _Job, seed: int) -> Any:
    import optuna

    storage, _ = open_storage(job.storage)
    epochs_hint = int(job.settings.get("epochs") or _spec_epochs(job.spec))
    steps = epochs_hint * (job.cv or 1)
    return optuna.load_study(
        study_name=job.study, storage=storage,
        sampler=_make_sampler(job.sampler, seed, len(job.objectives) > 1, job.population),
        pruner=None if len(job.objectives) > 1 else _make_pruner(job.pruner, steps))


def _spec_epochs(spec: Mapping[str, Any]) -> int:
    value = (spec.get("train") or {}).get("epochs", 10)
    return int(value) if isinstance(value, int | float) else 10


def _finished_count(study: Any) -> int:
    return sum(_finished(t) for t in study.get_trials(deepcopy=False))


def _take_token(tokens: Any) -> bool:
    if tokens is None:
        return True
    with tokens.get_lock():
        if tokens.value <= 0:
            return False
        tokens.value -= 1
        return True


class _StopFlag:
    """Ctrl-C during a search: the first stops at the next safe point (the trainer, which
    installs its own handler while it runs, checkpoints and stops; outside training the
    trial stops before it trains); a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def install(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        self.requested = False
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        signal.signal(signal.SIGINT, handler)
        return lambda: signal.signal(signal.SIGINT, previous)


_STOP = _StopFlag()


def _run_trials(job: _Job, tokens: Any, on_trial: Callable[[Any], None] | None = None) -> None:
    """One worker's loop: until the study has `total` finished trials, the deadline passes,
    or the shared token count (this command's trials) runs out."""
    _quiet_optuna()
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    storage, _ = open_storage(job.storage)
    # A different sampler seed per worker and per resumption: the same seed would make
    # random start-up samples repeat what the study already tried.
    import optuna

    known = len(optuna.load_study(study_name=job.study, storage=storage).get_trials(deepcopy=False))
    study = _load_study(job, job.seed + 7919 * job.worker + 104_729 * known)
    objective = TrialObjective(job)
    restore = _STOP.install()
    try:
        while True:
            _STOP.check()
            if job.deadline is not None and time.time() >= job.deadline:
                return
            if job.total is not None and _finished_count(study) >= job.total:
                return
            if not _take_token(tokens):
                return
            study.optimize(objective, n_trials=1, catch=(TrainingError,))
            if on_trial is not None:
                on_trial(study)
    finally:
        restore()


def _worker_main(job: _Job, tokens: Any, errors: Any) -> None:
    """Entry point of a spawned worker process."""
    # Its own process group: a terminal's Ctrl-C reaches the parent alone, which passes one
    # SIGINT on to each worker (so a worker never gets two at once and stops mid-write).
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    try:
        _run_trials(job, tokens)
    except KeyboardInterrupt:
        return
    except ArchlabError as e:
        errors.put(str(e))
        _drain(tokens)
        sys.exit(1)
    except BaseException as e:
        errors.put(f"worker {job.worker}: {type(e).__name__}: {e}")
        _drain(tokens)
        raise


def _drain(tokens: Any) -> None:
    if tokens is not None:
        with tokens.get_lock():
            tokens.value = 0


# ---------------------------------------------------------------------------- progress


class _Progress:
    """Trials done / total, best so far and ETA: a bar on a terminal, one line per trial in
    logs and pipes, nothing when quiet."""

    def __init__(self, total: int | None, deadline: float | None, objectives: tuple[Objective, ...],
                 done: int, quiet: bool):
        from rich.console import Console

        self.total, self.deadline, self.objectives, self.quiet = total, deadline, objectives, quiet
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.started = time.perf_counter()
        self.start_done = done
        self.seen: set[int] = set()
        self.bar: Any = None
        self.task: Any = None
        self.trained = next(o for o in objectives if o.trained)

    def __enter__(self) -> _Progress:
        if not self.quiet and self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[best]}"), TextColumn("{task.fields[eta]}"),
                                TimeElapsedColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("trials", total=self.total, completed=self.start_done, best="", eta="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def mark_seen(self, trials: Iterable[Any]) -> None:
        self.seen.update(t.number for t in trials if _finished(t))

    def update(self, trials: Sequence[Any]) -> None:
        new = sorted((t for t in trials if t.number not in self.seen and (_finished(t) or
                      t.user_attrs.get("interrupted"))), key=lambda t: t.number)
        if not new:
            return
        done = sum(_finished(t) for t in trials)
        best = self._best(trials)
        eta = self._eta(done)
        for t in new:
            self.seen.add(t.number)
            if self.quiet:
                continue
            total = f"/{self.total}" if self.total else ""
            line = f"[{done}{total}] {self._describe(_summary(t))}  | {best}" + (f"  {eta}" if eta else "")
            if self.bar is not None:
                self.bar.console.print(line)
            else:
                self.console.print(line)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, best=best, eta=eta)

    def _describe(self, s: TrialSummary) -> str:
        key = self.trained.key
        if s.state == "infeasible":
            return f"trial {s.number} infeasible ({s.infeasible}), not trained"
        if s.state == "complete" and s.values is not None:
            parts = [f"{o.key} {_fmt(v)}" for o, v in zip(self.objectives, s.values, strict=True)]
            return f"trial {s.number} complete  " + "  ".join(parts) + f"  ({s.epochs} epochs)"
        if s.state == "pruned":
            last = f"  {key} {max(s.curve):.4f}" if s.curve else ""
            return f"trial {s.number} pruned after {s.epochs} epochs{last}"
        return f"trial {s.number} {s.state}" + (f": {s.message}" if s.message else "")

    def _best(self, trials: Sequence[Any]) -> str:
        import optuna

        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        if not complete:
            return "best: none yet"
        i = next(k for k, o in enumerate(self.objectives) if o.trained)
        sign = 1 if self.trained.direction == "maximize" else -1
        top = max(complete, key=lambda t: sign * t.values[i])
        text = f"best {self.trained.key} {top.values[i]:.4f} (trial {top.number})"
        if len(self.objectives) > 1:
            from optuna.study import StudyDirection

            dirs = [StudyDirection.MAXIMIZE if o.direction == "maximize" else StudyDirection.MINIMIZE
                    for o in self.objectives]
            text += f", Pareto front {len(_pareto(complete, dirs))}"
        return text

    def _eta(self, done: int) -> str:
        elapsed = time.perf_counter() - self.started
        mine = done - self.start_done
        left = []
        if self.total and mine > 0:
            left.append(elapsed / mine * max(0, self.total - done))
        if self.deadline is not None:
            left.append(max(0.0, self.deadline - time.time()))
        return f"eta {_duration(min(left))}" if left else ""


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}"


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _pareto(trials: Sequence[Any], directions: Sequence[Any]) -> list[Any]:
    """Non-dominated complete trials (Optuna's rule), without asking the storage again."""
    from optuna.study import StudyDirection

    signs = [1 if d == StudyDirection.MAXIMIZE else -1 for d in directions]

    def dominates(a: Any, b: Any) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values, strict=True)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


# -------------------------------------------------------------------------------- API


def _key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _default_study_name(spec: Spec, data: str, objectives: tuple[Objective, ...], key: str) -> str:
    data_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data.split("?")[0].split(":", 1)[-1]).name or data)
    objs = ",".join(o.key for o in objectives)
    return f"{spec.name}.{data_name}.{objs}.{key}"


def search(spec: str | Spec | Mapping[str, Any], data: str = "digits", *, trials: int | None = None,
           timeout: float | str | None = None, objectives: str | Sequence[str] = ("val_acc",),
           max_params: float | str | None = None, max_flops: float | str | None = None,
           max_latency_ms: float | None = None, sampler: str | None = None, pruner: Any = "median",
           cv: int | None = None, jobs: int = 1, storage: str | Path | None = None, study: str | None = None,
           export: str | Path | None = None, seed: int = 0, quiet: bool = False,
           store: str | Path | None = None, data_root: str | Path | None = None, target: str | None = None,
           **settings: Any) -> SearchResult:
    """Search a spec's spaces with Optuna; see the module docstring for the rules.

    `trials` is the study's total (re-running resumes up to it); `timeout` (seconds or
    "10m") stops starting new trials; `settings` fix training settings (epochs=5, ...).

    >>> result = search("zoo:search-digits", trials=10, epochs=3, quiet=True)   # doctest: +SKIP
    >>> result.best[0].values, result.best_specs[0]["vars"]                      # doctest: +SKIP
    """
    import optuna

    from .store import open_store

    _quiet_optuna()
    started = time.perf_counter()
    base = load_spec(spec)
    objs = parse_objectives(objectives)
    multi = len(objs) > 1
    sampler = sampler or ("nsga2" if multi else "tpe")
    if isinstance(sampler, str) and sampler not in SAMPLERS:
        raise SpecError(f"--sampler: expected one of {', '.join(SAMPLERS)}. Received: {sampler!r}")
    if multi:
        _pareto_pruner(pruner)  # refuse hyperband early
    if isinstance(pruner, str) and pruner not in PRUNERS:
        raise SpecError(f"--pruner: expected one of {', '.join(PRUNERS)}. Received: {pruner!r}")
    if trials is not None and trials < 1:
        raise SpecError(f"--trials must be at least 1. Received: {trials}")
    if jobs < 1:
        raise SpecError(f"--jobs must be at least 1. Received: {jobs}")
    if cv is not None and cv < 2:
        raise SpecError(f"--cv must be at least 2. Received: {cv}")
    timeout_s = parse_duration(timeout)
    if trials is None and timeout_s is None:
        trials = DEFAULT_TRIALS
    budget = Budget(parse_count(max_params, "--max-params"), parse_count(max_flops, "--max-flops"),
                    None if max_latency_ms is None else float(parse_count(max_latency_ms, "--max-latency-ms")))
    fixed = {k: v for k, v in settings.items() if v is not None}
    fixed["seed"] = seed
    if target:
        fixed["target"] = target
    spaces = search_spaces(base, fixed)
    if not len(spaces):
        raise SpecError(f"{base.name}: the spec has no search space; mark vars such as "
                        f"depth: {{int: [1, 4]}} or train settings such as lr: {{float: [1e-4, 1e-2], log: true}}")

    # Fail fast on bad settings or data, before any storage or worker is touched.
    from .train import resolve_settings

    example = concrete_spec(base, {n: _example_value(s) for n, s in spaces.vars.items()},
                            {n: _example_value(s) for n, s in spaces.train.items()}, fixed)
    _dataset(data, resolve_settings(example, fixed).seed, str(data_root) if data_root else None, target)

    st = open_store(store)
    if jobs > 1 and isinstance(storage, optuna.storages.BaseStorage):
        raise SpecError("--jobs: worker processes need a storage URL or path, not a storage object")
    storage_obj, url = open_storage(storage if storage is not None else st.root / "studies.journal")
    attrs = {"spec": base.to_dict(), "data": data, "settings": fixed, "objectives": [o.to_dict() for o in objs],
             "cv": cv, "budget": budget.to_dict()}
    key = _key(attrs)
    name = study or _default_study_name(base, data, objs, key)
    the_study = _open_study(name, storage_obj, objs, {"key": key, **attrs})

    existing = the_study.get_trials(deepcopy=False)
    done_before = sum(_finished(t) for t in existing)
    remaining = None if trials is None else max(0, trials - done_before)
    deadline = None if timeout_s is None else time.time() + timeout_s
    job = _Job(spec=base.to_dict(), data=data, data_root=str(data_root) if data_root else None,
               settings=fixed, objectives=objs, budget=budget, cv=cv, sampler=sampler, pruner=pruner,
               study=name, storage=url, store_root=str(st.root), seed=seed, total=trials, deadline=deadline,
               threads=max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0,
               population=max(4, min(50, (trials or 100) // 5)))
    if not quiet:
        print(f"study {name} in {url}: {done_before} trials so far"
              + (f", {remaining} to go" if remaining is not None else "")
              + (f", for at most {_duration(timeout_s)}" if timeout_s else ""), file=sys.stderr)
    interrupted = False
    with _Progress(trials, deadline, objs, done_before, quiet) as progress:
        progress.mark_seen(existing)
        try:
            if remaining == 0:
                pass
            elif jobs == 1:
                _run_trials(job, _Counter(remaining) if remaining is not None else None,
                            on_trial=lambda s: progress.update(s.get_trials(deepcopy=False)))
            else:
                _run_workers(job, jobs, remaining, the_study, progress)
        except KeyboardInterrupt:
            interrupted = True
    result = load_search(name, storage_obj, _storage_url=url, _seconds=time.perf_counter() - started,
                         _interrupted=interrupted)
    if export is not None and result.best_specs:
        result = dataclasses.replace(result, exported=tuple(str(p) for p in export_specs(result, export)))
    return result


def _open_study(name: str, storage: Any, objs: tuple[Objective, ...], attrs: Mapping[str, Any]) -> Any:
    """Create the study, or join it when it exists and was made by the same command."""
    import optuna

    directions = [o.direction for o in objs]
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
    stored = study.user_attrs.get("key")
    if stored is None:  # new (a worker on another machine may be writing the same values now)
        for k, v in {**attrs, "created": time.time()}.items():
            study.set_user_attr(k, v)
    elif stored != attrs["key"]:
        raise SpecError(f"--study {name}: that study was made with another spec, data, objectives, "
                        f"settings or budget; choose another --study name (or leave it out)")
    if [d.name.lower() for d in study.directions] != directions:
        raise SpecError(f"--study {name}: its objectives have other directions; choose another name")
    return study


def _example_value(space: SearchSpace) -> Any:
    if space.default is not None:
        return thaw(space.default)
    if isinstance(space, ChoiceSpace):
        return thaw(space.options[0])
    return space.low


class _Counter:
    """A token count for one process (the same interface as a multiprocessing.Value)."""

    def __init__(self, value: int | None):
        self.value = value

    def get_lock(self) -> Any:
        from contextlib import nullcontext

        return nullcontext()


def _run_workers(job: _Job, jobs: int, remaining: int | None, study: Any, progress: _Progress) -> None:
    """N spawned processes on one study; the parent polls the storage for progress."""
    ctx = get_context("spawn")
    tokens = ctx.Value("i", remaining if remaining is not None else 2**31 - 1)
    errors = ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(dataclasses.replace(job, worker=i), tokens, errors),
                         daemon=False) for i in range(jobs)]
    for p in procs:
        p.start()
    # Ctrl-C must reach this loop even where SIGINT was ignored at start (a `&` job of a script).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            progress.update(study.get_trials(deepcopy=False))
        progress.update(study.get_trials(deepcopy=False))
    except KeyboardInterrupt:
        _stop_workers(procs)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    for p in procs:
        p.join()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if messages:
        raise ArchlabError(messages[0])


def _stop_workers(procs: list[Any]) -> None:
    """Ctrl-C: each worker finishes its step, records its trial and exits; a second Ctrl-C
    stops them at once (the trainer's rule), and after a minute they are terminated."""
    signals = 0

    def interrupt() -> None:
        nonlocal signals
        signals += 1
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGINT)

    interrupt()
    deadline = time.time() + 60
    while any(p.is_alive() for p in procs) and time.time() < deadline:
        try:
            for p in procs:
                p.join(timeout=0.2)
        except KeyboardInterrupt:
            if signals < 2:
                interrupt()
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()


def load_search(study: str, storage: str | Path | Any | None = None, *, _storage_url: str | None = None,
                _seconds: float = 0.0, _interrupted: bool = False) -> SearchResult:
    """Rebuild a SearchResult from a stored study (e.g. for a report, or another machine's)."""
    import optuna

    _quiet_optuna()
    if isinstance(storage, optuna.storages.BaseStorage):
        storage_obj, url = storage, _storage_url or repr(storage)
    else:
        storage_obj, url = open_storage(storage)
    try:
        s = optuna.load_study(study_name=study, storage=storage_obj)
    except KeyError:
        names = optuna.get_all_study_names(storage_obj)
        raise ArchlabError(f"study {study!r} is not in {url}; studies there: "
                           f"{', '.join(names) or 'none'} (see `archlab studies`)") from None
    attrs = s.user_attrs
    objs = tuple(Objective(**o) for o in attrs.get("objectives") or []) or tuple(
        Objective(f"value{i}", f"val_{i}", d.name.lower()) for i, d in enumerate(s.directions))
    frozen = s.get_trials(deepcopy=False)
    summaries = tuple(_summary(t) for t in frozen)
    complete = [t for t in frozen if t.state == optuna.trial.TrialState.COMPLETE and t.values]
    best_frozen: list[Any] = []
    if complete:
        if len(objs) > 1:
            best_frozen = _pareto(complete, s.directions)
            i = next(k for k, o in enumerate(objs) if o.trained)
            sign = -1 if objs[i].direction == "maximize" else 1
            best_frozen.sort(key=lambda t: (sign * t.values[i], t.number))
        else:
            sign = 1 if objs[0].direction == "maximize" else -1
            best_frozen = [max(complete, key=lambda t: (sign * t.values[0], -t.number))]
    by_number = {t.number: t for t in summaries}
    best = tuple(by_number[t.number] for t in best_frozen)
    spec = attrs.get("spec")
    settings = attrs.get("settings") or {}
    specs: list[Mapping[str, Any]] = []
    if spec is not None:
        base = Spec.from_dict(spec)
        for t in best:
            concrete = concrete_spec(base, thaw(t.vars), thaw(t.train), settings)
            values = ", ".join(f"{o.key} {_fmt(v)}" for o, v in zip(objs, t.values or (), strict=False))
            d = concrete.to_dict()
            d["name"] = f"{base.name}-trial{t.number}"
            d["description"] = (f"Found by archlab search (study {study}, trial {t.number}): {values}")
            d = {"name": d["name"], "description": d["description"], **{k: v for k, v in d.items()
                                                                         if k not in ("name", "description")}}
            specs.append(freeze(d))
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        importances = _importances(s, objs)
    return SearchResult(
        study=study, storage=url, objectives=objs, trials=summaries, best=best, best_specs=tuple(specs),
        spec=freeze(spec or {}), data=str(attrs.get("data", "")), settings=freeze(settings),
        budget=freeze(attrs.get("budget") or {}), interrupted=_interrupted, seconds=_seconds,
        importances=freeze(importances))


def _importances(study: Any, objs: tuple[Objective, ...]) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) for the trained objective; {} if undefined."""
    import warnings

    import optuna

    i = next(k for k, o in enumerate(objs) if o.trained)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = (lambda t: t.values[i]) if len(objs) > 1 else None
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, target=target))
    except (ValueError, RuntimeError, ZeroDivisionError):  # one distinct value, one param, ...
        return {}


def export_specs(result: SearchResult, path: str | Path) -> list[Path]:
    """Write the best concrete spec to `path` (YAML, no search markers); with several
    objectives, one file per Pareto trial: best-1.yaml, best-2.yaml, ... Returns the paths."""
    import yaml

    if not result.best_specs:
        raise ArchlabError(f"study {result.study}: no trial has completed yet; nothing to export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(result.best_specs) == 1 and not result.multi:
        targets = [path]
    else:
        targets = [path.with_name(f"{path.stem}-{i}{path.suffix or '.yaml'}")
                   for i in range(1, len(result.best_specs) + 1)]
    for target, spec in zip(targets, result.best_specs, strict=True):
        text = yaml.safe_dump(thaw(spec), sort_keys=False, default_flow_style=None)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    return targets


def studies(storage: str | Path | None = None) -> list[StudyInfo]:
    """Every study in a storage (default: the run store's journal), oldest first."""
    import optuna

    _quiet_optuna()
    storage_obj, _ = open_storage(storage)
    out = []
    for s in optuna.get_all_study_summaries(storage_obj, include_best_trial=False):
        attrs = s.user_attrs
        study = optuna.load_study(study_name=s.study_name, storage=storage_obj)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        objs = [o["name"] for o in attrs.get("objectives") or []] or [d.name.lower() for d in s.directions]
        best = None
        if complete:
            i = next((k for k, o in enumerate(attrs.get("objectives") or []) if o["key"] not in COSTS), 0)
            sign = 1 if s.directions[i].name == "MAXIMIZE" else -1
            best = tuple(max(complete, key=lambda t: sign * t.values[i]).values)
        out.append(StudyInfo(
            name=s.study_name, spec=str((attrs.get("spec") or {}).get("name", "-")), data=str(attrs.get("data", "-")),
            objectives=tuple(objs), trials=sum(_finished(t) for t in trials), complete=len(complete), best=best,
            started=attrs.get("created") or (s.datetime_start.timestamp() if s.datetime_start else None)))
    return sorted(out, key=lambda x: x.started or 0)
