"""archlab inspect, zoo, layers: what a spec costs and what there is."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core import ArchlabError
from ..spec import load_spec, parse_shape, zoo_names
from ._app import InputOption, SetOption, app, console
from ._format import human, inputs_text, nbytes, parse_vars, shape_text

if TYPE_CHECKING:  # torch is imported when a command runs, not for --help
    from ..model import Inspection


def print_inspection(r: Inspection, *, show_layers: bool = True) -> None:
    title = f"{r.name}: {inputs_text(r.inputs, r.input_shape)} -> output {shape_text(r.output_shape)}"
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
    micro = f" ({m.accumulate} micro-batches of {m.batch // m.accumulate})" if m.accumulate > 1 else ""
    console.print(f"training memory   batch {m.batch}{micro}, {r.dtype} compute, {r.optimizer}: "
                  f"{nbytes(m.total)} = weights {nbytes(m.weights)} + gradients {nbytes(m.gradients)} "
                  f"+ optimizer {nbytes(m.optimizer)} + activations {nbytes(m.activations)} "
                  f"({nbytes(m.activations_per_sample)}/sample)"
                  + (f" + recompute {nbytes(m.recompute)}" if m.checkpointed else ""))
    if m.checkpointed:
        console.print(f"                  activation checkpointing: {m.checkpointed} segments keep only their "
                      f"input; the largest saves {nbytes(m.recompute)} again while its backward runs")
    priced = [f"for {m.priced_for}", f"loss: {m.loss}" if m.loss else "", f"attention: {m.attention}" if m.attention else ""]
    console.print(f"                  priced {escape('; '.join(p for p in priced if p))}; left out: {escape(m.left_out)}")
    if m.note:
        console.print(f"[yellow]                  {escape(m.note)}[/yellow]")
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



@app.command("inspect")
def inspect_cmd(
    spec: Annotated[str, typer.Argument(help="A YAML spec file or zoo:NAME.")],
    input: InputOption = None,
    batch: Annotated[int, typer.Option(help="Batch size for the memory estimate.")] = 1,
    dtype: Annotated[str, typer.Option(help="Compute precision: fp32, bf16 or fp16.")] = "fp32",
    optimizer: Annotated[str, typer.Option(help="sgd, adam or adamw (optimizer state).")] = "adamw",
    device_memory: Annotated[str | None, typer.Option(help="Check fit, e.g. 80GB or 24GiB.")] = None,
    device: Annotated[str | None, typer.Option(help="Price the training step of this device: cpu or cuda "
                                                    "(its attention kernel and autocast rules; default: cuda "
                                                    "where one is present, else cpu).")] = None,
    accumulate: Annotated[int, typer.Option(help="Micro-batches per step (gradient accumulation): "
                                              "activations for batch / K.")] = 1,
    activation_checkpointing: Annotated[bool, typer.Option("--activation-checkpointing", help="Price the step "
                                        "with every repeat copy checkpointed (archlab train "
                                        "--activation-checkpointing).")] = False,
    set: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Parameters, FLOPs and training memory of a spec, without allocating weights."""
    _check_train_section(spec)
    from ..model import inspect

    report = inspect(spec, input_shape=parse_shape(input) if input else None, batch=batch, dtype=dtype,
                     optimizer=optimizer, device_memory=device_memory, vars=parse_vars(set), device=device,
                     accumulate=accumulate, activation_checkpointing=activation_checkpointing)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_inspection(report)


def _check_train_section(spec: str) -> None:
    """A misspelt or out-of-range `train:` setting is an error now, not when training starts.
    Search-space markers are left to `archlab search`."""
    from ..core import thaw
    from ..spec import is_search_marker, load_spec
    from ..train import TrainSettings

    plain = {k: v for k, v in thaw(load_spec(spec).train).items() if not is_search_marker(v)}
    TrainSettings.from_mapping(plain, where="train")


@app.command("zoo")
def zoo_cmd() -> None:
    """List the built-in specs (use them as zoo:NAME)."""
    table = Table(title="archlab zoo", title_justify="left")
    for col, justify in (("name", "left"), ("input", "right"), ("params", "right"),
                         ("fwd FLOPs/sample", "right"), ("description", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    from ..model import inspect

    for name in zoo_names():
        s = load_spec(f"zoo:{name}")
        r = inspect(s) if s.input_specs else None
        table.add_row(f"zoo:{name}", (inputs_text(r.inputs, r.input_shape).removeprefix("input ") if r else "-"),
                      f"{r.params:,}" if r else "-", human(r.flops_per_sample) if r else "-",
                      s.description)
    console.print(table)


@app.command("layers")
def layers_cmd(pattern: Annotated[str, typer.Argument(help="A layer's name (every argument and the values "
                                                         "it allows), or a glob filter, e.g. 'conv*'.")] = "*") -> None:
    """List the layer types a spec can use, with their arguments; `archlab layers NAME` details one."""
    table = Table(title_justify="left")
    table.add_column("layer")
    table.add_column("arguments")
    table.add_column("what it does")
    seen: dict[int, str] = {}
    from ..layers import LAYERS

    if pattern in LAYERS.names():  # one layer by name: every argument and the values it allows
        layer = LAYERS.get(pattern)
        detail = Table(title=f"{layer.name}: {layer.doc}", title_justify="left")
        for column in ("argument", "allowed values", "default"):
            detail.add_column(column)
        for row in layer.options():
            detail.add_row(*map(escape, row))
        console.print(detail)
        return
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


