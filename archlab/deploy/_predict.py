"""Prediction on new files with the run's own preprocessing: a folder of PNG images, an .npy
array or CSV rows in; one CSV row per sample out.

    classify         input, class, probability      (softmax of the logits; sigmoid of a single one)
    regress          input, <target> (or value_0, value_1, ... for several outputs)
    language_model   input, text                    (the greedy continuation of each prompt)
    seq2seq          input, text                    (greedy decoding of each source)

Everything is read and checked before anything is written; the CSV is written to a
temporary file and renamed into place, so a failure never leaves a partial file.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import ArchlabError, DataError
from ..data import NewSamples, read_inputs, tokenizer_from_dict
from ..layers import Inputs
from ..model import generate
from ..runs import SQLiteRunStorage
from ._source import Shipped, open_source

__all__ = ["PREDICT_BATCH", "Predictions", "predict"]

PREDICT_BATCH = 256
_PROGRESS_FROM = 8  # batches (or prompts): fewer finish before a bar would be drawn


@dataclass(frozen=True)
class Predictions:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    path: Path | None = None

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def predict(source: str | Path | Shipped, input_path: str | Path, out: str | Path | None = None, *,
            store: SQLiteRunStorage | None = None, batch_size: int = PREDICT_BATCH, max_tokens: int = 32,
            quiet: bool = True) -> Predictions:
    """Predict on new inputs with a finished run (or a model folder) and its preprocessing;
    with ``out``, the predictions are also written there as CSV.

    >>> predict("r1a2b3c4d", "digits/", "predictions.csv").rows[0]   # doctest: +SKIP
    ('0.png', '0', 0.998)
    """
    shipped = source if isinstance(source, Shipped) else open_source(source, store)
    task = shipped.task
    if task in ("vae", "gan"):
        raise ArchlabError(f"predict: a {task} run makes images rather than predicting; draw them with "
                           f"`archlab sample RUN_ID`")
    if task not in ("classify", "regress", "language_model", "seq2seq"):
        raise ArchlabError(f"predict: unknown task {task!r}; expected classify, regress, language_model or seq2seq")
    if batch_size < 1:
        raise ArchlabError(f"--batch-size must be >= 1. Received: {batch_size}")
    target = None if out is None else Path(out).expanduser()
    if target is not None and target.is_dir():
        raise ArchlabError(f"--out {target}: is a folder; expected a file name such as predictions.csv")
    names = getattr(shipped.model, "input_names", ())
    if names and shipped.preprocessing.get("kind") != "table":
        raise ArchlabError(f"predict: the model reads {len(names)} named inputs ({', '.join(names)}); predict reads "
                           f"several inputs only from a csv table (with text columns) like the one it was trained "
                           f"on. From Python: net = archlab.load(FOLDER); net(archlab.Inputs({', '.join(n + '=...' for n in names)}))")
    inputs = read_inputs(input_path, shipped.preprocessing)
    net = shipped.model.eval()
    if task == "language_model":
        columns, rows = ("input", "text"), _generate(shipped, inputs, max_tokens, quiet)
    else:
        outs = _forward(shipped, inputs, batch_size, quiet)
        columns, rows = _rows(shipped, inputs, outs, net)
    result = Predictions(columns, tuple(rows), target)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(result.to_csv(), encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return result


def _progress(total: int, what: str, quiet: bool):
    """A rich bar on a terminal for long inputs; nothing otherwise."""
    from contextlib import nullcontext

    if quiet or total < _PROGRESS_FROM or not sys.stderr.isatty():
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


def _forward(shipped: Shipped, inputs: NewSamples, batch_size: int, quiet: bool) -> torch.Tensor:
    x = inputs.x
    assert x is not None
    net = shipped.model
    names = getattr(net, "input_names", ())
    if names or isinstance(x, Inputs):
        _check_named(x, net)
    else:
        expected = tuple(net.input_shape)
        if tuple(x.shape[1:]) != expected:  # read_inputs checks; a hand-edited preprocessing.json may not fit
            raise DataError(f"predict: the inputs are {tuple(x.shape[1:])} per sample, the model reads {expected}")
    device = next(net.parameters()).device
    starts = range(0, len(x), batch_size)
    outs = []
    with _progress(len(starts), "predicting", quiet) as bar, torch.no_grad():
        job = bar.add_task("predicting", total=len(starts)) if bar else None
        for start in starts:
            xb = x[start:start + batch_size].to(device)
            if getattr(net, "kind", "") == "seq2seq":
                outs.append(net.greedy(xb, int(net.target_type.shape[0]) - 1).cpu())
            else:
                outs.append(net(xb).float().cpu())
            if bar:
                bar.advance(job)
    return torch.cat(outs)


def _check_named(x: Any, net: torch.nn.Module) -> None:
    """The model's named inputs are all there, each of its shape."""
    types = net.input_types if getattr(net, "input_names", ()) else {}
    if not isinstance(x, Inputs) or not types:
        got = f"named inputs ({', '.join(x.names)})" if isinstance(x, Inputs) else "one array"
        want = f"{len(types)} named inputs ({', '.join(types)})" if types else "one input"
        fix = (" Several inputs are read from a .csv file with the columns of the table the model was trained on"
               if types else "")
        raise DataError(f"predict: the model reads {want}; the file gives {got}.{fix}")
    for name, t in types.items():
        if name not in x:
            raise DataError(f"predict: the model reads input {name!r}; the file gives {', '.join(x.names)}")
        if tuple(x[name].shape[1:]) != tuple(t.shape):
            raise DataError(f"predict: input {name!r} is {tuple(x[name].shape[1:])} per sample, the model reads "
                            f"{tuple(t.shape)}")


