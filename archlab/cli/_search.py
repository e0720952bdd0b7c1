"""archlab search, studies."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core import ArchlabError, format_metric
from ._app import StoreOption, app, console, use_store
from ._format import when


@app.command("search")
def search_cmd(
    spec: Annotated[str, typer.Argument(help="A spec with search spaces in vars or train: (e.g. zoo:search-digits).")],
    data: Annotated[str, typer.Option(help="The data set (see `archlab train --help`).")] = "digits",
    trials: Annotated[int | None, typer.Option(help="The study's total trials; re-running resumes up to it. "
                                               "Default 20 unless --timeout.")] = None,
    timeout: Annotated[str | None, typer.Option(help="Start no new trial after this long: 90s, 10m, 1.5h.")] = None,
    objective: Annotated[list[str] | None, typer.Option(
        "--objective", help="val_acc (default) or val_<metric>, plus costs params:min, flops:min, memory:min, "
                            "latency:min (repeat; several -> Pareto front).")] = None,
    max_params: Annotated[str | None, typer.Option(help="Budget, e.g. 100k: larger candidates are not trained.")] = None,
    max_flops: Annotated[str | None, typer.Option(help="Budget on forward FLOPs per sample, e.g. 5M.")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Budget on CPU latency at batch 1, in ms.")] = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, random or nsga2 (default: tpe; nsga2 for several "
                                                "objectives).")] = None,
    pruner: Annotated[str, typer.Option(help="none, median or hyperband (several objectives: median is "
                                        "the Pareto-aware rule).")] = "median",
    cv: Annotated[int | None, typer.Option(help="Score each trial by K-fold cross-validation.")] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL, e.g. postgresql://... (default: a "
                                                "journal file in the run store).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: from the spec, data, objectives).")] = None,
    export: Annotated[str | None, typer.Option(help="Write the best (or each Pareto) architecture as a "
                                               "concrete spec, e.g. best.yaml.")] = None,
    report: Annotated[str | None, typer.Option(help="Write an HTML report of the search.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Fix the epochs per trial.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Fix the batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Fix the learning rate (no longer searched).")] = None,
    seed: Annotated[int, typer.Option(help="Sampler and training seed.")] = 0,
    target: Annotated[str | None, typer.Option(help="csv: the target column.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    store: StoreOption = None,
) -> None:
    """Search architectures (and training settings) with Optuna, under budgets."""
    from ..search import search

    use_store(store)
    result = search(spec, data=data, trials=trials, timeout=timeout, objectives=objective or ["val_acc"],
                    max_params=max_params, max_flops=max_flops, max_latency_ms=max_latency_ms, sampler=sampler,
                    pruner=pruner, cv=cv, jobs=jobs, storage=storage, study=study, export=export, seed=seed, quiet=quiet, target=target, epochs=epochs,
                    batch_size=batch_size, lr=lr)
    _finish_search(result, export, report)
    if result.interrupted:
        print(f"stopped: finished trials are kept; run the same command again to continue study "
              f"{result.study}", file=sys.stderr)
        raise SystemExit(130)  # not typer.Exit: main() runs the app with standalone_mode=False


def _finish_search(result, export, report) -> None:  # noqa: ANN001
    print_search(result)
    if export and not result.exported:
        if result.best_specs:
            import dataclasses

            from ..search import export_specs

            result = dataclasses.replace(result, exported=tuple(map(str, export_specs(result, export))))
        else:
            console.print("exported          nothing: no trial has completed yet")
    for path in result.exported:
        console.print(f"exported          {path}  (archlab train {path})")
    if report:
        from ..search import write_search_report

        write_search_report(result, report)
        console.print(f"report            {report}")


def print_search(result) -> None:  # noqa: ANN001
    objs = result.objectives
    title = "Pareto front" if result.multi else "best trial"
    table = Table(title=f"{title} of study {result.study}", title_justify="left")
    table.add_column("trial", justify="right")
    for o in objs:
        table.add_column(f"{o.key} ({'max' if o.direction == 'maximize' else 'min'})", justify="right")
    table.add_column("chosen")
    table.add_column("epochs", justify="right")
    table.add_column("run")
    for t in result.best:
        values = [format_metric(v) for v in t.values]
        chosen = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        table.add_row(str(t.number), *values, escape(chosen), str(t.epochs), t.run_id or "-")
    if result.best:
        console.print(table)
    else:
        console.print(f"study {result.study}: no trial has completed yet")
    states = ", ".join(f"{result.count(s)} {s}" for s in ("complete", "pruned", "infeasible", "duplicate", "failed",
                                                           "interrupted", "surplus", "running") if result.count(s))
    counted = sum(t.counted for t in result.trials)
    console.print(f"trials            {len(result.trials)}: {states or 'none'}; {counted} count toward --trials; "
                  f"{result.epochs} epochs trained" + (f"; {result.seconds:.0f}s in this call" if result.seconds else ""))
    if result.stopped:
        console.print(escape(f"stopped early     {result.stopped}"))
    from ..runs import masked_url

    console.print(escape(f"study             {result.study} in {masked_url(result.storage)}"))


@app.command("studies")
def studies_cmd(
    name: Annotated[str | None, typer.Argument(help="Show this study's best trials (default: list all).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default: the run store's journal).")] = None,
    export: Annotated[str | None, typer.Option(help="With NAME: write the best spec(s) as YAML.")] = None,
    report: Annotated[str | None, typer.Option(help="With NAME: write an HTML report of the search.")] = None,
) -> None:
    """List architecture-search studies, or show one."""
    from ..search import load_search, studies

    if name is not None:
        _finish_search(load_search(name, storage), export, report)
        return
    if export or report:
        raise ArchlabError("studies: --export and --report need a study NAME (see `archlab studies`)")
    found = studies(storage)
    table = Table(title="architecture-search studies", title_justify="left")
    for col in ("study", "spec", "data", "objectives", "trials", "complete", "best", "started"):
        table.add_column(col, justify="right" if col in ("trials", "complete") else "left")
    for s in found:
        best = "  ".join(format_metric(v) for v in s.best) if s.best else "-"
        table.add_row(escape(s.name), escape(s.spec), escape(s.data), escape(", ".join(s.objectives)), str(s.trials),
                      str(s.complete), best, when(s.started) if s.started else "-")
    console.print(table)


