"""The command line: a table of subcommands that call the public API. No logic lives here
beyond parsing flags and printing; errors the user can fix print as one line, exit 2."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import ArchlabError
from .layers import LAYERS
from .measure import Inspection, inspect
from .spec import load_spec, parse_assignment, parse_shape, zoo_names

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
            params = f"{row.params:,}" + (f" ({row.note})" if row.note else "")
            table.add_row(row.path, row.kind, shape_text(row.output_shape), params, human(row.flops))
        console.print(table)
    else:
        console.print(f"[bold]{title}[/bold]")
    m = r.memory
    console.print(f"params            {r.params:,} total, {r.trainable:,} trainable, {r.frozen:,} frozen")
    console.print(f"forward FLOPs     {human(r.flops_per_sample, 'FLOPs')} per sample "
                  f"(= {human(r.macs_per_sample, 'MACs')}; 1 MAC = 2 FLOPs); "
                  f"training step ~3x forward = {human(3 * r.flops_per_sample, 'FLOPs')}")
    if r.uncounted:
        ops = ", ".join(f"{u.op} x{u.calls} (in {u.first_seen_in})" for u in r.uncounted)
        console.print(f"[yellow]uncounted ops     {ops} — not priced, so FLOPs are a lower bound[/yellow]")
    console.print(f"training memory   batch {m.batch}, {r.dtype} compute, {r.optimizer}: "
                  f"{nbytes(m.total)} = weights {nbytes(m.weights)} + gradients {nbytes(m.gradients)} "
                  f"+ optimizer {nbytes(m.optimizer)} + activations {nbytes(m.activations)} "
                  f"({nbytes(m.activations_per_sample)}/sample)")
    if r.device_memory is not None:
        verdict = "[green]fits[/green]" if r.fits else "[red]does not fit[/red]"
        best = r.max_batch
        best_text = (f"largest batch that fits: {best:,}" if best else
                     "no batch fits: weights, gradients and optimizer state alone exceed it")
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
    report = inspect(spec, input_shape=parse_shape(input) if input else None, batch=batch, dtype=dtype,
                     optimizer=optimizer, device_memory=device_memory, vars=_vars(set))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_inspection(report)


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
    for name in LAYERS.names(pattern):
        layer = LAYERS.get(name)
        if id(layer) in seen:
            continue
        aliases = [n for n in LAYERS.names() if LAYERS.get(n) is layer and n != layer.name]
        seen[id(layer)] = name
        label = layer.name + (f" ({', '.join(aliases)})" if aliases else "")
        table.add_row(label, layer.signature(), layer.doc)
    console.print(table)


@app.command("demo")
def demo_cmd() -> None:
    """The main job on the bundled defaults."""
    for name in ("cnn", "resnet-mini", "gpt-mini"):
        print_inspection(inspect(f"zoo:{name}", batch=64, device_memory="8GB"), show_layers=name == "cnn")
        console.print()


@app.command("version")
def version_cmd() -> None:
    """Print archlab's version."""
    print(__version__)


def main() -> None:
    try:
        app()
    except ArchlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
