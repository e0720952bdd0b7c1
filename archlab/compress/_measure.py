"""What a model costs and how well it does, measured the same way before and after compression.

`measure(net, example_input)` returns plain data (a dict, JSON-ready):

- ``params``: unique parameters (tied weights once);
- ``macs``: multiply-accumulates of one sample's forward pass (1 MAC = 2 FLOPs), counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the real module (it prices matrix products,
  convolutions and attention, as archlab's inspector does; ``macs / 2`` of its FLOPs). Any
  ``nn.Module`` works, also one with no spec;
- ``size_bytes``: the size of its safetensors file (shared tensors once), written to a
  temporary folder unless ``file=`` names the file it is stored in;
- ``latency``: CPU seconds per forward pass at batch 1 and 256, on one thread
  (``torch.set_num_threads(1)``, restored after), in inference mode: warm-up runs first, then
  the median of repeated runs, with the spread (the quartiles, min and max);
- ``accuracy`` (``data=`` a split of inputs and class labels): the fraction of samples whose
  arg-max class is the label.

`compare_measurements(before, after)` gives the ratios: ``before / after`` for costs (2.0 means
twice as cheap), ``after - before`` for accuracy (in points).

    >>> from archlab import build
    >>> net = build("zoo:mlp")
    >>> m = measure(net, net.example_input(1), batches=(1,), repeats=3)
    >>> sorted(m)[:3]
    ['accuracy', 'batches', 'latency']
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import ArchlabError

BATCHES = (1, 256)


def count_macs(net: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one sample's forward pass (eval mode), by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = example_input[:1]
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        net.train(was_training)
    return counter.get_total_flops() // 2


def size_on_disk(net: nn.Module, file: str | Path | None = None) -> int:
    """Bytes of the model's safetensors file: `file` if given, else one written to a temp folder."""
    if file is not None:
        return Path(file).stat().st_size
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory(prefix="archlab-measure-") as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(net, str(path))
        return path.stat().st_size


def _batch_of(example_input: torch.Tensor, batch: int) -> torch.Tensor:
    one = example_input[:1]
    return one.expand(batch, *one.shape[1:]).contiguous()


def time_forward(net: nn.Module, x: torch.Tensor, *, warmup: int = 3, repeats: int = 10,
                 min_seconds: float = 0.0) -> dict[str, float]:
    """Seconds per forward pass of `net` on `x` in inference mode, on the threads torch has now:
    `warmup` untimed runs, then `repeats` timed ones (more while under `min_seconds` in all)."""
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            net(x)
        start_all = time.perf_counter()
        while len(times) < repeats or (time.perf_counter() - start_all < min_seconds and len(times) < 1000):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median": statistics.median(times), "q1": q[0], "q3": q[2], "min": min(times), "max": max(times),
            "runs": len(times)}


def latency(net: nn.Module, example_input: torch.Tensor, *, batches: Sequence[int] = BATCHES, threads: int = 1,
            warmup: int = 3, repeats: int = 10, min_seconds: float = 0.0) -> dict[str, dict[str, float]]:
    """Forward seconds per batch size on `threads` CPU threads (restored after), eval mode."""
    before = torch.get_num_threads()
    was_training = net.training
    torch.set_num_threads(threads)
    net.eval()
    try:
        return {str(b): time_forward(net, _batch_of(example_input, b), warmup=warmup, repeats=repeats,
                                     min_seconds=min_seconds) for b in batches}
    finally:
        torch.set_num_threads(before)
        net.train(was_training)


def accuracy(net: nn.Module, split: Any, *, batch_size: int = 512) -> float:
    """Fraction of a split's samples whose arg-max output is their class label (eval mode)."""
    n = len(split)
    if n == 0:
        raise ArchlabError("measure: data= is an empty split. Received: 0 samples; pass a split with samples")
    correct = 0
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                x, y = split.slice(start, min(n, start + batch_size))
                out = net(x)
                if out.shape[0] != y.shape[0] or y.dim() != 1 or y.is_floating_point():
                    raise ArchlabError(f"measure: accuracy needs class labels, one per sample, and class scores. "
                                       f"Received: outputs {tuple(out.shape)}, labels {tuple(y.shape)} "
                                       f"({y.dtype}); pass data= only for a classifier")
                correct += int((out.argmax(-1) == y).sum())
    finally:
        net.train(was_training)
    return correct / n


def measure(net: nn.Module, example_input: torch.Tensor | None = None, *, data: Any = None,
            batches: Sequence[int] = BATCHES, threads: int = 1, warmup: int = 3, repeats: int = 10,
            min_seconds: float = 0.0, file: str | Path | None = None, macs: int | None = None,
            accuracy_fn: Callable[[nn.Module, Any], float] | None = None) -> dict[str, Any]:
    """Parameters, MACs, size on disk, CPU latency (median of `repeats`, one thread) and, given a
    split `data`, test accuracy of `net`.

    `example_input` is a batch of inputs (its first sample is repeated to each batch size); an
    archlab network makes its own when it is None. `macs` (e.g. of a quantized model the
    counter cannot price) and `file` (the stored weights) replace what would be measured.
    `accuracy_fn(net, data)` replaces the arg-max accuracy (e.g. a task's own metric).

    >>> from archlab import build
    >>> net = build({"input": {"shape": [4]}, "model": [{"linear": 8}, "relu", {"linear": 2}]})
    >>> measure(net, batches=(1,), repeats=2)["macs"]
    48
    """
    if example_input is None:
        if not hasattr(net, "example_input"):
            raise ArchlabError("measure: example_input is required for a module that is not an archlab network. "
                               "Received: None; pass a batch of inputs, e.g. torch.randn(1, *input_shape)")
        example_input = net.example_input(1)
    example_input = example_input.detach().cpu()
    result: dict[str, Any] = {
        "params": sum(p.numel() for p in net.parameters()),
        "macs": count_macs(net, example_input) if macs is None else int(macs),
        "size_bytes": size_on_disk(net, file),
        "threads": threads,
        "batches": list(batches),
        "latency": latency(net, example_input, batches=batches, threads=threads, warmup=warmup, repeats=repeats,
                           min_seconds=min_seconds),
        "accuracy": None,
    }
    if data is not None:
        result["accuracy"] = (accuracy_fn or accuracy)(net, data)
    return result


def compare_measurements(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Ratios of two `measure` results: before / after for params, MACs, size and each batch's
    median latency (above 1: the compressed model is cheaper), and the accuracy change in points.

    >>> compare_measurements({"params": 10, "macs": 8, "size_bytes": 100, "latency": {"1": {"median": 2.0}},
    ...                       "accuracy": 0.9},
    ...                      {"params": 5, "macs": 2, "size_bytes": 50, "latency": {"1": {"median": 1.0}},
    ...                       "accuracy": 0.895})
    {'params': 2.0, 'macs': 4.0, 'size_bytes': 2.0, 'latency': {'1': 2.0}, 'accuracy_points': -0.5}
    """
    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    out: dict[str, Any] = {k: ratio(before.get(k), after.get(k)) for k in ("params", "macs", "size_bytes")}
    lb, la = before.get("latency") or {}, after.get("latency") or {}
    out["latency"] = {b: ratio(lb[b]["median"], la[b]["median"]) for b in lb if b in la}
    acc_b, acc_a = before.get("accuracy"), after.get("accuracy")
    out["accuracy_points"] = None if acc_b is None or acc_a is None else round(100 * (acc_a - acc_b), 6)
    return out
