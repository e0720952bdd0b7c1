"""archlab distill."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._app import SetOption, app
from ._format import parse_vars


@app.command("distill")
def distill_cmd(
    teacher: Annotated[str, typer.Argument(help="The teacher: a finished run id (or a unique prefix).")],
    student: Annotated[str, typer.Argument(help="The student: a YAML spec file or zoo:NAME.")],
    temperature: Annotated[float | None, typer.Option(help="Softens both sides' logits (default 4).")] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the KD term; 1 - alpha weighs the task loss "
                                                     "(default 0.9).")] = None,
    data: Annotated[str | None, typer.Option(help="The data set (default: the teacher's).")] = None,
    target: Annotated[str | None, typer.Option(help="csv: the target column (default: the teacher's).")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, adam or adamw.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    schedule: Annotated[str | None, typer.Option(help="constant, cosine or step.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Linear warm-up steps.")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Label smoothing of the task loss.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (autocast).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    early_stop: Annotated[int | None, typer.Option(help="Stop after N epochs without improvement.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Time budget: stop after this many minutes.")] = None,
    set: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a student spec from a teacher run (knowledge distillation: alpha * KD + (1 - alpha) * CE)."""
    from ..compress import distill

    def started(run_id: str) -> None:  # the id first: a run killed in its first epoch can still be found
        print(f"run   {run_id}  recorded; Ctrl-C stops it after the current step, "
              f"`archlab train --resume {run_id}` continues it", file=sys.stderr, flush=True)

    try:
        run = distill(teacher, student, data=data, temperature=temperature, alpha=alpha, quiet=quiet,
                      target=target, vars=parse_vars(set), on_start=started, epochs=epochs, batch_size=batch_size,
                      lr=lr, optimizer=optimizer, weight_decay=weight_decay, schedule=schedule, warmup=warmup,
                      label_smoothing=label_smoothing, precision=precision, seed=seed, early_stop=early_stop,
                      device=device, max_minutes=max_minutes)
    except KeyboardInterrupt as e:
        print(f"stopped: {e}" if str(e) else "stopped", file=sys.stderr)
        raise typer.Exit(130) from None
    from ..runs import open_store
    from ..train import primary_metric

    s = run.settings
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in run.test_metrics.items())
    print(f"test  {metrics}")
    store = open_store()
    theirs, ours = store.get_run(s.teacher), store.get_run(run.run_id)
    name = (primary_metric(ours) or ("loss", "min"))[0]
    if name in theirs.test_metrics and name in ours.test_metrics:
        print(f"      {name} {ours.test_metrics[name]:.4f} with {ours.params or 0:,} params; the teacher's "
              f"{theirs.test_metrics[name]:.4f} with {theirs.params or 0:,}")
    print(f"run   {run.run_id}  (student of {s.teacher}, T {s.kd_temperature:g}, alpha {s.kd_alpha:g}; "
          f"best epoch {run.best_epoch}; details: archlab show {run.run_id})")
