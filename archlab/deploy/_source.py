"""What is being shipped: a finished run of the store, or a model folder written by
`export_folder`. Either gives the same three things: the model (a plain nn.Module with the
run's kept weights), its spec, and the preprocessing a new input needs (`preprocessing.json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..core import ArchlabError, DataError, StoreError, thaw
from ..data import input_preprocessing, load_dataset
from ..runs import (
    PREPROCESSING_FILE,
    QUANTIZED_META,
    SPEC_FILE,
    TOKENIZER_FILE,
    RunRecord,
    SQLiteRunStorage,
    is_run_id,
    open_store,
    read_json,
)
from ..spec import Spec
from ..train import TrainSettings, load_run_model

__all__ = ["MODEL_CARD", "MODEL_WEIGHTS", "Shipped", "load", "open_source", "run_preprocessing"]

MODEL_WEIGHTS = "model.safetensors"
MODEL_CARD = "README.md"
FOLDER_FORMAT = 1  # preprocessing.json's "format": a folder written by a later archlab says so


@dataclass
class Shipped:
    """A model ready to ship: ``model`` in eval mode, its ``spec``, ``preprocessing`` (JSON,
    see `archlab.data.input_preprocessing`) with the run's ``task``; ``record`` for a run."""

    model: nn.Module
    spec: Spec
    preprocessing: dict[str, Any]
    name: str
    record: RunRecord | None = None

    @property
    def task(self) -> str:
        return str(self.preprocessing.get("task"))


def run_preprocessing(record: RunRecord, store: SQLiteRunStorage) -> dict[str, Any]:
    """The run's preprocessing.json; a run trained before it existed gets it from its data set
    (read again, with the run's seed and target)."""
    path = store.run_dir(record.run_id) / PREPROCESSING_FILE
    if path.exists():
        prep = read_json(path)
        tokenizer = store.run_dir(record.run_id) / TOKENIZER_FILE
        if prep.get("tokenizer") is None and tokenizer.exists():  # kept once, in its own file
            prep["tokenizer"] = read_json(tokenizer)
    else:
        settings = TrainSettings.from_mapping(thaw(record.settings))
        try:
            dataset = load_dataset(record.data, seed=settings.seed, target=settings.target)
        except DataError as e:
            raise DataError(f"run {record.run_id} has no {PREPROCESSING_FILE} (trained by an older archlab) and its "
                            f"data set, needed to recover it, cannot be read: {e}") from None
        prep = input_preprocessing(dataset.info)
    task = record.tags.get("task")
    return {**prep, "task": task or prep.get("task"), "run_id": record.run_id}


def _open_run(run_id: str, store: SQLiteRunStorage | None) -> Shipped:
    store = store or open_store()
    record = store.get_run(run_id)
    if record.status != "finished":
        raise StoreError(f"run {record.run_id} is {record.status}, not finished: only a finished run is exported or "
                         f"predicts. Received: status {record.status!r}; finish it with `archlab train --resume "
                         f"{record.run_id}` or pick another run (`archlab runs`)")
    if (store.run_dir(record.run_id) / QUANTIZED_META).is_file():  # its float weights are not what it stores
        parent = record.tags.get("parent")
        raise ArchlabError(f"run {record.run_id} holds a quantized model, which export and predict cannot ship "
                           f"(they run the float network). Received: a run made by `archlab compress --quantize`; "
                           f"ship its parent{' ' + parent if parent else ''}, or load it in Python with "
                           f"archlab.compress.load_run_quantized({record.run_id!r})")
    net, record = load_run_model(record.run_id, store=store)
    return Shipped(net.eval(), Spec.from_dict(thaw(record.spec)), run_preprocessing(record, store),
                   record.name, record)


def load(path: str | Path) -> nn.Module:
    """A model folder written by `archlab export RUN_ID --folder PATH` as a plain `nn.Module`
    (in eval mode), built from its spec and filled with its safetensors weights: offline,
    nothing unpickled, the same logits as the run's own model.

    >>> net = archlab.load("shipped/")     # doctest: +SKIP
    >>> net(torch.rand(5, 1, 8, 8)).shape  # doctest: +SKIP
    torch.Size([5, 10])
    """
    return _open_folder(Path(path)).model


def _open_folder(folder: Path) -> Shipped:
    from safetensors.torch import load_model

    from ..model import build
    from ..spec import load_spec

    folder = folder.expanduser()
    if not folder.is_dir():
        raise StoreError(f"model folder {folder}: not found. Expected a folder written by `archlab export RUN_ID "
                         f"--folder {folder}`")
    missing = [f for f in (SPEC_FILE, MODEL_WEIGHTS, PREPROCESSING_FILE) if not (folder / f).is_file()]
    if missing:
        raise StoreError(f"model folder {folder}: {', '.join(missing)} missing; expected {SPEC_FILE}, {MODEL_WEIGHTS} "
                         f"and {PREPROCESSING_FILE}. Export it again with `archlab export RUN_ID --folder {folder}`")
    prep = read_json(folder / PREPROCESSING_FILE)
    if int(prep.get("format", FOLDER_FORMAT)) > FOLDER_FORMAT:
        raise StoreError(f"model folder {folder}: written by a newer archlab (format {prep.get('format')}, this one "
                         f"reads {FOLDER_FORMAT}); upgrade archlab")
    spec = load_spec(folder / SPEC_FILE)
    net = build(spec, seed=0)
    try:
        load_model(net, str(folder / MODEL_WEIGHTS), strict=True)
    except Exception as e:  # safetensors raises plain errors for damaged or foreign files
        raise StoreError(f"model folder {folder}: {MODEL_WEIGHTS} does not fit {SPEC_FILE} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}); export the folder again") from None
    return Shipped(net.eval(), spec, prep, spec.name)


def open_source(source: str | Path, store: SQLiteRunStorage | None = None) -> Shipped:
    """A run id (or unique prefix) of a finished run, or a model folder."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return _open_folder(path)
    if is_run_id(text, prefix=True):
        return _open_run(text, store)
    if path.exists():
        raise ArchlabError(f"{text}: expected a run id or a model folder. Received: a file; give the folder "
                           f"`archlab export RUN_ID --folder PATH` wrote")
    raise ArchlabError(f"{text}: not a run id and no such model folder. Expected a run id such as r1a2b3c4d "
                       f"(`archlab runs` lists them) or a folder written by `archlab export RUN_ID --folder PATH`")


def write_preprocessing(path: Path, prep: dict[str, Any]) -> None:
    path.write_text(json.dumps({"format": FOLDER_FORMAT, **prep}, indent=1) + "\n")
