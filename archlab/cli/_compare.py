"""archlab compare, report, demo."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core import format_metric
from ._app import SetOption, StoreOption, app, console, use_store
from ._format import human, parse_vars


@app.command("compare")
def compare_cmd(
    specs: Annotated[list[str], typer.Argument(help="Spec files or zoo:NAMEs to compare.")],
    data: Annotated[str, typer.Option(help="The data set (see `archlab train --help`).")] = "digits",
    cv: Annotated[int, typer.Option(help="Number of cross-validation folds.")] = 5,
    repeats: Annotated[int, typer.Option(help="Repeat the k folds with different shuffles.")] = 1,
    vary: Annotated[list[str] | None, typer.Option(help="Sweep a var: VAR=v1,v2,... (repeat for a grid).")] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes (folds run in parallel).")] = 1,
    report: Annotated[str, typer.Option(help="Where to write the HTML report.")] = "archlab-report.html",
    epochs: Annotated[int | None, typer.Option(help="Override every candidate's epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 0,
    target: Annotated[str | None, typer.Option(help="csv: the target column.")] = None,
    early_stop: Annotated[int | None, typer.Option(help="Stop each fold after N epochs without improvement "
                          "(the final retrain then runs the folds' median best epoch).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (latency is always timed on the CPU).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Time budget of each fold (and of the final "
                           "retrain): stop after this many minutes.")] = None,
    set: SetOption = None,
    explain: Annotated[bool, typer.Option("--explain", help="Add explanations of the recommended model "
                       "(attributions, attention maps and their checks; see `archlab explain`) to the report.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    store: StoreOption = None,
) -> None:
    """Cross-validate candidate architectures, recommend one, and write an HTML report.

    The same command on several machines (or processes) sharing one run store
    (--store postgresql://...) joins one comparison: each fold runs once, on whichever
    machine claims it first."""
    from ..compare import compare

    use_store(store)
    result = compare(specs, data=data, cv=cv, repeats=repeats, vary=vary, jobs=jobs, report=report, quiet=quiet,
                     seed=seed, target=target, vars=parse_vars(set), epochs=epochs, batch_size=batch_size, lr=lr,
                     early_stop=early_stop, device=device, max_minutes=max_minutes, explain=explain,
                     command="archlab compare " + " ".join(sys.argv[2:]))
    print_comparison(result)
    console.print(f"report            {report}")


def print_comparison(result) -> None:  # noqa: ANN001
    m = result.metric
    table = Table(title=escape(f"{len(result.candidates)} candidates on {result.data}, {result.design}"),
                  title_justify="left")
    for col in ("candidate", "params", "fwd FLOPs", "train s/fold", "ms @1", "ms @256", f"val {m}", "gap", "diagnosis"):
        table.add_column(col, justify="left" if col in ("candidate", "diagnosis") else "right")
    for c in result.candidates:
        star = " *" if c.label == result.recommended else ""
        table.add_row(escape(c.label + star), f"{c.params:,}", human(c.flops), f"{c.train_seconds:.1f}",
                      f"{c.latency_ms_b1:.2f}", f"{c.latency_ms_b256:.1f}",
                      f"{format_metric(c.val_mean)} ± {format_metric(c.val_std)}",
                      format_metric(c.gap_mean, sign=True), c.diagnosis)
    console.print(table)
    console.print(escape(f"recommended       {result.recommended} — {result.rule}"))
    if result.test_metrics:
        test = "  ".join(f"{k} {format_metric(v)}" for k, v in result.test_metrics.items())
        console.print(escape(f"test (once)       {result.recommended}, {result.test_note}: {test}  "
                             f"(run {result.final_run_id})"))
    for hint in result.hints:
        console.print(escape(f"hint              {hint}"))


@app.command("report")
def report_cmd(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids (see `archlab runs`).")],
    out: Annotated[str, typer.Option(help="Where to write the HTML report.")] = "archlab-report.html",
    store: StoreOption = None,
) -> None:
    """An HTML report from runs already in the store."""
    use_store(store)
    from ..compare import comparison_from_runs, write_report

    result = comparison_from_runs(run_ids)
    write_report(result, out)
    print_comparison(result)
    console.print(f"report            {out}")


@app.command("demo")
def demo_cmd(
    jobs: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    report: Annotated[str, typer.Option(help="Where to write the HTML report.")] = "archlab-report.html",
) -> None:
    """The main job: compare zoo:mlp, zoo:cnn and zoo:resnet-mini on digits by 5-fold CV."""

    from ..compare import compare

    started = time.perf_counter()
    console.print("Comparing zoo:mlp, zoo:cnn and zoo:resnet-mini on the bundled digits data "
                  "(5-fold cross-validation; runs are kept in the run store, so a re-run reuses them).")
    result = compare(["zoo:mlp", "zoo:cnn", "zoo:resnet-mini"], data="digits", cv=5, jobs=jobs, report=report,
                     command="archlab demo")
    print_comparison(result)
    console.print(f"report            {report}  ({time.perf_counter() - started:.0f}s in all)")