def _rows(shipped: Shipped, inputs: NewSamples, out: torch.Tensor, net: torch.nn.Module) -> tuple[tuple[str, ...], list]:
    prep, task = shipped.preprocessing, shipped.task
    names = inputs.names
    if task == "classify":
        logits = out.reshape(len(out), -1).double()
        if logits.shape[1] == 1:  # one logit: binary cross-entropy's sigmoid, class 1 when above 0
            p1 = torch.sigmoid(logits[:, 0])
            probs = torch.stack([1 - p1, p1], dim=1)
        else:
            probs = torch.softmax(logits, dim=1)
        p, idx = probs.max(dim=1)
        classes = prep.get("class_names") or [str(i) for i in range(probs.shape[1])]
        return ("input", "class", "probability"), [
            (n, classes[i] if i < len(classes) else str(i), round(float(q), 6))
            for n, i, q in zip(names, idx.tolist(), p.tolist(), strict=True)]
    if task == "regress":
        values = out.reshape(len(out), -1).tolist()
        width = len(values[0]) if values else 1
        columns = (prep.get("target") or "value",) if width == 1 else tuple(f"value_{j}" for j in range(width))
        return ("input", *columns), [(n, *(float(v) for v in row)) for n, row in zip(names, values, strict=True)]
    tok = _tokenizer(prep)
    return ("input", "text"), [(n, tok.decode([i for i in row if i >= 0])) for n, row in
                               zip(names, out.tolist(), strict=True)]


def _tokenizer(prep: dict[str, Any]):
    if not prep.get("tokenizer"):
        raise ArchlabError("predict: the run kept no tokenizer, so its outputs cannot be turned into text")
    return tokenizer_from_dict(prep["tokenizer"])


def _generate(shipped: Shipped, inputs: NewSamples, max_tokens: int, quiet: bool) -> list[tuple[str, str]]:
    tok = _tokenizer(shipped.preprocessing)
    prompts = inputs.prompts or []
    rows = []
    with _progress(len(prompts), "generating", quiet) as bar:
        job = bar.add_task("generating", total=len(prompts)) if bar else None
        for name, ids in zip(inputs.names, prompts, strict=True):
            if not ids:
                raise DataError(f"--input {name}: the prompt is empty; give at least one character")
            new = list(generate(shipped.model, ids, max_tokens, temperature=0.0, seed=0))
            rows.append((name, tok.decode(new)))
            if bar:
                bar.advance(job)
    return rows
