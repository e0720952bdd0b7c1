"""archlab runs, show: the run store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ._app import app, console
from ._format import cell, when


@app.command("runs")
def runs_cmd(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (newest first).")] = 50,
) -> None:
    """List recorded runs."""
    from ..runs import open_store

    store = open_store()
    table = Table(title=f"runs in {store.root}", title_justify="left")
    for col in ("id", "name", "data", "params", "best val", "test", "status", "time", "started"):
        table.add_column(col, justify="right" if col in ("params", "best val", "test", "time") else "left")
    for r in store.list_runs(status=status, limit=limit):
        primary = _primary_metric(r)
        best = r.best(f"val_{primary}", "min" if primary == "loss" else "max") if primary else None
        test = r.test_metrics.get(primary) if primary else None
        role = (" (final)" if r.tags.get("role") == "final" else
                f" (fold {int(r.tags['fold']) + 1}/{r.tags.get('cv', '?')})" if "fold" in r.tags else
                f" (trial {r.tags['trial']})" if "trial" in r.tags else "")
        table.add_row(r.run_id, escape(r.tags.get("candidate", r.name) + role), escape(r.data), f"{r.params:,}" if r.params else "-",
                      f"{primary} {best:.4f}" if best is not None else "-",
                      f"{test:.4f}" if test is not None else "-", _status(store, r),
                      f"{r.duration_s:.1f}s" if r.duration_s else "-", when(r.created_at))
    console.print(table)


def _status(store, record) -> str:  # noqa: ANN001
    """A 'running' run whose process is gone was killed: say so, and how to go on."""
    from ..train import is_alive

    if record.status == "running" and not is_alive(store.run_dir(record.run_id)):
        return "stopped (resume with --resume)"
    return record.status


def _primary_metric(record) -> str | None:  # noqa: ANN001
    from ..train import TASKS

    task = record.tags.get("task")
    if task in TASKS:
        return TASKS.get(task).primary
    for name in ("acc", "r2", "loss"):
        if any(f"val_{name}" in e.metrics for e in record.history) or name in record.test_metrics:
            return name
    return None



@app.command("show")
def show_cmd(run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")]) -> None:
    """One run's settings, history and test results."""
    from ..runs import open_store

    store = open_store()
    r = store.get_run(run_id)
    console.print(f"[bold]run {r.run_id}[/bold]  {r.name} on {r.data}  status {_status(store, r)}"
                  + (f" ({r.message})" if r.message else ""))
    console.print(f"params {r.params:,}" if r.params else "params -",
                  f"  time {r.duration_s:.1f}s" if r.duration_s else "", f"  started {when(r.created_at)}")
    console.print("settings  " + "  ".join(f"{k}={v}" for k, v in r.settings.items() if v not in (None, False)))
    console.print("env       " + "  ".join(f"{k}={v}" for k, v in r.env.items()))
    if r.history:
        keys = [k for k in r.history[0].metrics if k != "epoch"]
        table = Table(title="history", title_justify="left")
        table.add_column("epoch", justify="right")
        for k in keys:
            table.add_column(k, justify="right")
        for e in r.history:
            table.add_row(str(e.epoch), *(cell(e.metrics.get(k)) for k in keys))
        console.print(table)
    if r.test_metrics:
        console.print("test      " + "  ".join(f"{k} {v:.4f}" for k, v in r.test_metrics.items()))
    report = store.run_dir(r.run_id) / "test_report.json"
    if report.exists():
        confusion = json.loads(report.read_text()).get("confusion")
        if confusion and len(confusion) <= 20:
            table = Table(title="test confusion matrix (rows: true class, columns: predicted)", title_justify="left")
            table.add_column("")
            for j in range(len(confusion)):
                table.add_column(str(j), justify="right")
            for i, row in enumerate(confusion):
                table.add_row(str(i), *(str(v) for v in row))
            console.print(table)
    console.print(f"files     {store.run_dir(r.run_id)}")


