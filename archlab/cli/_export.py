"""archlab runs export: copy runs into another tool's store (MLflow)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import typer
from rich.markup import escape

from ._app import StoreOption, app, console, use_store


def _runs_group() -> typer.Typer:
    """`archlab runs` lists runs; `archlab runs export` is a subcommand. The listing stays
    where it is defined (the `runs` command of _runs.py): it becomes this group's callback,
    run only when no subcommand is given, with the same options."""
    try:  # recent typer vendors its own click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer
        from click import get_current_context

    for group_info in app.registered_groups:  # `runs` is a group already: join it
        if group_info.name == "runs" and group_info.typer_instance is not None:
            return group_info.typer_instance
    [listing] = [c for c in app.registered_commands if c.name == "runs"]
    app.registered_commands.remove(listing)
    list_runs = listing.callback

    @functools.wraps(list_runs)
    def runs(*args: Any, **kwargs: Any) -> None:
        if get_current_context().invoked_subcommand is None:
            list_runs(*args, **kwargs)

    group = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    group.callback(invoke_without_command=True, help=(list_runs.__doc__ or "").strip()
                   + " `archlab runs export --help`: copy them into MLflow.")(runs)
    app.add_typer(group, name="runs")
    return group


runs_group = _runs_group()


@runs_group.command("export")
def export_cmd(
    mlflow: Annotated[str, typer.Option("--mlflow", help="MLflow tracking URI, e.g. sqlite:///mlflow.db.")],
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run ids or unique prefixes (default: every run).")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment to export into (made if missing).")] = "archlab",
    store: StoreOption = None,
) -> None:
    """Copy runs (params, per-epoch metrics, test metrics) into an MLflow tracking store.

    Exporting again updates the same MLflow runs (tagged archlab.run_id); nothing is duplicated.
    Browse them with `mlflow ui --backend-store-uri sqlite:///mlflow.db` (full `mlflow` package).
    """
    from ..runs import export_mlflow, open_store

    use_store(store)
    done = export_mlflow(open_store(), mlflow, run_ids or (), experiment=experiment)
    created = sum(e.created for e in done)
    points = sum(e.metrics_added for e in done)
    console.print(f"exported {len(done)} run{'s' * (len(done) != 1)} to {escape(mlflow)} "
                  f"(experiment {escape(experiment)}): {created} new, {len(done) - created} already there; "
                  f"{points} metric points added")
    if mlflow.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        console.print(f"browse them with `mlflow ui --backend-store-uri {escape(mlflow)}` (the UI comes "
                      f"with the full `mlflow` package, not mlflow-skinny)")
