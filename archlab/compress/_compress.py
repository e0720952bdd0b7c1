"""`compress`: a stored run -> a new, cheaper run linked to it, measured before and after.

    result = compress(run_id, prune=0.5, round_to=8, finetune=5)
    result.run_id, result.ratios["macs"], result.after["accuracy"]

The steps, in order: load the parent's network (its best weights), apply each compression
step to a `Variant` (a spec and the network built from it), fine-tune the result as a normal
run of the one training loop (the parent's settings unless overridden) starting from the
surviving weights (batch norms re-estimated on training batches), then measure parent and child the same way (`measure`). The new run's
tags link it to its parent (`parent`, `compression`); the measurements go to
`compression.json` in its run folder.

A new step (distillation, quantization) is a function `Variant -> Variant` added to
`compress`'s list of steps; its description goes in `Variant.steps`, its own tags in
`Variant.tags`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import SpecError, StoreError, TrainingError, thaw
from ..data import load_dataset
from ..model import require_one_input
from ..runs import (
    BEST_WEIGHTS,
    QUANTIZED_META,
    SPEC_FILE,
    SQLiteRunStorage,
    open_store,
    read_json,
    write_text,
)
from ..spec import Spec
from ..train import (
    GenerativeTask,
    TrainSettings,
    evaluate,
    fit,
    load_run_model,
    save_weights,
    task_for,
)
from ._distill import check_kd
from ._measure import compare_measurements, count_macs, measure
from ._prune import check_method, check_ratio, prune, recalibrate_batchnorm, taylor_scores
from ._quantize import (
    QUANTIZED_WEIGHTS,
    QuantizationWarning,
    QuantizedNetwork,
    check_mode,
    quantize,
    save_quantized,
)
from ._unstructured import magnitude_prune

COMPRESSION_JSON = "compression.json"  # in the child's run folder: before, after, ratios, steps
SAMPLE_BATCHES = 16  # training batches for taylor scores and batch-norm re-estimation


@dataclass
class Variant:
    """What compression has made so far: a spec, its network with weights, and what was done."""

    spec: Spec
    model: nn.Module
    steps: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    finetune: bool = True   # whether fine-tuning may train it (unstructured zeros would grow back)


@dataclass(frozen=True)
class Compressed:
    """The new run and its measurements against the parent."""

    run_id: str
    parent_id: str
    before: dict[str, Any]
    after: dict[str, Any]
    ratios: dict[str, Any]
    steps: list[dict[str, Any]]
    directory: Path


def _check_args(prune_ratio: float | None, method: str, structured: bool, round_to: int | None,
                finetune: int | None, quantize_mode: str | None = None) -> None:
    if prune_ratio is None and quantize_mode is None:
        raise SpecError("compress: nothing to do. Received: no compression step; give one, e.g. --prune 0.5 "
                        "or --quantize int8")
    if quantize_mode is not None:
        check_mode(quantize_mode, "--quantize")
    if prune_ratio is not None:
        check_ratio(prune_ratio, "--prune")
    check_method(method)
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
        raise SpecError(f"--round-to: expected a positive integer such as 8. Received: {round_to!r}")
    if round_to is not None and not structured:
        raise SpecError("--round-to: only structured pruning changes widths. Received: --unstructured; "
                        "drop --round-to")
    if method == "taylor" and not structured:
        raise SpecError("--method taylor: unstructured pruning ranks single weights by magnitude. Received: "
                        "--unstructured; use --method l1")
    if finetune is not None and (isinstance(finetune, bool) or not isinstance(finetune, int) or finetune < 0):
        raise SpecError(f"--finetune: expected a number of epochs, 0 or more. Received: {finetune!r}")
    if finetune and not structured:
        raise SpecError(f"--finetune {finetune}: fine-tuning would grow the zeroed weights back (no masks are "
                        f"kept). Received: --unstructured; use --finetune 0 or --structured")


def compress(run_id: str, *, prune_ratio: float | None = None, method: str = "l1", structured: bool = True,
             round_to: int | None = None, finetune: int | None = None, out: str | None = None,
             store: SQLiteRunStorage | str | Path | None = None, quiet: bool = False,
             data_root: str | Path | None = None, repeats: int = 10, quantize_mode: str | None = None,
             distill: bool = False, temperature: float | None = None, alpha: float | None = None,
             **overrides: Any) -> Compressed:
    """Compress a finished run into a new run (pruned, fine-tuned, quantized, measured), linked to it.

    `quantize_mode` (int8, int8-dynamic, int8-static, fp16, bf16, auto) quantizes the result
    last, after any fine-tuning; the new run then also stores quantized.safetensors + .json
    (archlab.compress.load_quantized(run folder) rebuilds it) and its test metrics and "after"
    measurements are the quantized model's.
    `finetune`: epochs of fine-tuning (default: the parent's epochs when pruning, else 0; 0: none).
    `distill`: the fine-tuning learns from the parent as its teacher (archlab.compress.distill's
    loss, with `temperature` and `alpha`). `overrides`: training settings that differ from the
    parent's (lr, batch_size, ...). `repeats`: timed forward passes per latency figure.
    """
    _check_args(prune_ratio, method, structured, round_to, finetune, quantize_mode)
    check_kd(temperature, alpha)
    if not distill and (temperature is not None or alpha is not None):
        raise SpecError("--temperature/--alpha: set how --distill learns from the parent. Received: no --distill; "
                        "add --distill or drop them")
    if distill and (prune_ratio is None or finetune == 0 or not structured):
        got = "no --prune" if prune_ratio is None else "--finetune 0" if structured else "--unstructured"
        raise SpecError(f"--distill: the pruned network learns from its parent while it fine-tunes. Received: "
                        f"{got}; prune (--prune RATIO, structured) and fine-tune (--finetune EPOCHS), or drop --distill")
    st = store if isinstance(store, SQLiteRunStorage) else open_store(store)
    record = st.get_run(run_id)
    if record.status != "finished":
        raise StoreError(f"run {record.run_id}: is {record.status}, not finished. Received: a run without final "
                         f"weights; compress a finished run (`archlab runs` lists them)")
    if (st.run_dir(record.run_id) / QUANTIZED_META).is_file():
        parent_id = record.tags.get("parent", "")
        raise SpecError(f"run {record.run_id}: holds a quantized model; pruning or quantizing it again would start "
                        f"from its float weights. Received: a run made by --quantize; compress its parent"
                        f"{' ' + parent_id if parent_id else ''} instead")
    parent, _ = load_run_model(record.run_id, store=st)
    # Before anything is written: measurement, pruning and quantization take one input and a
    # graph without named routes (a quantized module loses the route its float one carried).
    require_one_input(parent, "compress")
    if getattr(parent, "reads_input_by_name", False):
        raise SpecError(f"compress: run {record.run_id}'s spec routes named tensors (from:, name:, share: or memory:); "
                        f"compress handles serial, parallel and residual graphs so far. Nothing was written")
    settings = TrainSettings.from_mapping(thaw(record.settings))
    try:
        settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    except TypeError as e:
        raise SpecError(f"compress: unknown training setting. Received: {sorted(overrides)}; ({e})") from None
    epochs = (settings.epochs if prune_ratio is not None else 0) if finetune is None else finetune
    dataset = load_dataset(record.data, seed=settings.seed, root=data_root, target=settings.target,
                           stream=settings.stream)
    task = task_for(Spec.from_dict(thaw(record.spec)), settings, dataset.info)
    if method == "taylor" and isinstance(task, GenerativeTask):
        raise SpecError(f"--method taylor: needs a task with a loss on (input, target) batches. Received: task "
                        f"{task.name}; use --method l1")

    variant = Variant(parent.spec, parent)
    steps = [] if prune_ratio is None else \
        [lambda v: _prune_step(v, prune_ratio, method, structured, round_to, dataset, task, settings)]
    # distillation and quantization steps join this list
    for step in steps:
        variant = step(variant)

    kd = {"teacher": record.run_id, "kd_temperature": temperature, "kd_alpha": alpha} if distill else {}
    if distill:  # the parent teaches its pruned self (archlab.train._distill_task)
        variant.steps.append({"kind": "distill", "teacher": record.run_id, "temperature": temperature,
                              "alpha": alpha, "summary": "distilled from the parent"})
    spec = dataclasses.replace(variant.spec, name=out) if out else variant.spec
    summaries = [s["summary"] for s in variant.steps] + ([f"quantize {quantize_mode}"] if quantize_mode else [])
    tags = {"parent": record.run_id, "compression": "; ".join(summaries), **variant.tags}
    if epochs > 0 and variant.finetune:
        run = fit(spec, data=record.data, store=st, quiet=quiet, data_root=data_root, tags=tags,
                  initial_weights=variant.model.state_dict(),
                  **{**_inherited(settings), "epochs": epochs, **kd})
        child_id, child = run.run_id, run.model
    else:
        child_id = _store_untrained(st, spec, variant.model, record, settings, tags, data_root)
        child = variant.model
    child = child.cpu().eval()
    parent.eval()

    classify = task.name == "classify"
    x = dataset.test.slice(0, 1)[0] if len(dataset.test) else None
    data = dataset.test if classify and len(dataset.test) else None
    before = measure(parent, x, data=data, repeats=repeats)
    if quantize_mode is not None:
        q, step = _quantize_step(child, quantize_mode, dataset, classify)
        variant.steps.append(step)
        qfile = save_quantized(q, st.run_dir(child_id))
        after = measure(q, x, data=data, repeats=repeats, file=qfile, macs=count_macs(child, x if x is not None
                                                                                      else child.example_input(1)))
        after["params"] = sum(p.numel() for p in child.parameters())  # the same weights, stored in fewer bits
        metrics, _ = task.evaluate(q, dataset.test, device=torch.device("cpu"), seed=settings.seed,
                                   batch_size=settings.eval_batch("cpu"))
        if metrics:  # the run's test metrics are the quantized model's
            st.set_status(child_id, "finished", test_metrics=metrics)
    else:
        after = measure(child, x, data=data, repeats=repeats)
    before["test_metrics"] = dict(thaw(record.test_metrics))
    after["test_metrics"] = dict(thaw(st.get_run(child_id).test_metrics))
    ratios = compare_measurements(before, after)
    result = {"parent": record.run_id, "run": child_id, "steps": variant.steps, "before": before, "after": after,
              "ratios": ratios, "finetune_epochs": epochs if variant.finetune else 0}
    directory = st.run_dir(child_id)
    write_text(directory / COMPRESSION_JSON, json.dumps(result, indent=1))
    return Compressed(child_id, record.run_id, before, after, ratios, variant.steps, directory)


# Settings a fine-tuning run does not take from its parent: where the parent's own weights came
# from (transfer learning) and globs on its parameter names (a pruned spec writes repeats out,
# so names move; frozen layers carry `freeze: true` in the pruned spec instead), nor the
# teacher of a distilled parent (`distill=True` makes the parent itself the teacher).
_NOT_INHERITED = ("init_from", "map", "partial", "freeze", "teacher", "kd_temperature", "kd_alpha")


def _inherited(settings: TrainSettings) -> dict[str, Any]:
    return {k: v for k, v in settings.to_dict().items() if k not in _NOT_INHERITED}


def _quantize_step(model: nn.Module, mode: str, dataset: Any, classify: bool) -> tuple[QuantizedNetwork, dict]:
    """Quantize the final model: calibrated on training batches, `auto` scored on the val split."""
    import warnings

    with warnings.catch_warnings(record=True):  # the notes say it, printed by the caller
        warnings.simplefilter("always", QuantizationWarning)
        q = quantize(model, mode, calibration=dataset.train,
                     data=dataset.val if classify and len(dataset.val) else None)
    step = {"kind": "quantize", "mode": q.mode, "engine": q.engine, "requested": mode, "notes": list(q.notes),
            "candidates": q.candidates, "file": QUANTIZED_WEIGHTS,
            "summary": f"quantize {q.mode}" + (f"@{q.engine}" if q.engine else "")}
    if q.notes:
        step["note"] = "\n".join(q.notes)
    return q, step


def _prune_step(v: Variant, ratio: float, method: str, structured: bool, round_to: int | None, dataset: Any,
                task: Any, settings: TrainSettings) -> Variant:
    if not structured:
        model, sparsity = magnitude_prune(v.model, ratio)
        step = {"kind": "prune", "structured": False, "ratio": ratio, "method": "magnitude",
                "sparsity": sparsity.sparsity, "summary": f"unstructured {ratio:g} ({sparsity.sparsity:.1%} zeros)",
                "note": sparsity.summary()}
        return Variant(v.spec, model, [*v.steps, step], v.tags, finetune=False)
    n = len(dataset.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed))
    bs = settings.batch_size
    batches = [dataset.train.take(order[i * bs:(i + 1) * bs]) for i in range(min(SAMPLE_BATCHES, -(-n // bs)))]
    scores = None
    if method == "taylor":
        scores = taylor_scores(v.model, batches, task.loss, forward=task.forward)
    pruned = prune(v.model, ratio, method=method, round_to=round_to, scores=scores)
    # The parent's batch-norm statistics do not fit the pruned network: re-estimated on
    # training batches (no weight changes), so it is usable before any fine-tuning.
    norms = recalibrate_batchnorm(pruned.model, [x for x, _ in batches]) if batches and \
        not isinstance(task, GenerativeTask) else 0
    note = pruned.summary() + (f"; {norms} batch norms re-estimated on {len(batches)} training batches" if norms
                               else "")
    step = {"kind": "prune", "structured": True, "ratio": ratio, "method": method, "round_to": round_to,
            "summary": f"structured {ratio:g} {method}" + (f" round-to {round_to}" if round_to else ""),
            "note": note, "recalibrated_norms": norms,
            "groups": [dataclasses.asdict(g) | {"keep": None} for g in pruned.groups]}
    return Variant(pruned.spec, pruned.model, [*v.steps, step], v.tags)


def _store_untrained(st: SQLiteRunStorage, spec: Spec, model: nn.Module, parent: Any, settings: TrainSettings,
                     tags: Mapping[str, str], data_root: str | Path | None) -> str:
    """A finished run of `model` as it is (no fine-tuning): its weights, spec and test metrics."""
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu",
           "host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads(),
           "platform": sys.platform}
    run_id = st.create_run(name=spec.name, data=parent.data, spec=spec.to_dict(), settings=settings.to_dict(),
                           env=env, params=sum(p.numel() for p in model.parameters()),
                           tags={"task": parent.tags.get("task", ""), **tags})
    directory = st.run_dir(run_id)
    try:
        write_text(directory / SPEC_FILE, spec.to_yaml())
        save_weights(directory / BEST_WEIGHTS, model)
        result = evaluate(run_id, store=st, data_root=data_root)
    except BaseException as e:
        st.set_status(run_id, "failed", message=f"{type(e).__name__}: {e}")
        raise
    metrics = {k: v for k, v in result.items() if isinstance(v, float)}
    st.set_status(run_id, "finished", test_metrics=metrics, duration_s=0.0)
    return run_id


def read_compression(store: SQLiteRunStorage, run_id: str) -> dict[str, Any] | None:
    """The measurements `compress` stored with a run (None for a run it did not make)."""
    path = store.run_dir(run_id, create=False) / COMPRESSION_JSON
    if not path.exists():
        return None
    try:
        return dict(read_json(path))
    except (StoreError, ValueError, TrainingError):
        return None
