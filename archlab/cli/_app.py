"""The command line: a table of subcommands that call the public API. No logic lives here
beyond parsing flags and printing; errors the user can fix print as one line, exit 2."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..core import ArchlabError
from ..layers import LAYERS
from ..model import Inspection, inspect
from ..spec import load_spec, parse_assignment, parse_shape, zoo_names

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="archlab: declare, inspect, train and compare neural-network architectures.")
# Lines never wrap mid-number when output is piped (CI logs): tables get a fixed width.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)

SetOption = Annotated[list[str] | None, typer.Option("--set", help="Set a var: NAME=VALUE (repeatable).")]
InputOption = Annotated[str | None, typer.Option("--input", help="Per-sample input shape, e.g. 1,28,28.")]


# ---------------------------------------------------------------------------- format


def human(n: float, unit: str = "", base: int = 1000) -> str:
    """1234567 -> '1.23 M'; with base 1024 and unit 'B' -> '1.18 MiB'."""
    prefixes = ["", "K", "M", "G", "T", "P", "E"] if base == 1000 else ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    value, i = float(n), 0
    while abs(value) >= base and i < len(prefixes) - 1:
        value /= base
        i += 1
    if i == 0:
        return f"{int(value) if value == int(value) else value:g} {unit}".rstrip()
    return f"{value:.3g} {prefixes[i]}{unit}"


def nbytes(n: float) -> str:
    return human(n, "B", 1024)


def shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _vars(assignments: list[str] | None) -> dict:
    return dict(parse_assignment(a) for a in assignments or [])


def print_inspection(r: Inspection, *, show_layers: bool = True) -> None:
    title = f"{r.name}: input {shape_text(r.input_shape)} -> output {shape_text(r.output_shape)}"
    if show_layers:
        table = Table(title=title, title_justify="left", show_lines=False, pad_edge=False)
        table.add_column("path")
        table.add_column("layer")
        table.add_column("output", justify="right")
        table.add_column("params", justify="right")
        table.add_column("fwd FLOPs/sample", justify="right")
        for row in r.layers:
            # Notes (tied, frozen, what the merge row holds) go by the layer: the numbers stay a column.
            layer = f"{row.kind} ({row.note})" if row.kind and row.note else row.kind or row.note
            table.add_row(escape(row.path), escape(layer), shape_text(row.output_shape), f"{row.params:,}",
                          human(row.flops))
        console.print(table)
    else:
        console.print(f"[bold]{title}[/bold]")
    m = r.memory
    console.print(f"params            {r.params:,} total, {r.trainable:,} trainable, {r.frozen:,} frozen")
    console.print(f"forward FLOPs     {human(r.flops_per_sample, 'FLOPs')} per sample (inference mode), of which "
                  f"matmuls/convolutions/attention: {human(r.macs_per_sample, 'MACs')} = "
                  f"{human(2 * r.macs_per_sample, 'FLOPs')} (1 MAC = 2 FLOPs); "
                  f"training step ~3x forward = {human(3 * r.flops_per_sample, 'FLOPs')}")
    if r.uncounted:
        ops = escape(", ".join(f"{u.op} x{u.calls} (in {u.first_seen_in})" for u in r.uncounted))
        console.print(f"[yellow]uncounted ops     {ops} — not priced, so FLOPs are a lower bound[/yellow]")
    console.print(f"training memory   batch {m.batch}, {r.dtype} compute, {r.optimizer}: "
                  f"{nbytes(m.total)} = weights {nbytes(m.weights)} + gradients {nbytes(m.gradients)} "
                  f"+ optimizer {nbytes(m.optimizer)} + activations {nbytes(m.activations)} "
                  f"({nbytes(m.activations_per_sample)}/sample)")
    if r.device_memory is not None:
        verdict = "[green]fits[/green]" if r.fits else "[red]does not fit[/red]"
        best = r.max_batch
        if best is None:  # nothing is saved for backward: memory does not grow with the batch
            best_text = "any batch fits (activation memory does not grow with the batch)"
        elif best:
            best_text = f"largest batch that fits: {best:,}"
        else:
            best_text = "no batch fits: weights, gradients and optimizer state alone exceed it"
        console.print(f"device            {human(r.device_memory, 'B')} = {nbytes(r.device_memory)}: batch {m.batch} {verdict}; {best_text}")


# -------------------------------------------------------------------------- commands


@app.command("inspect")
def inspect_cmd(
    spec: Annotated[str, typer.Argument(help="A YAML spec file or zoo:NAME.")],
    input: InputOption = None,
    batch: Annotated[int, typer.Option(help="Batch size for the memory estimate.")] = 1,
    dtype: Annotated[str, typer.Option(help="Compute precision: fp32, bf16 or fp16.")] = "fp32",
    optimizer: Annotated[str, typer.Option(help="sgd, adam or adamw (optimizer state).")] = "adamw",
    device_memory: Annotated[str | None, typer.Option(help="Check fit, e.g. 80GB or 24GiB.")] = None,
    set: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Parameters, FLOPs and training memory of a spec, without allocating weights."""
    _check_train_section(spec)
    report = inspect(spec, input_shape=parse_shape(input) if input else None, batch=batch, dtype=dtype,
                     optimizer=optimizer, device_memory=device_memory, vars=_vars(set))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_inspection(report)


