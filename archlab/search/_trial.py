"""One trial of a search: the objective Optuna calls (sample, inspect, check the budget, train
and report each epoch), the pruner and sampler it runs under, and the Ctrl-C flag it checks."""

from __future__ import annotations

import math
import signal
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import SpecError, TrainingError
from ..spec import Spec
from ._slots import TrialHeartbeat, take_slot
from ._space import COSTS, Budget, Objective, concrete_spec, measure_costs, sample, search_spaces

SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("none", "median", "hyperband")


# ----------------------------------------------------------------------------- pruning


@dataclass(frozen=True)
class ParetoMedianPruner:
    """Pruning for "accuracy vs cost" searches; see archlab.search's docstring for the rule.

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
    store_root: Any                   # the run store (a RunStorage: it pickles as its location)
    seed: int
    total: int | None
    deadline: float | None            # time.time() after which no trial starts
    threads: int = 0
    worker: int = 0
    population: int = 50
    max_skipped: int = 50             # proposals in a row that train nothing before a worker stops


class Surplus(TrainingError):
    """A trial that found every slot of the study taken (it ends FAIL, marked ``surplus``)."""


class TrialObjective:
    """The function Optuna calls for each trial: sample, inspect, check budgets, train.

    Kept free of storage concerns: it talks to the trial (suggest, report, user attributes)
    and reads completed trials through `trial.study` for the Pareto pruner.
    """

    def __init__(self, job: _Job):
        from ..runs import open_store

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
        # The heartbeat tells other workers this trial's worker is alive (see _slots).
        with TrialHeartbeat(trial):
            return self._objective(trial)

    def _objective(self, trial: Any) -> float | tuple[float, ...]:
        import optuna

        from ..compare import cached_dataset

        try:
            vars_, train = sample(trial, self.spaces)
            trial.set_user_attr("vars", vars_)
            trial.set_user_attr("train", train)
            earlier = _earlier_same(trial)
            if earlier is not None:
                return self._reuse(trial, earlier)
            spec = concrete_spec(self.spec, vars_, train, self.job.settings)
            from ..train import resolve_settings

            settings = resolve_settings(spec, self.job.settings)
            ds = cached_dataset(self.job.data, settings.seed, self.job.data_root, settings.target)
            info = ds.info
            bound = spec.with_vars(info.vars(), strict=False).with_input(info.input_shape, info.input_dtype, named=info.named_inputs())
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
            if self.job.total is not None and not take_slot(trial, self.job.total, _STOP.check):
                raise Surplus(f"trial {trial.number}: the study's {self.job.total} trials were all taken by "
                              f"other workers; not trained, not counted")
            value = self._train(trial, spec, settings, ds, costs)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        if not self.multi:
            return value
        return tuple(value if o.trained else float(costs[COSTS[o.key]]) for o in self.job.objectives)

    def _reuse(self, trial: Any, earlier: Any) -> float | tuple[float, ...]:
        """The same choices as an earlier trial: its result, not another training run (the
        trial records `duplicate_of`; it does not count toward `trials`, and is never a
        second member of the front)."""
        import optuna

        trial.set_user_attr("duplicate_of", earlier.number)
        for key in ("costs", "curve", "infeasible"):
            if key in earlier.user_attrs:
                trial.set_user_attr(key, earlier.user_attrs[key])
        trial.set_user_attr("message", f"the same choices as trial {earlier.number}: its result is reused")
        if earlier.state == optuna.trial.TrialState.COMPLETE:
            return tuple(earlier.values) if self.multi else earlier.values[0]
        raise optuna.TrialPruned(f"the same choices as trial {earlier.number}, which was not completed")

    def _folds(self, ds: Any, settings: Any) -> Iterable[Any]:
        if not self.job.cv:
            return [ds]
        from ..compare import fold_datasets

        stratified = (settings.task or ds.info.task) == "classify"
        return fold_datasets(ds, self.job.cv, seed=settings.seed, stratified=stratified)

    def _train(self, trial: Any, spec: Spec, settings: Any, ds: Any, costs: Mapping[str, float]) -> float:
        import optuna

        from ..train import StopRun, Trainer

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
            if t.user_attrs.get("duplicate_of") is not None:  # its original is a peer already
                continue
            peer_costs = t.user_attrs.get("costs") or {}
            if all(COSTS[o.key] in peer_costs for o in self.costs):
                peers.append(([float(peer_costs[COSTS[o.key]]) for o in self.costs],
                              t.user_attrs.get("curve") or []))
        return self.pareto.should_prune(curve, costs, peers, maximize)


def _earlier_same(trial: Any) -> Any:
    """The first ended trial of the study with exactly these choices, or None. (A trial with
    the same choices still running in another worker is not waited for: both train.)"""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    params = trial.params
    same = [t for t in trial.study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number and t.params == params and not t.user_attrs.get("interrupted")
            and not t.user_attrs.get("abandoned") and not t.user_attrs.get("surplus")
            and t.user_attrs.get("duplicate_of") is None]
    return min(same, key=lambda t: t.number, default=None)


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


# ------------------------------------------------------------------------------ Ctrl-C


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
