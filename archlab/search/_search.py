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
constraints would need objective values, which an untrained candidate has not got. An
infeasible trial does not count toward `trials`: the budget is spent on trained candidates.

**Repeated choices.** Samplers propose the same point twice (TPE often does on small or
discrete spaces). A trial whose choices equal an earlier ended trial's is not trained again:
it reuses that result (Optuna's FAQ recipe: return the earlier value; a pruned or failed
original makes it PRUNED), records `duplicate_of` in its user attributes, does not count
toward `trials`, and is never a second member of the front or a second exported spec. Two
workers that draw the same choices at the same moment both train; the front keeps the first.
After `max_skipped` (50) proposals in a row that train nothing, infeasible or repeated, a
worker stops and `result.stopped` says why: the space left under the budget looks exhausted.

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
joins and resumes the same study; `trials` is the study's total of trials that trained or
tried to (complete, pruned by a pruner, or failed; infeasible, repeated and interrupted ones
do not count). `jobs=N` starts N worker
processes that share a counter, so one command never runs more than `trials`; and across
commands and machines a trial trains only if it holds one of the study's `trials` slots,
given out in the order of trial numbers (see `_slots`): two `search --trials 8` on one study
train 8 trials in all. A trial found over the budget ends at once as *surplus* (not
trained, not counted); a trial whose worker died (no heartbeat for `$ARCHLAB_TRIAL_GRACE`
seconds, default 120) is ended as *abandoned* and does not count, so a live worker or a
re-run replaces it.

Each trained trial is a run in the run store, tagged `{"study": NAME, "trial": "7"}` (and
`"fold"` with cv); the trial's user attribute `run_id` (`run_ids` with cv) links back.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core import ArchlabError, SpecError, content_key, format_metric, freeze, thaw
from ..spec import ChoiceSpace, SearchSpace, Spec, load_spec
from ._progress import _duration, _Progress
from ._space import (
    COSTS,
    Budget,
    Objective,
    SearchSpaces,
    choice_labels,
    concrete_spec,
    measure_costs,
    parse_count,
    parse_duration,
    parse_objectives,
    sample,
    search_spaces,
    suggest,
)
from ._storage import (
    SearchResult,
    StudyInfo,
    TrialSummary,
    _counted,
    _distinct,
    _original,
    _pareto,
    _quiet_optuna,
    _summary,
    default_storage_path,
    open_storage,
    storage_url,
)
from ._trial import (
    PRUNERS,
    SAMPLERS,
    ParetoMedianPruner,
    TrialObjective,
    _Job,
    _pareto_pruner,
)
from ._workers import _Counter, _run_trials, _run_workers

# The public names of the search modules, all importable from here (the search is split by
# job: search_space, search_storage, search_trial, search_workers, search_progress).
__all__ = [
    "COSTS",
    "Budget",
    "Objective",
    "ParetoMedianPruner",
    "SearchResult",
    "SearchSpaces",
    "StudyInfo",
    "TrialObjective",
    "TrialSummary",
    "choice_labels",
    "concrete_spec",
    "default_storage_path",
    "export_specs",
    "load_search",
    "measure_costs",
    "open_storage",
    "parse_count",
    "parse_duration",
    "parse_objectives",
    "sample",
    "search",
    "search_spaces",
    "storage_url",
    "studies",
    "suggest",
]

DEFAULT_TRIALS = 20


