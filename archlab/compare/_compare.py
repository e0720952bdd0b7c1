"""Compare candidate architectures by k-fold cross-validation.

    result = archlab.compare(["zoo:mlp", "zoo:cnn"], data="digits", cv=5)
    result.recommended, result.rule

Every candidate is trained on every fold of the development data (the data set's train and
validation splits pooled; stratified folds for classification). The test split is never
looked at while choosing: only the recommended candidate is retrained on all development
data at the end and scored on it, once. Each fold is a run in the run store, tagged with
a key of everything that determines it, so re-running the same command reuses finished
folds (an interrupted comparison resumes).

**Many machines, one comparison.** Each fold (and the final retrain) is claimed in the run
store before it is trained (``RunStorage.claim``: atomic, with a lease renewed by a
heartbeat thread), and its result is recorded in the store when it ends. So the same
``compare`` command started on several machines (or processes) sharing one store — e.g.
``--store postgresql://...`` — joins one comparison: each fold runs once, on whichever
process claims it first; a process with nothing left to claim waits for the others' folds;
a fold whose process died (no heartbeat for ``$ARCHLAB_CLAIM_LEASE`` seconds, default 60)
is claimed again and retrained from its start; a process stopped by Ctrl-C or an error
releases its claims at once.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from ..core import ArchlabError, SpecError, content_key, format_metric, thaw
from ..data import Dataset, Split
from ..explain import explain as explain_run
from ..model import build, inspect
from ..runs import (
    FOLD_FILE,
    TEST_REPORT,
    Claim,
    Heartbeat,
    RunStorage,
    lease_seconds,
    new_owner,
    open_store,
    read_json,
    write_text,
)
from ..spec import Spec, load_spec, parse_assignment
from ..train import Trainer, absolute_data_uri, make_task, resolve_settings
from ._folds import cached_dataset, development_split, fold_datasets
from ._report import write_report
from ._results import OVERFIT_GAP, UNDERFIT_TOLERANCE, CandidateSummary, Comparison, FoldResult


@dataclass(frozen=True)
class Candidate:
    label: str
    spec: Spec
    assignment: Mapping[str, Any] = field(default_factory=dict)   # its --vary values


@dataclass(frozen=True)
class FoldJob:
    """Everything one worker needs to train one candidate on one fold (picklable)."""

    candidate: str
    spec: Mapping[str, Any]
    data: str
    data_root: str | None
    target: str | None
    settings: Mapping[str, Any]
    cv: int
    repeat: int
    fold: int
    seed: int
    store_root: Any        # the run store (a RunStorage: it pickles as its location)
    key: str
    threads: int
    comparison: str = ""   # one id for every fold of one `compare` call (for `archlab report`)


# ------------------------------------------------------------------------- candidates


def parse_vary(items: Sequence[str] | Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]]:
    """`["depth=1,2,3", "width=32,64"]` -> {"depth": [1, 2, 3], "width": [32, 64]}."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {k: list(v) for k, v in items.items()}
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, raw = parse_assignment(item)
        text = item.split("=", 1)[1]
        values = [parse_assignment(f"{name}={v}")[1] for v in text.split(",")] if "," in text else [raw]
        if not name or not values or any(v is None for v in values):
            raise SpecError(f"--vary {item}: expected VAR=v1,v2,... e.g. --vary depth=1,2,3")
        grid[name] = values
    return grid


def make_candidates(specs: Sequence[str | Spec | Mapping[str, Any]], vary: Mapping[str, Sequence[Any]],
                    vars: Mapping[str, Any] | None = None) -> list[Candidate]:
    """One candidate per spec and point of the `vary` grid, each spec with `vars` (--set) applied."""
    vars = dict(vars or {})
    both = sorted(set(vars) & set(vary))
    if both:
        raise SpecError(f"--set {both[0]} and --vary {both[0]}: a var is either fixed or swept; "
                        f"drop one of the two")
    out: list[Candidate] = []
    for source in specs:
        spec = load_spec(source)
        if vars:
            spec = spec.with_vars(vars)
        combos = list(itertools.product(*vary.values())) if vary else [()]
        for combo in combos:
            assignment = dict(zip(vary, combo, strict=True))
            try:
                concrete = spec.with_vars(assignment) if assignment else spec
            except SpecError as e:  # with_vars speaks of --set; here the user wrote --vary
                raise SpecError(str(e).replace("--set ", f"--vary (in {spec.name}) ", 1)) from None
            label = spec.name + (f"[{','.join(f'{k}={v}' for k, v in assignment.items())}]" if assignment else "")
            taken = {c.label for c in out}
            n = 2
            base = label
            while label in taken:
                label, n = f"{base}#{n}", n + 1
            out.append(Candidate(label, concrete, assignment))
    if not out:
        raise SpecError("compare: give at least one spec")
    return out


