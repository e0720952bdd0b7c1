"""archlab compress: a new, cheaper run from a finished one, measured before and after."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ._app import app, console
from ._format import human, nbytes


@app.command("compress")
def compress_cmd(
    run_id: Annotated[str, typer.Argument(help="A finished run (or a unique prefix).")],
    prune: Annotated[float | None, typer.Option(help="Fraction of channels, units and heads to remove "
                                                     "(0 <= RATIO < 1).")] = None,
    method: Annotated[str, typer.Option(help="How channels are ranked: l1, l2 or taylor (|w * grad|).")] = "l1",
    structured: Annotated[bool, typer.Option("--structured/--unstructured", help="Remove whole channels "
                          "(a smaller spec), or zero single weights (same shapes, same speed).")] = True,
    round_to: Annotated[int | None, typer.Option(help="Keep pruned widths multiples of this (8 suits CPUs).")] = None,
    finetune: Annotated[int | None, typer.Option(help="Fine-tuning epochs (default: the parent's; 0: none).")] = None,
    quantize: Annotated[str | None, typer.Option(help="Quantize the result for CPU inference: int8 (dynamic for "
                        "dense/recurrent, static for conv, calibrated on training batches), fp16, bf16, or auto "
                        "(the fastest on this machine within 0.5 accuracy points of fp32).")] = None,
    lr: Annotated[float | None, typer.Option(help="Fine-tuning learning rate (default: the parent's).")] = None,
    distill: Annotated[bool, typer.Option("--distill", help="Fine-tune by distillation from the parent "
                                                            "(see `archlab distill`).")] = False,
    temperature: Annotated[float | None, typer.Option(help="--distill: softens both sides' logits (default 4).")] = None,
    alpha: Annotated[float | None, typer.Option(help="--distill: weight of the KD term (default 0.9).")] = None,
    out: Annotated[str | None, typer.Option(help="Name of the new run (default: the parent's + -pruned).")] = None,
    report: Annotated[str | None, typer.Option(help="Write an HTML view of every compressed variant of the "
                                                    "parent to this file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Prune and/or quantize a trained run into a new run (linked to it), fine-tune it, and measure both."""
    from ..compare import write_compression_report
    from ..compress import compress

    result = compress(run_id, prune_ratio=prune, method=method, structured=structured, round_to=round_to,
                      finetune=finetune, out=out, quiet=quiet, lr=lr, quantize_mode=quantize, distill=distill,
                      temperature=temperature, alpha=alpha)
    _print_table(result.before, result.after, result.ratios)
    for step in result.steps:
        if step.get("note"):
            console.print(step["note"])
    print(f"run   {result.run_id}  (parent {result.parent_id}; measurements in "
          f"{result.directory / 'compression.json'})")
    if report:
        path = write_compression_report(result.parent_id, report)
        print(f"wrote {path}")


def _latency(m: dict[str, Any], batch: str) -> float | None:
    t = (m.get("latency") or {}).get(batch)
    return None if t is None else t["median"]


def _print_table(before: dict[str, Any], after: dict[str, Any], ratios: dict[str, Any]) -> None:
    table = Table(title=f"before -> after (CPU latency: {before.get('threads', 1)} thread, median)",
                  title_justify="left")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col, justify="left" if not col else "right")

    def ratio(r: float | None) -> str:
        return "" if r is None else f"{r:.2f}x"

    table.add_row("params", human(before["params"]), human(after["params"]), ratio(ratios["params"]))
    table.add_row("MACs / sample", human(before["macs"]), human(after["macs"]), ratio(ratios["macs"]))
    table.add_row("size on disk", nbytes(before["size_bytes"]), nbytes(after["size_bytes"]),
                  ratio(ratios["size_bytes"]))
    for batch in before.get("latency") or {}:
        b, a = _latency(before, batch), _latency(after, batch)
        table.add_row(f"latency, batch {batch}", f"{b * 1e3:.3g} ms", f"{a * 1e3:.3g} ms" if a else "",
                      ratio(ratios["latency"].get(batch)))
    if before.get("accuracy") is not None and after.get("accuracy") is not None:
        points = ratios.get("accuracy_points")
        table.add_row("test accuracy", f"{before['accuracy']:.2%}", f"{after['accuracy']:.2%}",
                      f"{points:+.2f} pt" if points is not None else "")
    console.print(table)