def _check_train_section(spec: str) -> None:
    """A misspelt or out-of-range `train:` setting is an error now, not when training starts.
    Search-space markers are left to `archlab search`."""
    from ..core import thaw
    from ..spec import load_spec
    from ..train import TrainSettings

    plain = {k: v for k, v in thaw(load_spec(spec).train).items()
             if not (isinstance(v, dict) and {"int", "float", "choice"} & set(v))}
    TrainSettings.from_mapping(plain, where="train")


@app.command("zoo")
def zoo_cmd() -> None:
    """List the built-in specs (use them as zoo:NAME)."""
    table = Table(title="archlab zoo", title_justify="left")
    for col, justify in (("name", "left"), ("input", "right"), ("params", "right"),
                         ("fwd FLOPs/sample", "right"), ("description", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name in zoo_names():
        s = load_spec(f"zoo:{name}")
        r = inspect(s) if s.input else None
        table.add_row(f"zoo:{name}", shape_text(s.input.shape) if s.input else "-",
                      f"{r.params:,}" if r else "-", human(r.flops_per_sample) if r else "-",
                      s.description)
    console.print(table)


@app.command("layers")
def layers_cmd(pattern: Annotated[str, typer.Argument(help="Glob filter, e.g. 'conv*'.")] = "*") -> None:
    """List the layer types a spec can use, with their arguments."""
    table = Table(title_justify="left")
    table.add_column("layer")
    table.add_column("arguments")
    table.add_column("what it does")
    seen: dict[int, str] = {}
    if not LAYERS.names(pattern):
        raise ArchlabError(f"layers: no layer matches {pattern!r}; `archlab layers` lists them all")
    for name in LAYERS.names(pattern):
        layer = LAYERS.get(name)
        if id(layer) in seen:
            continue
        aliases = [n for n in LAYERS.names() if LAYERS.get(n) is layer and n != layer.name]
        seen[id(layer)] = name
        label = layer.name + (f" ({', '.join(aliases)})" if aliases else "")
        table.add_row(label, layer.signature(), layer.doc)
    console.print(table)


@app.command("train")
def train_cmd(
    spec: Annotated[str | None, typer.Argument(help="A YAML spec file or zoo:NAME (omit with --resume).")] = None,
    data: Annotated[str, typer.Option(help="digits, mnist[:PATH], fashion-mnist[:PATH], cifar10[:PATH], csv:PATH, "
                                           "npy:FOLDER, imdb:PATH, text:PATH|stdlib, seq:TASK.")] = "digits",
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, adam or adamw.")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    schedule: Annotated[str | None, typer.Option(help="constant, cosine or step.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Linear warm-up steps.")] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Clip the global gradient norm.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (autocast).")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    early_stop: Annotated[int | None, typer.Option(help="Stop after N epochs without improvement.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    task: Annotated[str | None, typer.Option(help="classify or regress (default: the data set's).")] = None,
    target: Annotated[str | None, typer.Option(help="csv: the target column.")] = None,
    crop_padding: Annotated[int | None, typer.Option(help="Augment: random crop with this padding.")] = None,
    hflip: Annotated[bool | None, typer.Option("--hflip/--no-hflip", help="Augment: random horizontal flips.")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Classification label smoothing.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Time budget: stop after this many minutes.")] = None,
    stream: Annotated[bool | None, typer.Option("--stream/--no-stream", help="Stream the data from disk through a "
                      "DataLoader (default: only npy data larger than the memory budget).")] = None,
    workers: Annotated[int | None, typer.Option(help="Reader processes when streaming (default: half the cores, "
                       "at most 4).")] = None,
    set: SetOption = None,
    resume: Annotated[str | None, typer.Option(help="Continue a stopped run from its last checkpoint.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a spec on a data set; every run is recorded in the run store."""
    try:
        run = _train(spec, data, resume, quiet, target, set, dict(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
            weight_decay=weight_decay, schedule=schedule, warmup=warmup, grad_clip=grad_clip,
            precision=precision, compile=compile, seed=seed, early_stop=early_stop, device=device,
            task=task, crop_padding=crop_padding, hflip=hflip, label_smoothing=label_smoothing,
            max_minutes=max_minutes, stream=stream, workers=workers))
    except KeyboardInterrupt as e:
        # typer would swallow the interrupt into a bare exit code; say how to go on.
        print(f"stopped: {e}" if str(e) else "stopped", file=sys.stderr)
        raise typer.Exit(130) from None
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in run.test_metrics.items())
    print(f"test  {metrics}")
    print(f"run   {run.run_id}  (best epoch {run.best_epoch}; details: archlab show {run.run_id})")


def _train(spec, data, resume, quiet, target, assignments, settings):  # noqa: ANN001, ANN202
    from ..train import fit
    from ..train import resume as resume_run

    if resume:
        # A resumed run continues with the spec, data and settings it was recorded with; only how
        # the data is read (--stream/--no-stream, --workers) may change: it changes no result.
        io = {k: settings.pop(k) for k in ("stream", "workers")}
        given = [f"--{k.replace('_', '-')}" for k, v in settings.items() if v is not None]
        given += ["SPEC"] if spec is not None else []
        given += ["--set"] if assignments else []
        given += ["--target"] if target else []
        if given:
            raise ArchlabError(f"train --resume: a resumed run keeps its recorded spec and settings; drop "
                               f"{', '.join(given)} (or start a new run without --resume)")
        return resume_run(resume, quiet=quiet, **io)
    if spec is None:
        raise ArchlabError("train: give a SPEC (a YAML file or zoo:NAME) or --resume RUN_ID")
    return fit(spec, data=data, quiet=quiet, target=target, vars=_vars(assignments), **settings)


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
                      f"{r.duration_s:.1f}s" if r.duration_s else "-", _when(r.created_at))
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


def _when(timestamp: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


@app.command("show")
def show_cmd(run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")]) -> None:
    """One run's settings, history and test results."""
    from ..runs import open_store

    store = open_store()
    r = store.get_run(run_id)
    console.print(f"[bold]run {r.run_id}[/bold]  {r.name} on {r.data}  status {_status(store, r)}"
                  + (f" ({r.message})" if r.message else ""))
    console.print(f"params {r.params:,}" if r.params else "params -",
                  f"  time {r.duration_s:.1f}s" if r.duration_s else "", f"  started {_when(r.created_at)}")
    console.print("settings  " + "  ".join(f"{k}={v}" for k, v in r.settings.items() if v not in (None, False)))
    console.print("env       " + "  ".join(f"{k}={v}" for k, v in r.env.items()))
    if r.history:
        keys = [k for k in r.history[0].metrics if k != "epoch"]
        table = Table(title="history", title_justify="left")
        table.add_column("epoch", justify="right")
        for k in keys:
            table.add_column(k, justify="right")
        for e in r.history:
            table.add_row(str(e.epoch), *(_cell(e.metrics.get(k)) for k in keys))
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


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"


@app.command("evaluate")
def evaluate_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
    data: Annotated[str | None, typer.Option(help="Another data set (default: the run's own).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
) -> None:
    """Re-evaluate a saved model."""
    from ..train import evaluate

    result = evaluate(run_id, data, split=split)
    # A VAE's loss is its negative ELBO (recon + kl, nats per image): say so where it is printed.
    label = {"loss": "loss (-ELBO)"} if "kl" in result else {}
    metrics = "  ".join(f"{label.get(k, k)} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    print(f"{result['run_id']} on {result['data']} ({split}): {metrics}")


@app.command("generate")
def generate_cmd(
    run_id: Annotated[str, typer.Argument(help="A language-model run (see `archlab runs`).")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "\n",
    max_tokens: Annotated[int, typer.Option(help="How many tokens to generate.")] = 200,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="Sample among the k most likely tokens.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the key/value cache.")] = True,
) -> None:
    """Stream text from a trained language model."""
    from ..data import tokenizer_from_dict
    from ..model import generate
    from ..runs import open_store
    from ..train import load_run_model

    store = open_store()
    net, record = load_run_model(run_id, store=store)
    path = store.run_dir(record.run_id) / "tokenizer.json"
    if not path.exists():
        raise ArchlabError(f"run {record.run_id} has no tokenizer.json: it was not trained on a text data set")
    tokenizer = tokenizer_from_dict(json.loads(path.read_text()))
    ids = tokenizer.encode(prompt)
    unk = getattr(tokenizer, "unk_id", None)
    if unk is not None and unk in ids:
        print(f"warning: {ids.count(unk)} prompt token(s) are not in the model's vocabulary and read as <unk>",
              file=sys.stderr)
    sys.stdout.write(prompt)
    for token in generate(net, ids, max_tokens, temperature=temperature, top_k=top_k,
                          seed=seed, use_cache=cache):
        sys.stdout.write(tokenizer.decode([token]))
        sys.stdout.flush()
    sys.stdout.write("\n")


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Cross-validate candidate architectures, recommend one, and write an HTML report."""
    from ..compare import compare

    result = compare(specs, data=data, cv=cv, repeats=repeats, vary=vary, jobs=jobs, report=report, quiet=quiet,
                     seed=seed, target=target, epochs=epochs, batch_size=batch_size, lr=lr,
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
                      f"{c.latency_ms_b1:.2f}", f"{c.latency_ms_b256:.1f}", f"{c.val_mean:.4f} ± {c.val_std:.4f}",
                      f"{c.gap_mean:+.4f}", c.diagnosis)
    console.print(table)
    console.print(escape(f"recommended       {result.recommended} — {result.rule}"))
    if result.test_metrics:
        test = "  ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
        console.print(escape(f"test (once)       {result.recommended}, {result.test_note}: {test}  "
                             f"(run {result.final_run_id})"))


@app.command("report")
def report_cmd(
    run_ids: Annotated[list[str], typer.Argument(help="Run ids (see `archlab runs`).")],
    out: Annotated[str, typer.Option(help="Where to write the HTML report.")] = "archlab-report.html",
) -> None:
    """An HTML report from runs already in the store."""
    from ..compare import comparison_from_runs, write_report

    result = comparison_from_runs(run_ids)
    write_report(result, out)
    print_comparison(result)
    console.print(f"report            {out}")


# ---------------------------------------------------------------------------- search


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
) -> None:
    """Search architectures (and training settings) with Optuna, under budgets."""
    from ..search import search

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
        values = [f"{v:.4f}" if o.trained or abs(v) < 1000 else f"{v:,.0f}" for o, v in zip(objs, t.values, strict=True)]
        chosen = "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        table.add_row(str(t.number), *values, escape(chosen), str(t.epochs), t.run_id or "-")
    if result.best:
        console.print(table)
    else:
        console.print(f"study {result.study}: no trial has completed yet")
    states = ", ".join(f"{result.count(s)} {s}" for s in ("complete", "pruned", "infeasible", "failed",
                                                           "interrupted", "running") if result.count(s))
    console.print(f"trials            {len(result.trials)}: {states or 'none'}; {result.epochs} epochs trained"
                  + (f"; {result.seconds:.0f}s in this call" if result.seconds else ""))
    console.print(escape(f"study             {result.study} in {result.storage}"))


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
        best = "  ".join(f"{v:.4f}" if abs(v) < 1000 else f"{v:,.0f}" for v in s.best) if s.best else "-"
        table.add_row(escape(s.name), escape(s.spec), escape(s.data), escape(", ".join(s.objectives)), str(s.trials),
                      str(s.complete), best, _when(s.started) if s.started else "-")
    console.print(table)


@app.command("sample")
def sample_cmd(
    run_id: Annotated[str, typer.Argument(help="A vae or gan run (see `archlab runs`).")],
    n: Annotated[int, typer.Option("--n", "-n", help="How many images to draw.")] = 64,
    out: Annotated[str, typer.Option(help="Where to write the PNG grid.")] = "samples.png",
    seed: Annotated[int, typer.Option(help="Seed of the latent noise.")] = 0,
    scale: Annotated[int, typer.Option(help="Each pixel becomes a scale x scale block.", min=1, max=64)] = 4,
) -> None:
    """Draw images from a trained VAE or GAN and write them as a PNG grid."""
    from ..train import sample_run, save_grid

    images = sample_run(run_id, n, seed=seed)
    save_grid(images, out, scale=scale)
    print(f"wrote {n} samples {tuple(images.shape[1:])} to {out}")


@app.command("data")
def data_cmd(
    uri: Annotated[str, typer.Argument(help="A data set: digits, mnist:PATH, csv:PATH, npy:FOLDER, text:stdlib, ...")],
    target: Annotated[str | None, typer.Option(help="csv: the target column.")] = None,
    export: Annotated[str | None, typer.Option(help="Write the three splits as an npy:FOLDER here.")] = None,
    uint8: Annotated[bool, typer.Option("--uint8", help="With --export: store images as bytes (4x smaller).")] = False,
) -> None:
    """What archlab reads from a data set: task, shapes, split sizes, and whether it streams."""
    import torch

    from ..data import DiskSplit, Split, load_dataset, memory_budget, write_npy

    ds = load_dataset(uri, target=target)
    info = ds.info
    parts = {"train": ds.train, "val": ds.val, "test": ds.test}
    classes = ""
    if info.num_classes:
        names = ", ".join((info.class_names or ())[:6]) + (", ..." if info.num_classes > 6 else "")
        classes = f", {info.num_classes} classes ({names})"
    print(f"{info.name}: {info.task}{classes}")
    print(f"input    {shape_text(info.input_shape)} {info.input_dtype}"
          + (f", vocabulary {info.vocab_size:,}" if info.vocab_size else ""))
    print("splits   " + "  ".join(f"{k} {len(v):,}" for k, v in parts.items()))
    if info.task == "classify" and info.num_classes:
        counts = torch.bincount(ds.train.targets(), minlength=info.num_classes)
        if empty := [str(c) for c, n in enumerate(counts.tolist()) if n == 0]:
            print(f"note     class{'es' if len(empty) > 1 else ''} {', '.join(empty[:10])} "
                  f"{'have' if len(empty) > 1 else 'has'} no training samples (class ids are used as given: "
                  f"labels 1..K make K+1 classes)")

    def size(split: Split | DiskSplit) -> int:
        if isinstance(split, DiskSplit):
            return split.nbytes
        return split.x.element_size() * split.x.numel() + split.y.element_size() * split.y.numel()

    streamed = isinstance(ds.train, DiskSplit)
    total = sum(size(p) for p in parts.values())
    print(f"size     {nbytes(total)} decoded; "
          + (f"streams from disk (more than the in-memory budget of {nbytes(memory_budget())})"
             if streamed else "held in memory"))
    if info.source:
        print(f"source   {info.source}")
    if export:
        folder = write_npy(export, ds, images_as_uint8=uint8)
        print(f"wrote    {folder} (read it back with --data npy:{folder})")


@app.command("demo")
def demo_cmd(
    jobs: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    report: Annotated[str, typer.Option(help="Where to write the HTML report.")] = "archlab-report.html",
) -> None:
    """The main job: compare zoo:mlp, zoo:cnn and zoo:resnet-mini on digits by 5-fold CV."""
    import time

    from ..compare import compare

    started = time.perf_counter()
    console.print("Comparing zoo:mlp, zoo:cnn and zoo:resnet-mini on the bundled digits data "
                  "(5-fold cross-validation; runs are kept in the run store, so a re-run reuses them).")
    result = compare(["zoo:mlp", "zoo:cnn", "zoo:resnet-mini"], data="digits", cv=5, jobs=jobs, report=report,
                     command="archlab demo")
    print_comparison(result)
    console.print(f"report            {report}  ({time.perf_counter() - started:.0f}s in all)")


@app.command("version")
def version_cmd() -> None:
    """Print archlab's version."""
    print(__version__)


def main() -> None:
    try:  # recent typer vendors its own click
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - older typer
        from click.exceptions import UsageError

    try:
        # Without standalone mode typer returns (not raises) a typer.Exit's code: pass it on.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UsageError as e:  # a wrong flag or command: one line, like every other error
        command = e.ctx.command_path if e.ctx else "archlab"
        print(f"error: {e.format_message()} (see `{command} --help`)", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except ArchlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