def sweep_hints(vary: Mapping[str, Sequence[Any]], chosen: Mapping[str, Any]) -> tuple[str, ...]:
    """A hint for each numeric `--vary` var whose recommended value is at an end of its sweep:
    the best may lie beyond what was tried. The next values continue the sweep's last step
    (a constant ratio, as in 16,32,64, continues as a ratio; otherwise the last difference).

    >>> sweep_hints({"depth": [1, 2, 3]}, {"depth": 3})
    ('depth=3 is the largest value the sweep tried and it was recommended: the best may lie beyond; extend the sweep, e.g. --vary depth=2,3,4,5',)
    >>> sweep_hints({"width": [16, 32, 64]}, {"width": 16})[0].split("e.g. ")[1]
    '--vary width=4,8,16,32'
    >>> sweep_hints({"depth": [1, 2, 3]}, {"depth": 2}), sweep_hints({"act": ["relu", "gelu"]}, {"act": "relu"})
    ((), ())
    """
    hints = []
    for name, values in vary.items():
        numbers = sorted({v for v in values if isinstance(v, int | float) and not isinstance(v, bool)})
        value = chosen.get(name)
        if len(numbers) < 2 or len(numbers) != len(set(values)) or value not in (numbers[0], numbers[-1]):
            continue
        up = value == numbers[-1]
        a, b = (numbers[-2], numbers[-1]) if up else (numbers[1], numbers[0])   # b: the edge
        ratios = {round(y / x, 9) for x, y in zip(numbers, numbers[1:], strict=False)} if numbers[0] > 0 else set()
        beyond = []
        for _ in range(2):
            nxt = b * (b / a) if len(ratios) == 1 and len(numbers) > 2 else b + (b - a)
            if all(isinstance(v, int) for v in numbers):
                nxt = round(nxt)
            if (not up and nxt <= 0 < numbers[0]) or nxt == b:
                break
            beyond.append(nxt)
            a, b = b, nxt
        if not beyond:
            continue
        shown = [a_ for a_ in ([numbers[-2], numbers[-1]] if up else [numbers[1], numbers[0]])]
        sweep = shown + beyond if up else list(reversed(shown + beyond))
        text = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in sweep)
        where = "largest" if up else "smallest"
        hints.append(f"{name}={value} is the {where} value the sweep tried and it was recommended: the best may "
                     f"lie beyond; extend the sweep, e.g. --vary {name}={text}")
    return tuple(hints)


def run_fold(job: FoldJob) -> FoldResult:
    """Train one candidate on one fold, or return the finished run the store already has."""
    if job.threads:
        torch.set_num_threads(job.threads)
    store = open_store(job.store_root)
    for record in store.list_runs(status="finished", tags={"compare_key": job.key}):
        saved = store.artifact(record.run_id, FOLD_FILE)
        if saved.exists():
            d = read_json(saved)
            return FoldResult(job.candidate, job.fold, job.repeat, record.run_id,
                              tuple(dict(e.metrics) for e in record.history), d["val_metric"],
                              d["train_metric"], d["train_seconds"], reused=True)
    ds = cached_dataset(job.data, job.seed, job.data_root, job.target)
    spec = Spec.from_dict(job.spec)
    settings = resolve_settings(spec, job.settings)
    stratified = (settings.task or ds.info.task) == "classify"
    fold_ds, = fold_datasets(ds, job.cv, repeat=job.repeat, seed=job.seed, stratified=stratified, only=job.fold)
    tags = {"compare_key": job.key, "candidate": job.candidate, "fold": str(job.fold),
            "repeat": str(job.repeat), "cv": str(job.cv), "comparison": job.comparison}
    trainer = Trainer(spec, fold_ds, settings, store, data_uri=job.data, quiet=True, tags=tags,
                      evaluate_test=False, evaluate_train=True)
    started = time.perf_counter()
    run = trainer.run()
    seconds = time.perf_counter() - started
    primary = trainer.task.primary
    best = max(run.history, key=lambda e: e[f"val_{primary}"]) if trainer.task.mode == "max" else \
        min(run.history, key=lambda e: e[f"val_{primary}"])
    result = FoldResult(job.candidate, job.fold, job.repeat, run.run_id, tuple(run.history),
                        best[f"val_{primary}"], run.train_metrics[primary], seconds)
    write_text(store.run_dir(run.run_id) / FOLD_FILE, json.dumps(
        {"val_metric": result.val_metric, "train_metric": result.train_metric, "train_seconds": seconds}))
    return result