# -------------------------------------------------------------------------------- API


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
           max_skipped: int = 50, **settings: Any) -> SearchResult:
    """Search a spec's spaces with Optuna; see the module docstring for the rules.

    `trials` is the study's total of trained trials (re-running resumes up to it; infeasible
    candidates and repeated choices do not count); `timeout` (seconds or "10m") stops starting
    new trials; `max_skipped` proposals in a row that train nothing (infeasible or repeated)
    stop the search early, saying so in `result.stopped`; `settings` fix training settings
    (epochs=5, ...).

    >>> result = search("zoo:search-digits", trials=10, epochs=3, quiet=True)   # doctest: +SKIP
    >>> result.best[0].values, result.best_specs[0]["vars"]                      # doctest: +SKIP
    """
    import optuna

    from ..runs import STUDIES_JOURNAL, open_store

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
    if max_skipped < 1:
        raise SpecError(f"max_skipped must be at least 1. Received: {max_skipped}")
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
    from ..train import absolute_data_uri, resolve_settings

    data = absolute_data_uri(data)  # trial runs record where their data is: they evaluate from anywhere

    example = concrete_spec(base, {n: _example_value(s) for n, s in spaces.vars.items()},
                            {n: _example_value(s) for n, s in spaces.train.items()}, fixed)
    from ..compare import cached_dataset

    ds = cached_dataset(data, resolve_settings(example, fixed).seed, str(data_root) if data_root else None, target)
    from ..data import DiskSplit

    if cv and isinstance(ds.train, DiskSplit):  # streamed from disk: say now that folds cannot pool it
        from ..compare import development_split

        development_split(ds)  # raises, naming the size and the fix

    st = open_store(store)
    if jobs > 1 and isinstance(storage, optuna.storages.BaseStorage):
        raise SpecError("--jobs: worker processes need a storage URL or path, not a storage object")
    # The studies live beside the runs: in the run store's PostgreSQL database (Optuna's own
    # tables; machines sharing the store share the studies), else in its journal file.
    default = getattr(st, "url", None) or st.root / STUDIES_JOURNAL
    storage_obj, url = open_storage(storage if storage is not None else default)
    attrs = {"spec": base.to_dict(), "data": data, "settings": fixed, "objectives": [o.to_dict() for o in objs],
             "cv": cv, "budget": budget.to_dict()}
    key = content_key(attrs, 8)
    name = study or _default_study_name(base, data, objs, key)
    the_study = _open_study(name, storage_obj, objs, {"key": key, **attrs})

    existing = the_study.get_trials(deepcopy=False)
    done_before = sum(_counted(t) for t in existing)
    remaining = None if trials is None else max(0, trials - done_before)
    deadline = None if timeout_s is None else time.time() + timeout_s
    job = _Job(spec=base.to_dict(), data=data, data_root=str(data_root) if data_root else None,
               settings=fixed, objectives=objs, budget=budget, cv=cv, sampler=sampler, pruner=pruner,
               study=name, storage=url, store_root=st, seed=seed, total=trials, deadline=deadline,
               threads=max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0,
               population=max(4, min(50, (trials or 100) // 5)), max_skipped=max_skipped)
    if not quiet:
        print(f"study {name} in {_shown(url)}: {done_before} trials so far"
              + (f", {remaining} to go" if remaining is not None else "")
              + (f", for at most {_duration(timeout_s)}" if timeout_s else ""), file=sys.stderr)
    interrupted, stopped = False, ""
    with _Progress(trials, deadline, objs, done_before, quiet) as progress:
        progress.mark_seen(existing)
        try:
            if remaining == 0:
                pass
            elif jobs == 1:
                stopped = _run_trials(job, _Counter(remaining) if remaining is not None else None,
                                      on_trial=lambda s: progress.update(s.get_trials(deepcopy=False)))
            else:
                stopped = _run_workers(job, jobs, remaining, the_study, progress)
        except KeyboardInterrupt:
            interrupted = True
    result = load_search(name, storage_obj, _storage_url=url, _seconds=time.perf_counter() - started,
                         _interrupted=interrupted)
    if stopped:
        result = dataclasses.replace(result, stopped=stopped)
    if export is not None and result.best_specs:
        result = dataclasses.replace(result, exported=tuple(str(p) for p in export_specs(result, export)))
    return result


def _shown(url: str) -> str:
    from ..runs import masked_url

    return masked_url(url)


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
        raise ArchlabError(f"study {study!r} is not in {_shown(url)}; studies there: "
                           f"{', '.join(names) or 'none'} (see `archlab studies`)") from None
    attrs = s.user_attrs
    objs = tuple(Objective(**o) for o in attrs.get("objectives") or []) or tuple(
        Objective(f"value{i}", f"val_{i}", d.name.lower()) for i, d in enumerate(s.directions))
    frozen = s.get_trials(deepcopy=False)
    summaries = tuple(_summary(t) for t in frozen)
    # The front and the best come from distinct choices: a duplicate repeats an earlier
    # trial's result, and two workers may have trained the same choices at once.
    complete = _distinct([t for t in frozen if _original(t)])
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
            values = ", ".join(f"{o.key} {format_metric(v)}" for o, v in zip(objs, t.values or (), strict=False))
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
        complete = _distinct([t for t in trials if _original(t)])
        objs = [o["name"] for o in attrs.get("objectives") or []] or [d.name.lower() for d in s.directions]
        best = None
        if complete:
            i = next((k for k, o in enumerate(attrs.get("objectives") or []) if o["key"] not in COSTS), 0)
            sign = 1 if s.directions[i].name == "MAXIMIZE" else -1
            best = tuple(max(complete, key=lambda t: sign * t.values[i]).values)
        out.append(StudyInfo(
            name=s.study_name, spec=str((attrs.get("spec") or {}).get("name", "-")), data=str(attrs.get("data", "-")),
            objectives=tuple(objs), trials=sum(_counted(t) for t in trials), complete=len(complete), best=best,
            started=attrs.get("created") or (s.datetime_start.timestamp() if s.datetime_start else None)))
    return sorted(out, key=lambda x: x.started or 0)
