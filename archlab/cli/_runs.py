"""archlab runs, show: the run store. Only formatting: what a run's status, primary metric,
kept epoch and test report are comes from archlab.runs and archlab.train."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from ..core import format_metric
from ._app import StoreOption, app, console, use_store
from ._format import when

_T = TypeVar("_T")


def _reporting_damage(read: Callable[[], _T]) -> _T:
    """Run a store read; print each damaged record it skipped as one warning line."""
    from ..runs import StoreWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StoreWarning)
        result = read()
    for w in caught:
        if issubclass(w.category, StoreWarning):
            print(f"warning: {w.message}", file=sys.stderr)
        else:  # not ours: let it take its usual course
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _status_text(state) -> str:  # noqa: ANN001 - a RunState
    return f"{state.status} ({state.hint})" if state.hint else state.status


@app.command("runs")
def runs_cmd(
    status: Annotated[str | None, typer.Option(
        help="Only runs with this status: running, stopped (killed; resumable or not), "
             "finished, failed, interrupted or pruned.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (newest first).")] = 50,
    store: StoreOption = None,
) -> None:
    """List recorded runs."""
    from ..runs import find_runs, open_store
    from ..train import primary_metric, run_state

    use_store(store)
    store = open_store()
    records = _reporting_damage(lambda: find_runs(store, status=status, limit=limit))
    if not records:  # say so, rather than print an empty table
        which = f" with status {status!r}" if status else ""
        console.print(f"no runs{which} in {escape(store.location)}"
                      + (" (`archlab runs` lists them all)" if status else "; `archlab train SPEC --data NAME` records one"))
        return
    table = Table(title=f"runs in {escape(store.location)}", title_justify="left")
    for col in ("id", "name", "data", "params", "best val", "test", "status", "time", "started"):
        table.add_column(col, justify="right" if col in ("params", "best val", "test", "time") else "left")
    for r in records:
        primary = primary_metric(r)
        best = r.best(f"val_{primary[0]}", primary[1]) if primary else None
        test = r.test_metrics.get(primary[0]) if primary else None
        role = (" (final)" if r.tags.get("role") == "final" else
                f" (fold {int(r.tags['fold']) + 1}/{r.tags.get('cv', '?')})" if r.tags.get("fold", "").isdigit() else
                f" (trial {r.tags['trial']})" if "trial" in r.tags else "")
        table.add_row(r.run_id, escape(r.tags.get("candidate", r.name) + role), escape(r.data), f"{r.params:,}" if r.params else "-",
                      f"{primary[0]} {best:.4f}" if best is not None else "-",
                      f"{test:.4f}" if test is not None else "-", _status_text(run_state(store, r)),
                      f"{r.duration_s:.1f}s" if r.duration_s else "-", when(r.created_at))
    console.print(table)


def _lr(value: float | None) -> str:
    """Learning rates late in a schedule are tiny: significant digits, not decimals."""
    return "-" if value is None else f"{value:.3g}"


@app.command("show")
def show_cmd(run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
             store: StoreOption = None) -> None:
    """One run's settings, history (the kept epoch marked) and test results."""
    from ..core import StoreError
    from ..runs import open_store
    from ..train import kept_epoch, primary_metric, read_test_report, run_state

    use_store(store)
    store = open_store()
    r = _reporting_damage(lambda: store.get_run(run_id))
    state = run_state(store, r)
    folder = store.run_dir(r.run_id, create=False)
    console.print(f"[bold]run {r.run_id}[/bold]  {escape(r.name)} on {escape(r.data)}  status {_status_text(state)}"
                  + (f" ({escape(r.message)})" if r.message else ""))
    if state.problem and not state.resumable and state.status in ("stopped", "interrupted"):
        console.print(f"resume    {escape(state.problem)}")
    console.print(f"params {r.params:,}" if r.params else "params -",
                  f"  time {r.duration_s:.1f}s" if r.duration_s else "", f"  started {when(r.created_at)}")
    if "parent" in r.tags:  # made by archlab compress: from which run, and how
        console.print(f"from      {escape(r.tags['parent'])} ({escape(r.tags.get('compression', 'compressed'))})")
    if "teacher" in r.tags:
        console.print(f"teacher   {escape(r.tags['teacher'])} (distilled)")
    console.print("settings  " + escape("  ".join(f"{k}={v}" for k, v in r.settings.items() if v not in (None, False, (), []))))
    console.print("env       " + escape("  ".join(f"{k}={v}" for k, v in r.env.items())))
    if r.history:
        kept = kept_epoch(r, folder)
        primary = primary_metric(r)
        keys = [k for k in r.history[0].metrics if k != "epoch"]
        note = (f" (kept: the epoch of best val_{primary[0]}, whose weights the run keeps)"
                if kept is not None and primary else "")
        table = Table(title=f"history{note}", title_justify="left")
        table.add_column("epoch", justify="right")
        if note:
            table.add_column("kept")
        for k in keys:
            table.add_column(k, justify="right")
        for e in r.history:
            mark = ["*" if e.epoch == kept else ""] if note else []
            table.add_row(str(e.epoch), *mark, *(_lr(e.metrics.get(k)) if k == "lr" else format_metric(e.metrics.get(k))
                                                 for k in keys))
        console.print(table)
    if r.test_metrics:
        console.print("test      " + "  ".join(f"{k} {v:.4f}" for k, v in r.test_metrics.items()))
    try:
        report = read_test_report(store, r)
    except StoreError as exc:  # a damaged report hides nothing else
        print(f"warning: test report: {exc}", file=sys.stderr)
        report = None
    confusion = report.get("confusion") if report else None
    if (isinstance(confusion, list) and 0 < len(confusion) <= 20
            and all(isinstance(row, list) and len(row) == len(confusion) for row in confusion)):
        table = Table(title="test confusion matrix (rows: true class, columns: predicted)", title_justify="left")
        table.add_column("")
        for j in range(len(confusion)):
            table.add_column(str(j), justify="right")
        for i, row in enumerate(confusion):
            table.add_row(str(i), *(escape(str(v)) for v in row))
        console.print(table)
    console.print(f"files     {folder}")