# --------------------------------------------------------------------- measurements


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with n intra-op threads. On a busy machine, more threads than free cores make
    OpenMP wait on descheduled threads: tiny models then run many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def latency_ms(spec: Spec, batch: int, repeats: int) -> float:
    """Median wall time of one eval-mode forward pass on the CPU with one thread, in ms."""
    with torch_threads(1):
        return _latency_ms(spec, batch, repeats)


def _latency_ms(spec: Spec, batch: int, repeats: int) -> float:
    net = build(spec, seed=0).eval()
    x = net.example_input(batch)
    for _ in range(max(2, repeats // 5)):
        net(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net(x)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def diagnose(train: float, val: float, best_val: float, mode: str = "max") -> str:
    """under-fitting: its training metric is below the best validation metric any candidate
    reached (less the tolerance) — it cannot even fit its own training data that well.
    over-fitting: train - validation gap above OVERFIT_GAP. Otherwise fine."""
    sign = 1 if mode == "max" else -1
    if sign * (train - best_val) < -UNDERFIT_TOLERANCE:
        return "under-fitting"
    if sign * (train - val) > OVERFIT_GAP:
        return "over-fitting"
    return "fine"


def recommend(cands: Sequence[CandidateSummary], mode: str, metric: str) -> tuple[str, str]:
    """The best mean validation metric, or — among candidates within one standard error of
    the best — the one with the fewest parameters. Returns (label, rule in words)."""
    sign = 1 if mode == "max" else -1
    best = max(cands, key=lambda c: sign * c.val_mean)
    close = [c for c in cands if sign * (best.val_mean - c.val_mean) <= best.val_se]
    smallest = min(close, key=lambda c: (c.params, -sign * c.val_mean))
    if smallest.label == best.label:
        return best.label, (f"best mean validation {metric} ({format_metric(best.val_mean)}); no candidate with "
                            f"fewer parameters is within one standard error ({format_metric(best.val_se)})")
    return smallest.label, (f"one-standard-error rule: {smallest.label} ({format_metric(smallest.val_mean)}, "
                            f"{smallest.params:,} params) is within one standard error "
                            f"({format_metric(best.val_se)}) of the best mean {best.label} "
                            f"({format_metric(best.val_mean)}, {best.params:,} params) and is the smallest")


def summarize(cand: Candidate, folds: Sequence[FoldResult], best_val: float, mode: str,
              spec_for_data: Spec, latency_repeats: tuple[int, int] = (30, 8)) -> CandidateSummary:
    # Parameters and FLOPs per sample do not depend on the batch; at batch 2 a batch norm
    # after a flat layer has two values per channel to normalise (one is an error in training mode).
    report = inspect(spec_for_data, batch=2)
    vals = [f.val_metric for f in folds]
    gaps = [f.train_metric - f.val_metric for f in folds]
    train_mean = statistics.fmean(f.train_metric for f in folds)
    val_mean = statistics.fmean(vals)
    return CandidateSummary(
        label=cand.label, spec=spec_for_data.to_dict(), params=report.params, flops=report.flops_per_sample,
        train_seconds=statistics.fmean(f.train_seconds for f in folds),
        latency_ms_b1=latency_ms(spec_for_data, 1, latency_repeats[0]),
        latency_ms_b256=latency_ms(spec_for_data, 256, latency_repeats[1]),
        val_mean=val_mean, val_std=statistics.stdev(vals) if len(vals) > 1 else 0.0,
        gap_mean=statistics.fmean(gaps), diagnosis=diagnose(train_mean, val_mean, best_val, mode),
        folds=tuple(sorted(folds, key=lambda f: (f.repeat, f.fold))), assignment=dict(cand.assignment))


# ------------------------------------------------------------------------------ API


def compare(specs: Sequence[str | Spec | Mapping[str, Any]], data: str = "digits", *, cv: int = 5, repeats: int = 1,
            vary: Sequence[str] | Mapping[str, Sequence[Any]] | None = None, jobs: int = 1,
            report: str | Path | None = None, store: RunStorage | str | Path | None = None,
            quiet: bool = False, data_root: str | Path | None = None, target: str | None = None,
            seed: int = 0, command: str = "", vars: Mapping[str, Any] | None = None,
            explain: bool | str = False, **settings: Any) -> Comparison:
    """Cross-validate candidate specs and recommend one; see the module docstring.

    `vars` sets vars in every spec (`--set`); `settings` override every candidate's training
    settings (epochs=5, device="cuda", early_stop=3, max_minutes=2: each fold's own budget).
    `explain` (True, or methods such as "saliency,ig") adds an explanations section for the
    recommended model's final run to the report (archlab.explain).

    >>> result = compare(["zoo:mlp", "zoo:cnn"], data="digits", cv=3, epochs=2)  # doctest: +SKIP
    """
    if cv < 2:
        raise SpecError(f"--cv must be at least 2. Received: {cv}")
    if repeats < 1 or jobs < 1:
        raise SpecError("--repeats and --jobs must be at least 1")
    st = open_store(store)
    grid = parse_vary(vary)
    cands = make_candidates(specs, grid, vars)
    data = absolute_data_uri(data)  # runs record where their data is, so they evaluate from anywhere
    ds = cached_dataset(data, seed, str(data_root) if data_root else None, target)
    overrides = {**{k: v for k, v in settings.items() if v is not None}, "seed": seed}
    if target:
        overrides["target"] = target
    info = ds.info

    # Fail fast: every candidate must build for this data and fit its task before any training.
    concrete: dict[str, Spec] = {}
    for c in cands:
        try:
            spec = c.spec.with_vars(info.vars(), strict=False).with_input(
                info.input_shape, info.input_dtype, named=info.named_inputs())
            s = resolve_settings(spec, overrides)
            net = build(spec, device="meta")
            make_task(s.task or info.task, info.num_classes, info.vocab_size).check_output(net.output_shape)
        except SpecError as e:  # name the candidate: several may share a path or a layer
            raise type(e)(f"candidate {c.label}: {e}") from None
        concrete[c.label] = spec

    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    comparison_id = content_key({"candidates": [c.spec.to_dict() for c in cands], "data": data,
                                 "settings": overrides, "cv": cv, "repeats": repeats, "seed": seed, "target": target})
    jobs_list = []
    for c in cands:
        for r in range(repeats):
            for f in range(cv):
                payload = {"spec": c.spec.to_dict(), "data": data, "settings": overrides, "cv": cv,
                           "repeat": r, "fold": f, "seed": seed, "target": target}
                jobs_list.append(FoldJob(c.label, c.spec.to_dict(), data, str(data_root) if data_root else None,
                                         target, overrides, cv, r, f, seed, st, content_key(payload),
                                         threads, comparison_id))
    results = _run_jobs(jobs_list, jobs, quiet, st)

    by_candidate = {c.label: [r for r in results if r.candidate == c.label] for c in cands}
    task = make_task(resolve_settings(concrete[cands[0].label], overrides).task or info.task, info.num_classes,
                     info.vocab_size)
    mode, metric = task.mode, task.primary
    sign = 1 if mode == "max" else -1
    means = {label: statistics.fmean(f.val_metric for f in folds) for label, folds in by_candidate.items()}
    best_val = max(means.values(), key=lambda v: sign * v)
    summaries = tuple(summarize(c, by_candidate[c.label], best_val, mode, concrete[c.label]) for c in cands)
    label, rule = recommend(summaries, mode, metric)

    final_overrides, note = dict(overrides), Comparison.test_note
    if overrides.get("early_stop"):
        # The final run has no validation split to stop on: it trains as long as the folds'
        # validation said was best (their median best epoch).
        epochs = _median_best_epoch(by_candidate[label], metric, mode)
        final_overrides.update(early_stop=None, epochs=epochs)
        note = (f"retrained on all development data for {epochs} epochs (the median best epoch of its "
                f"folds under --early-stop), it scores on the test split")
    with torch_threads(threads or torch.get_num_threads()):  # the same share of the cores as a worker
        final = _final_run(concrete[label], ds, data, final_overrides, st, cv, repeats, seed, label, quiet,
                           comparison_id)
    comparison = Comparison(
        data=data, metric=metric, mode=mode, cv=cv, repeats=repeats, candidates=summaries, recommended=label,
        rule=rule, test_metrics=final.test_metrics, test_report=final.test_report, final_run_id=final.run_id,
        class_names=info.class_names, command=command, test_note=note,
        vary={k: tuple(v) for k, v in grid.items()}, hints=sweep_hints(grid, _assignment(cands, label)))
    explanation = None
    if explain and report is not False:
        explanation = explain_run(final.run_id, methods=None if explain is True else explain, store=st,
                                  data_root=data_root, quiet=quiet)
    if report is not False:
        write_report(comparison, Path(report or "archlab-report.html"), explanation)
    return comparison


def _assignment(cands: Sequence[Candidate], label: str) -> Mapping[str, Any]:
    return next((c.assignment for c in cands if c.label == label), {})


def _median_best_epoch(folds: Sequence[FoldResult], metric: str, mode: str) -> int:
    """The median over folds of the epoch whose validation metric the fold kept."""
    bests = []
    for f in folds:
        epochs = [(i + 1, e.get(f"val_{metric}")) for i, e in enumerate(f.history)]
        kept = [i for i, v in epochs if v == f.val_metric]
        bests.append(kept[0] if kept else len(f.history))
    return max(1, round(statistics.median(bests))) if bests else 1


# How often a process with nothing to claim looks again for folds the others finished.
_POLL_S = 1.0


def _fold_dict(r: FoldResult) -> dict[str, Any]:
    return {"run_id": r.run_id, "history": [dict(e) for e in r.history], "val_metric": r.val_metric,
            "train_metric": r.train_metric, "train_seconds": r.train_seconds}


def _fold_from_claim(job: FoldJob, claim: Claim) -> FoldResult:
    d = thaw(claim.result)
    return FoldResult(job.candidate, job.fold, job.repeat, d["run_id"], tuple(d["history"]), d["val_metric"],
                      d["train_metric"], d["train_seconds"], reused=True)


def _run_jobs(jobs_list: list[FoldJob], jobs: int, quiet: bool, store: RunStorage) -> list[FoldResult]:
    """Claim, train and record the folds; those another process claimed are waited for (see the
    module docstring). With ``jobs > 1`` the claimed folds train in spawned worker processes."""
    from ..train import TaskProgress

    owner, lease = new_owner(), lease_seconds()
    results: list[FoldResult] = []
    pending = list(jobs_list)
    held: set[str] = set()
    in_flight: dict[Any, FoldJob] = {}
    # Fresh interpreters: a forked child would inherit torch's thread pools mid-use.
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) if jobs > 1 else None

    def finish(job: FoldJob, result: FoldResult) -> None:
        claim = store.finish_claim(_claim_key(job), owner, _fold_dict(result))
        held.discard(_claim_key(job))
        if not claim.mine:  # our lease ran out and another process finished it first: keep one result
            result = _fold_from_claim(job, claim)
        results.append(result)
        progress.advance(_fold_line(result))

    try:
        with TaskProgress(len(jobs_list), "folds", quiet=quiet) as progress, Heartbeat(store, owner, lease):
            while pending or in_flight:
                moved = False
                for job in list(pending):
                    if pool is not None and len(in_flight) >= jobs:
                        break
                    claim = store.claim(_claim_key(job), owner, lease_s=lease)
                    if claim.state == "done":
                        pending.remove(job)
                        results.append(_fold_from_claim(job, claim))
                        progress.advance(_fold_line(results[-1]))
                        moved = True
                    elif claim.mine:
                        pending.remove(job)
                        held.add(_claim_key(job))
                        moved = True
                        if pool is None:
                            finish(job, run_fold(job))
                            break  # look again: other processes may have finished folds meanwhile
                        in_flight[pool.submit(run_fold, job)] = job
                if in_flight:
                    done, _ = wait(in_flight, timeout=_POLL_S, return_when=FIRST_COMPLETED)
                    for future in done:
                        finish(in_flight.pop(future), future.result())
                elif pending and not moved:
                    time.sleep(_POLL_S)  # every fold left is another process's: wait for its result
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if held:
            store.release_claims(owner, held)
    return results


def _claim_key(job: FoldJob) -> str:
    return f"compare-fold:{job.key}"


def _fold_line(r: FoldResult) -> str:
    reused = " (reused from the run store)" if r.reused else f" ({r.train_seconds:.1f}s)"
    return f"{r.candidate} fold {r.fold + 1}" + (f" repeat {r.repeat + 1}" if r.repeat else "") + \
        f": val {format_metric(r.val_metric)}{reused}"


def _final_run(spec: Spec, ds: Dataset, data: str, overrides: Mapping[str, Any], store: RunStorage,
               cv: int, repeats: int, seed: int, label: str, quiet: bool, comparison: str = ""):  # noqa: ANN202
    """Retrain the recommended spec on all development data and score the test split once; one
    process does it (claimed like a fold), the others wait for its result."""
    key = content_key({"final": spec.to_dict(), "data": data, "settings": overrides, "seed": seed})
    owner, lease = new_owner(), lease_seconds()
    while True:
        claim = store.claim(f"compare-final:{key}", owner, lease_s=lease)
        if claim.state == "done":
            return _final_from(store, claim.result["run_id"])
        if claim.mine:
            break
        time.sleep(_POLL_S)
    try:
        with Heartbeat(store, owner, lease):
            final = _train_final(spec, ds, data, overrides, store, cv, seed, label, quiet, comparison, key)
    except BaseException:
        store.release_claims(owner, [f"compare-final:{key}"])
        raise
    store.finish_claim(f"compare-final:{key}", owner, {"run_id": final.run_id})
    return final


def _final_from(store: RunStorage, run_id: str) -> _Final:
    record = store.get_run(run_id)
    report_path = store.artifact(record.run_id, TEST_REPORT)
    # another machine's report is here only with a shared ARCHLAB_HOME; its metrics always are
    report = read_json(report_path) if report_path.exists() else {}
    return _Final(record.run_id, dict(record.test_metrics), report)


def _train_final(spec: Spec, ds: Dataset, data: str, overrides: Mapping[str, Any], store: RunStorage, cv: int,
                 seed: int, label: str, quiet: bool, comparison: str, key: str) -> _Final:
    for record in store.list_runs(status="finished", tags={"compare_key": key}):
        return _final_from(store, record.run_id)
    dev = development_split(ds)
    final_ds = Dataset(ds.info, dev, Split(dev.x[:0], dev.y[:0]), ds.test)
    settings = resolve_settings(spec, overrides)
    trainer = Trainer(spec, final_ds, settings, store, data_uri=data, quiet=True,
                      tags={"compare_key": key, "candidate": label, "role": "final", "cv": str(cv),
                            "comparison": comparison})
    if not quiet:
        print(f"retraining {label} on all {len(final_ds.train):,} development samples for the test score ...", flush=True)
    run = trainer.run()
    return _Final(run.run_id, run.test_metrics, run.test_report)


@dataclass(frozen=True)
class _Final:
    run_id: str
    test_metrics: dict[str, float]
    test_report: dict[str, Any]


# ---------------------------------------------------------------- from stored runs


def comparison_from_runs(run_ids: Sequence[str], store: RunStorage | str | Path | None = None) -> Comparison:
    """A Comparison built from runs already in the store (for `archlab report`).

    Fold runs of one `compare` call group by candidate; any other run is its own candidate,
    judged on its single validation split, with the test score it recorded (no retraining).
    """
    from ..train import TASKS

    st = open_store(store)
    records = [st.get_run(r) for r in run_ids]
    if not records:
        raise ArchlabError("report: give at least one run id (see `archlab runs`)")
    for rec in records:
        if rec.status != "finished":
            raise ArchlabError(f"report: run {rec.run_id} is {rec.status}; only finished runs can be compared "
                               f"(resume it with `archlab train --resume {rec.run_id}`)")
    datas = sorted({r.data for r in records})
    if len(datas) > 1:
        raise ArchlabError(f"report: the runs use different data sets ({', '.join(datas)}); compare runs on one data set")
    tasks = sorted({r.tags.get("task", "classify") for r in records})
    if len(tasks) > 1 or tasks[0] not in TASKS:
        raise ArchlabError(f"report: the runs are of different or unknown tasks ({', '.join(tasks)})")
    task = TASKS.get(tasks[0])
    metric, mode = task.primary, task.mode
    sign = 1 if mode == "max" else -1
    groups: dict[str, list] = {}
    final = None
    for rec in records:
        if rec.tags.get("role") == "final":
            final = rec
            continue
        if "fold" in rec.tags:  # folds of the same comparison (older runs: of the same candidate name)
            label = rec.tags.get("candidate", rec.name)
            key = f"{label} @{rec.tags['comparison']}" if rec.tags.get("comparison") else label
        else:
            label = key = f"{rec.name} ({rec.run_id})"
        groups.setdefault(key, []).append(rec)
    if not groups and final is not None:
        groups[final.tags.get("candidate", final.name)] = [final]
    labels = {key: key.split(" @")[0] for key in groups}
    if len(set(labels.values())) < len(labels):  # the same candidate from two comparisons: keep them apart
        labels = {key: key.replace(" @", " #")[:len(key.split(" @")[0]) + 7] for key in groups}
    folds_by: dict[str, list[FoldResult]] = {}
    single = not any("fold" in r.tags for recs in groups.values() for r in recs)
    for key, recs in groups.items():
        folds = []
        for i, rec in enumerate(recs):
            saved = st.artifact(rec.run_id, FOLD_FILE)
            history = tuple(dict(e.metrics) for e in rec.history)
            if saved.exists():
                d = read_json(saved)
                val, train, secs = d["val_metric"], d["train_metric"], d["train_seconds"]
            else:
                val = rec.best(f"val_{metric}", mode)
                if val is None:
                    raise ArchlabError(f"report: run {rec.run_id} has no val_{metric} (trained without a "
                                       f"validation split?); it cannot be compared")
                at_best = next(e for e in history if e.get(f"val_{metric}") == val)
                train = at_best.get(f"train_{metric}", float("nan"))
                secs = rec.duration_s or 0.0
            folds.append(FoldResult(labels[key], int(rec.tags.get("fold", i)), int(rec.tags.get("repeat", 0)),
                                    rec.run_id, history, val, train, secs, reused=True))
        folds_by[labels[key]] = folds
    spec_of = {labels[key]: Spec.from_dict(thaw(recs[0].spec)) for key, recs in groups.items()}
    best_val = max((statistics.fmean(f.val_metric for f in fs) for fs in folds_by.values()), key=lambda v: sign * v)
    summaries = tuple(summarize(Candidate(label, spec_of[label]), fs, best_val, mode, spec_of[label],
                                latency_repeats=(10, 3)) for label, fs in folds_by.items())
    label, rule = recommend(summaries, mode, metric)
    if final is not None:
        source, note = final, "retrained on all development data, it scores on the test split"
    else:
        by_label = {f.candidate: f.run_id for fs in folds_by.values() for f in fs}
        source = st.get_run(by_label[label])
        note = f"the test score run {source.run_id} recorded when it was trained (no retraining)"
    report_path = st.artifact(source.run_id, TEST_REPORT)
    cv = 1 if single else max(len(fs) for fs in folds_by.values())
    return Comparison(
        data=datas[0], metric=metric, mode=mode, cv=cv, repeats=1, candidates=summaries, recommended=label,
        rule=rule, test_metrics=dict(source.test_metrics),
        test_report=read_json(report_path) if report_path.exists() else {},
        final_run_id=source.run_id, command="archlab report " + " ".join(run_ids), test_note=note)
