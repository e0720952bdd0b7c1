"""archlab data: what archlab reads from a data set."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app
from ._format import nbytes, shape_text


@app.command("data")
def data_cmd(
    uri: Annotated[str, typer.Argument(help="A data set: digits, mnist:PATH, csv:PATH[?categorical=A,B&fill=mean&text=C], npy:FOLDER, text:stdlib, ...")],
    target: Annotated[str | None, typer.Option(help="csv: the target column (default: the last column).")] = None,
    export: Annotated[str | None, typer.Option(help="Write the three splits as an npy:FOLDER here.")] = None,
    uint8: Annotated[bool, typer.Option("--uint8", help="With --export: store images as bytes (4x smaller).")] = False,
) -> None:
    """What archlab reads from a data set: task, its input (or each named input's shape, dtype and
    vocabulary), split sizes, the csv target, categorical and text columns, and whether it streams."""
    import torch

    from ..data import DiskSplit, load_dataset, memory_budget, write_npy

    ds = load_dataset(uri, target=target)
    info = ds.info
    parts = {"train": ds.train, "val": ds.val, "test": ds.test}
    classes = ""
    if info.num_classes:
        names = ", ".join((info.class_names or ())[:6]) + (", ..." if info.num_classes > 6 else "")
        classes = f", {info.num_classes} classes ({names})"
    print(f"{info.name}: {info.task}{classes}")
    if info.inputs is None:
        print(f"input    {shape_text(info.input_shape)} {info.input_dtype}"
              + (f", vocabulary {info.vocab_size:,}" if info.vocab_size else ""))
    else:  # several named inputs: one line each, as a spec's inputs: section names them
        width = max(map(len, info.inputs))
        for i, (name, d) in enumerate(info.inputs.items()):
            print(f"{'inputs' if i == 0 else '':<8} {name:<{width}}  {shape_text(tuple(d['shape']))} {d['dtype']}"
                  + (f", vocabulary {d['vocab']:,}" if d.get("vocab") else ""))
    print("splits   " + "  ".join(f"{k} {len(v):,}" for k, v in parts.items()))
    for note in info.notes:  # what the loader decided: the csv target, categorical columns, ...
        topic, _, text = note.partition(": ")
        print(f"{topic:<8} {text}")
    if info.task == "classify" and info.num_classes:
        counts = torch.bincount(ds.train.targets(), minlength=info.num_classes)
        if empty := [str(c) for c, n in enumerate(counts.tolist()) if n == 0]:
            print(f"note     class{'es' if len(empty) > 1 else ''} {', '.join(empty[:10])} "
                  f"{'have' if len(empty) > 1 else 'has'} no training samples (class ids are used as given: "
                  f"labels 1..K make K+1 classes)")

    streamed = isinstance(ds.train, DiskSplit)
    total = sum(p.nbytes for p in parts.values())
    print(f"size     {nbytes(total)} decoded; "
          + (f"streams from disk (more than the in-memory budget of {nbytes(memory_budget())})"
             if streamed else "held in memory"))
    if info.source:
        print(f"source   {info.source}")
    if export:
        folder = write_npy(export, ds, images_as_uint8=uint8)
        print(f"wrote    {folder} (read it back with --data npy:{folder})")


