"""A self-contained model folder: everything a trained run needs to predict, offline.

    PATH/spec.yaml            the spec as trained (vars resolved, input shape set)
    PATH/model.safetensors    the kept weights; tensors shared by tied layers stored once
    PATH/preprocessing.json   how new inputs become model inputs (pixel scaling, csv column
                              means/deviations and categories, tokenizer, class names), the task
    PATH/README.md            a short model card: data, metrics, params, MACs, how to load it

`archlab.load(PATH)` rebuilds the plain nn.Module from the first two; `archlab predict PATH`
uses the third. Nothing in it is a pickle.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core import ArchlabError
from ..model import inspect
from ..runs import PREPROCESSING_FILE, SPEC_FILE, SQLiteRunStorage
from ..train import save_weights
from ._source import MODEL_CARD, MODEL_WEIGHTS, Shipped, open_source, write_preprocessing

__all__ = ["ExportedFolder", "export_folder"]


@dataclass(frozen=True)
class ExportedFolder:
    path: Path
    files: tuple[str, ...]
    params: int
    macs: int


def export_folder(source: str | Path | Shipped, path: str | Path, *, store: SQLiteRunStorage | None = None,
                  overwrite: bool = False) -> ExportedFolder:
    """Write a finished run (or another model folder) as a model folder at ``path``.

    The folder is written next to ``path`` and renamed into place, so a failure leaves nothing
    behind; an existing non-empty ``path`` is refused unless ``overwrite``.

    >>> export_folder("r1a2b3c4d", "shipped/")   # doctest: +SKIP
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ArchlabError(f"--folder {target}: is a file; expected a folder to write (a new one, or an empty one)")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ArchlabError(f"--folder {target}: the folder exists and is not empty. Received: "
                           f"{', '.join(sorted(p.name for p in target.iterdir())[:5])}; pick a new folder, empty "
                           f"it, or pass --overwrite")
    shipped = source if isinstance(source, Shipped) else open_source(source, store)
    report = inspect(shipped.spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (tmp / SPEC_FILE).write_text(shipped.spec.to_yaml())
        save_weights(tmp / MODEL_WEIGHTS, shipped.model)
        write_preprocessing(tmp / PREPROCESSING_FILE, shipped.preprocessing)
        (tmp / MODEL_CARD).write_text(model_card(shipped, report.params, report.macs_per_sample, target))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a model folder is for sharing
        for name in os.listdir(tmp):
            os.chmod(tmp / name, 0o666 & ~umask)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportedFolder(target, (SPEC_FILE, MODEL_WEIGHTS, PREPROCESSING_FILE, MODEL_CARD),
                          report.params, report.macs_per_sample)


def _number(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def model_card(shipped: Shipped, params: int, macs: int, target: Path) -> str:
    """README.md of a model folder: what it is, what it was trained on, how well it does."""
    prep, record = shipped.preprocessing, shipped.record
    lines = [f"# {shipped.name}", ""]
    if shipped.spec.description:
        lines += [shipped.spec.description, ""]
    shape = "x".join(map(str, prep.get("input_shape", [])))
    named = getattr(shipped.model, "input_types", {}) if getattr(shipped.model, "input_names", ()) else {}
    inputs = ([f"| inputs | {', '.join(f'{n} {t.describe()}' for n, t in named.items())} |"]
              if named else [f"| input | {shape} {prep.get('input_dtype', '')} ({prep.get('kind')}) |"])
    lines += ["| | |", "|---|---|",
              f"| task | {shipped.task} |",
              *inputs,
              f"| parameters | {params:,} |",
              f"| MACs per sample | {macs:,} (1 MAC = 2 FLOPs) |"]
    if record is not None:
        lines += [f"| run | {record.run_id} |", f"| data | {record.data} |"]
        lines += [f"| test {k} | {_number(v)} |" for k, v in record.test_metrics.items()]
    if prep.get("class_names") and shipped.task == "classify":
        names = prep["class_names"]
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        lines.append(f"| classes | {shown} |")
    lines += ["", "## Preprocessing", "", _describe(prep, named), "",
              "## Use", "", "```python", "import archlab, torch",
              f"net = archlab.load({str(target)!r})   # a plain torch.nn.Module, eval mode; nothing unpickled",
              *(["images = net.sample(16)   # (16, C, H, W) in [0, 1]"] if shipped.task in ("vae", "gan") else []),
              "```", "", "```sh",
              *([] if shipped.task in ("vae", "gan") or (named and prep.get("kind") != "table") else
                [f"archlab predict {target} --input INPUT --out predictions.csv"]),
              *([] if named else [f"archlab export {target} --onnx model.onnx --verify"]), "```", "",
              "Files: spec.yaml (the architecture), model.safetensors (weights), preprocessing.json "
              "(how inputs are read), this card.", ""]
    return "\n".join(lines)


def _describe(prep: dict, named: dict | None = None) -> str:
    kind = prep.get("kind")
    if named and kind != "table":
        return (f"Several named inputs ({', '.join(named)}), each as the training data gives it; call the model "
                f"with archlab.Inputs({', '.join(n + '=...' for n in named)}).")
    if kind == "image":
        return "Images: 8-bit pixels scaled to [0, 1] (PNG files are converted to the model's channels)."
    if kind == "table":
        cols = prep.get("columns", [])
        num = [c["name"] for c in cols if c["kind"] == "numeric"]
        cat = [c["name"] for c in cols if c["kind"] == "categorical"]
        text = "".join(f"; text column {t['name']}: the run's {t['tokenizer']['kind']} tokenizer, the first "
                       f"{t['max_len']} tokens, padded ({t.get('pad', 'pre')})" for t in prep.get("text") or [])
        return (f"CSV rows: numeric columns standardised with the training split's mean and deviation "
                f"({', '.join(num) or 'none'}); categorical columns one-hot over the training categories "
                f"({', '.join(cat) or 'none'}){text}; empty cells "
                f"{'filled' if prep.get('fill') == 'mean' else 'refused'}.")
    if kind == "reviews":
        return (f"Text: the run's {(prep.get('tokenizer') or {}).get('kind', '')} tokenizer, the first "
                f"{prep['input_shape'][0]} tokens, padded ({prep.get('pad', 'pre')}).")
    if kind in ("text", "seq2seq"):
        return f"Text: the run's {(prep.get('tokenizer') or {}).get('kind', '')} tokenizer."
    return "Inputs are taken as they are."
