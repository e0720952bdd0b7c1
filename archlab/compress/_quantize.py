"""Quantization for CPU inference: int8 (dynamic or static), fp16, bf16, and `auto`.

    >>> from archlab import build
    >>> net = build({"input": {"shape": [16]}, "model": [{"linear": 32}, "relu", {"linear": 4}]})
    >>> q = quantize(net, "int8", speed_check=False)
    >>> q.mode, q.engine, tuple(q(net.example_input(3)).shape)
    ('int8-dynamic', 'x86', (3, 4))

Modes (what runs in which dtype):

- ``int8-dynamic``: linear, LSTM and GRU weights are int8 (per-tensor scale); activations are
  quantized to uint8 on the fly, per batch, from their observed range; everything else
  (embeddings, norms, activations, attention arithmetic) stays float32.
- ``int8-static``: convolutions and linear layers (fused with a following ReLU) run in int8
  end to end, with activation scales fixed by calibration on training batches (histogram
  observers, per-channel weights); max-pooling, flatten and adds run on quantized tensors;
  layers int8 kernels lack (global pooling, an even-sized ``same``-padded convolution,
  normalisations that could not be folded) run in float32 between a dequantize and a
  quantize; a recurrent layer left over is then quantized dynamically.
- ``int8``: ``int8-static`` for a model with convolutions (calibration required), else
  ``int8-dynamic``.
- ``fp16`` / ``bf16``: every weight and buffer is cast, the float input is cast on the way in
  and the output back to float32 on the way out; every layer computes in that dtype
  (matmuls and convolutions by oneDNN: AMX/AVX-512 BF16 where the CPU has it).
- ``auto``: builds every candidate that applies (fp32 included), measures each on this
  machine (median of interleaved runs at ``batch``, one thread) and its accuracy, and keeps
  the fastest whose accuracy is within ``tolerance`` points (default
  :data:`DEFAULT_TOLERANCE` = 0.5) of fp32's. When fp32 is fastest it returns fp32 and says
  so (``notes``). Accuracy: top-1 against ``data``'s class labels, or, without ``data``, top-1
  agreement with fp32 on the calibration batches.

Explicit modes check the speed too (``speed_check=True``): a result slower than fp32 comes
with a note in ``notes`` and a :class:`QuantizationWarning`, never silently.

Which flow, and why. Measured 1-2 Dec 2026: torch 2.13.0+cpu, torchao 0.18.0, a 2-vCPU Intel
Xeon with AVX-512 VNNI/BF16/FP16 and AMX, one thread, batch 64, process CPU time per forward
pass (the machine was shared with other jobs: wall time swung 2-4×; CPU time ±15%). Ratios
are fp32 eager / flow, above 1 faster; ``bench/quantize.py --flows`` re-measures them:

=============================================  ===============  ===========
flow (random weights)                          MLP 2048-1024    CNN 8×8
=============================================  ===============  ===========
``torch.ao`` eager ``quantize_dynamic`` (x86)  1.9×             —
``torch.ao`` FX static ``convert_fx`` (x86)    (2.7×, below)    2.7×
PT2E (torchao) + X86InductorQuantizer,         0.73×            1.29×
then ``torch.compile`` (17-22 s per model)
PT2E without compile (reference q/dq ops)      0.15×            0.49×
fp32 + ``torch.compile`` (for reference)       0.91×            1.47×
torchao ``Int8DynamicActivationInt8Weight``    0.83×            0.73×
torchao ``Int8WeightOnly``                     0.73×            0.94×
=============================================  ===============  ===========

PT2E now lives in torchao (``torch.ao.quantization.quantize_pt2e`` is gone from torch 2.13);
its int8 is fast only after ``torch.compile``, which would be redone at every load, and was
still slower than fp32 for the dense model and than archlab's FX int8 for the CNN. torchao's
int8 configs were slower than fp32 for both. So archlab uses ``torch.ao.quantization``: its
eager dynamic flow and its FX static flow run real int8 kernels (fbgemm / oneDNN, VNNI/AMX)
with no compile step, and their modules rebuild from a spec and take stored int8 tensors.
Trained on digits (``bench/quantize.py --seeds 3``, median CPU-time speed-up): the wide MLP
int8-dynamic 2.2× (x86) / 3.0× (onednn), int8-static 2.7× / 4.0×, bf16 2.5×, fp16 1.1×, file
3.9-4.0× smaller, test accuracy unchanged; zoo:resnet-mini int8-static 3.8× / 3.7×, bf16
1.5×, fp16 0.75×, file 3.7× smaller, accuracy unchanged; zoo:mlp (256-128) is too small:
every mode was 0.5-0.72× fp32, and ``auto`` kept fp32. A small LSTM (hidden 128, sequence
50) was 0.7-0.9× fp32 with int8-dynamic.
``torch.ao.quantization`` warns at every call that it is deprecated (and that quantized
tensors are); archlab silences those warnings inside its own calls only, because the
successor measured slower here — the bench re-measures the choice.

One more measured effect: an int8 model (oneDNN kernels) whose first forward pass was at one
batch size ran 15-25% slower at another afterwards than a model first run at that size; run
a loaded model once at the batch size you serve. ``auto`` times candidates before scoring them.

Engines: ``x86`` (PyTorch's default: fbgemm or oneDNN per op) or ``onednn``; the int8 weights
are packed for the engine at quantize and load time (both recorded), so a loaded model runs
the same kernels. ``auto`` tries both.

Saving (:func:`save_quantized`) writes ``quantized.safetensors`` (int8 weights as int8
tensors, their scales and zero points, float biases, activation scales) and
``quantized.json`` (mode, engine, the spec, how each tensor maps back): nothing is pickled.
:func:`load_quantized` builds the float network from the spec, applies the same quantization
structure with placeholder statistics, then puts the stored int8 tensors and scales in place:
the logits are bit-identical to the saved model's.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import statistics
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import ArchlabError, SpecError
from ..model import BuiltNetwork, Network, build, require_one_input
from ..runs import QUANTIZED_META, QUANTIZED_WEIGHTS, read_json, write_text
from ..spec import Spec

__all__ = [
    "DEFAULT_TOLERANCE",
    "MODES",
    "QUANTIZED_META",
    "QUANTIZED_WEIGHTS",
    "QuantizationWarning",
    "QuantizedNetwork",
    "load_quantized",
    "load_run_quantized",
    "quantize",
    "save_quantized",
    "time_candidates",
]

MODES = ("int8", "int8-dynamic", "int8-static", "fp16", "bf16", "auto")
ENGINES = ("x86", "onednn", "fbgemm")
DEFAULT_TOLERANCE = 0.5  # accuracy points (percent) auto may give up against fp32
_FORMAT = "archlab-quantized"
_VERSION = 1
_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}
_RECURRENT = (nn.LSTM, nn.GRU)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class QuantizationWarning(UserWarning):
    """A quantized model that is slower than fp32 on this machine (or similar news)."""


# --------------------------------------------------------------------------- the result


class QuantizedNetwork(BuiltNetwork, nn.Module):
    """A quantized archlab network: a plain nn.Module that takes and returns what the float
    one did (float32 outputs), with the float network's protocol (spec, input/output types).

    mode      int8-dynamic | int8-static | fp16 | bf16 | fp32 (auto kept fp32)
    engine    the quantized engine its int8 weights are packed for (None unless int8)
    inner     the module that computes
    notes     what the caller must know (e.g. slower than fp32 here)
    candidates  auto only: each candidate's mode, engine, latency and accuracy
    """

    def __init__(self, inner: nn.Module, *, mode: str, engine: str | None, source: nn.Module,
                 notes: Sequence[str] = (), candidates: Sequence[Mapping[str, Any]] = ()):
        super().__init__()
        self.inner = inner
        self.mode = mode
        self.engine = engine
        self.notes = tuple(notes)
        self.candidates = [dict(c) for c in candidates]
        # The float network's protocol, as plain attributes (kept out of state_dict).
        for name in ("spec", "input_type", "output_type", "layers", "sections", "tree"):
            if hasattr(source, name):
                setattr(self, name, getattr(source, name))
        self.kind = getattr(source, "kind", "plain")
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the float layers compute in."""
        return _HALF.get(self.mode, torch.float32)

    def forward(self, *args: Any) -> Any:
        dtype = self.dtype
        if dtype != torch.float32:
            args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                         for a in args)
        return _to_float32(self.inner(*args))

    example_input = Network.example_input

    def train(self, mode: bool = True) -> QuantizedNetwork:
        """A quantized model is for inference only: it stays in eval mode."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"mode={self.mode}" + (f", engine={self.engine}" if self.engine else "")


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, tuple | list):
        return type(out)(_to_float32(o) for o in out)
    return out


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao.quantization's deprecation chatter inside archlab's own calls (the
    module docstring says why archlab uses it anyway)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\.ao(\.|$)")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        yield


@contextlib.contextmanager
def _engine(name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def _check_engine(engine: str | None, where: str) -> str:
    engine = engine or "x86"
    supported = [e for e in ENGINES if e in torch.backends.quantized.supported_engines]
    if engine not in supported:
        raise ArchlabError(f"{where}: engine must be one of {', '.join(supported)} on this machine. "
                           f"Received: engine={engine!r}; pass engine='x86'")
    return engine


def _inputs(batch: Any) -> Any:
    """The input of one batch: a tensor, or the first item of an (x, y) pair."""
    return batch[0] if isinstance(batch, tuple | list) else batch


def _calibration_batches(calibration: Any, limit: int) -> list[Any]:
    if calibration is None:
        return []
    if isinstance(calibration, torch.Tensor):
        return [calibration[i:i + 64] for i in range(0, min(len(calibration), 64 * limit), 64)]
    if hasattr(calibration, "slice") and hasattr(calibration, "__len__"):  # a data Split
        n = len(calibration)
        return [calibration.slice(i, min(n, i + 64))[0] for i in range(0, min(n, 64 * limit), 64)]
    out = []
    for batch in calibration:
        out.append(_inputs(batch))
        if len(out) >= limit:
            break
    return out


def _labelled_batches(data: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(data, "slice") and hasattr(data, "__len__"):
        n = len(data)
        for i in range(0, n, 512):
            yield data.slice(i, min(n, i + 512))
        return
    for batch in data:
        if not (isinstance(batch, tuple | list) and len(batch) >= 2):
            raise ArchlabError("quantize: data= must give (inputs, class labels) batches or be a data split. "
                               f"Received: a batch of type {type(batch).__name__}; pass e.g. dataset.val")
        yield batch[0], batch[1]


def _accuracy(model: nn.Module, data: Any) -> float:
    correct = total = 0
    with torch.inference_mode():
        for x, y in _labelled_batches(data):
            if y.dim() != 1 or y.is_floating_point():
                raise ArchlabError(f"quantize: auto compares accuracy, so data= needs one class label per "
                                   f"sample. Received: labels {tuple(y.shape)} ({y.dtype}); leave data= out "
                                   f"to compare with fp32's own predictions")
            correct += int((model(x).argmax(-1) == y).sum())
            total += len(y)
    if total == 0:
        raise ArchlabError("quantize: data= holds no samples. Received: 0 samples; pass a split with samples")
    return correct / total


def _agreement(model: nn.Module, reference: Sequence[torch.Tensor], inputs: Sequence[Any]) -> float:
    same = total = 0
    with torch.inference_mode():
        for x, ref in zip(inputs, reference, strict=True):
            pred = model(x).argmax(-1)
            same += int((pred == ref).sum())
            total += ref.numel()
    return same / max(total, 1)


def _batch_input(net: nn.Module, sample: Any, batch: int) -> Any:
    if isinstance(sample, torch.Tensor) and sample.dim() > 0 and len(sample):
        one = sample[:1]
        reps = math.ceil(batch / len(sample))
        return sample.repeat(reps, *([1] * (sample.dim() - 1)))[:batch].contiguous() if len(sample) > 1 \
            else one.expand(batch, *one.shape[1:]).contiguous()
    if hasattr(net, "example_input"):
        return net.example_input(batch)
    raise ArchlabError("quantize: cannot make an input batch for timing. Received: no calibration batches and a "
                       "module without example_input; pass calibration=")


def time_candidates(models: Mapping[str, nn.Module], x: Any, *, threads: int = 1, warmup: int = 3,
                    rounds: int = 15, min_seconds: float = 0.3) -> dict[str, float]:
    """Median seconds per forward pass of each model on `x`, on `threads` CPU threads (restored
    after), the models timed in turn within each round so that a change in the machine's load
    falls on all of them alike (in a new random order each round: what ran just before, e.g. a
    cache-evicting or AVX-512-heavy model, then falls on all alike too). On one thread the clock is the process's CPU time (torch then
    computes on the calling thread, so it counts the work and not the time other jobs on a busy
    machine took: a long forward pass is preempted more often than a short one, which would
    flatter the faster model); on more threads, wall time."""
    clock = time.process_time if threads == 1 else time.perf_counter
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {k: [] for k in models}
    try:
        with torch.inference_mode():
            for m in models.values():
                for _ in range(warmup):
                    m(x)
            start = time.perf_counter()
            order, shuffle = list(models), random.Random(0).shuffle
            while True:
                shuffle(order)  # a fresh order each round: no model always follows the same one
                for key in order:
                    t0 = clock()
                    models[key](x)
                    times[key].append(clock() - t0)
                n = len(next(iter(times.values())))
                if n >= rounds and (time.perf_counter() - start >= min_seconds or n >= 1000):
                    break
    finally:
        torch.set_num_threads(before)
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------- the flows


def _has(net: nn.Module, kinds: tuple[type, ...]) -> bool:
    return any(isinstance(m, kinds) for m in net.modules())


def _dynamic(net: nn.Module, engine: str) -> nn.Module:
    if not _has(net, (nn.Linear, *_RECURRENT)):
        raise ArchlabError("quantize: int8-dynamic quantizes linear, LSTM and GRU layers and this model has "
                           "none. Received: no such layer; use int8-static (convolutions) or bf16")
    with _quiet(), _engine(engine):
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(net).eval(), {nn.Linear, *_RECURRENT},
                                                      dtype=torch.qint8)


def _non_traceable(model: nn.Module) -> list[type]:
    """archlab's leaf layers that torch.fx cannot trace (e.g. global pooling reads x.dim()):
    they are kept whole and run in float32."""
    classes: set[type] = set()
    for m in model.modules():
        cls = type(m)
        if cls in classes or cls.__module__.startswith("torch.") or next(m.children(), None) is not None:
            continue
        try:
            torch.fx.symbolic_trace(m)
        except Exception:  # any tracing failure: keep the layer whole
            classes.add(cls)
    return sorted(classes, key=lambda c: c.__qualname__)


def _prepare_static(net: nn.Module, engine: str, example: Any) -> nn.Module:
    """The float copy with observers in place (FX graph mode), ready for calibration."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import prepare_fx

    model = copy.deepcopy(net).eval()
    if not _has(model, (nn.Linear, *_CONV)):
        raise ArchlabError("quantize: int8-static quantizes convolutions and linear layers and this model has "
                           "none. Received: no such layer; use int8-dynamic or bf16")
    mapping = get_default_qconfig_mapping(engine)
    for name, m in model.named_modules():
        if isinstance(m, _CONV) and isinstance(m.padding, str):
            if m.padding == "valid":
                m.padding = (0,) * len(m.kernel_size)
            elif all(s == 1 for s in m.stride) and all(d * (k - 1) % 2 == 0
                                                       for d, k in zip(m.dilation, m.kernel_size, strict=True)):
                # int8 kernels want numbers: `same` with odd kernels pads (k-1)/2 each side
                m.padding = tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size, strict=True))
            else:
                mapping.set_module_name(name, None)  # asymmetric padding: this one stays float
    custom = PrepareCustomConfig().set_non_traceable_module_classes(_non_traceable(model))
    # Recurrent layers have no static int8 kernel: keep them float here, dynamic int8 later.
    for cls in _RECURRENT:
        mapping.set_object_type(cls, None)
    try:
        with _quiet(), _engine(engine):
            return prepare_fx(model, mapping, example_inputs=(example,), prepare_custom_config=custom)
    except ArchlabError:
        raise
    except Exception as e:  # torch.fx tracing errors have no common base class
        raise ArchlabError(f"quantize: int8-static needs a model torch.fx can trace, and tracing failed "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). Received: "
                           f"{type(net).__name__}; use int8-dynamic or bf16") from None


def _convert_static(prepared: nn.Module, engine: str) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet(), _engine(engine):
        model = convert_fx(prepared)
        if _has(model, _RECURRENT):
            model = torch.ao.quantization.quantize_dynamic(model, set(_RECURRENT), dtype=torch.qint8,
                                                           inplace=True)
    return model


def _static(net: nn.Module, engine: str, batches: Sequence[Any]) -> nn.Module:
    if not batches:
        raise ArchlabError("quantize: int8-static fixes activation scales on calibration batches. Received: "
                           "calibration=None; pass calibration= a few training batches (or use int8-dynamic)")
    prepared = _prepare_static(net, engine, batches[0])
    with torch.no_grad(), _quiet():
        for x in batches:
            prepared(x)
    return _convert_static(prepared, engine)


def _half(net: nn.Module, mode: str) -> nn.Module:
    return copy.deepcopy(net).eval().to(_HALF[mode])


def _make(net: nn.Module, mode: str, engine: str | None, batches: Sequence[Any]) -> QuantizedNetwork:
    if mode == "int8-dynamic":
        inner = _dynamic(net, engine or "x86")
    elif mode == "int8-static":
        inner = _static(net, engine or "x86", batches)
    elif mode in _HALF:
        inner, engine = _half(net, mode), None
    else:  # fp32
        inner, engine = copy.deepcopy(net).eval(), None
    return QuantizedNetwork(inner, mode=mode, engine=engine, source=net)


# --------------------------------------------------------------------------- the API


def quantize(net: nn.Module, mode: str = "int8", *, calibration: Any = None, data: Any = None,
             engine: str | None = None, tolerance: float = DEFAULT_TOLERANCE, batch: int = 64,
             calibration_batches: int = 16, speed_check: bool = True, threads: int = 1) -> QuantizedNetwork:
    """Quantize a trained network for CPU inference; `net` itself is left unchanged.

    `mode` is one of int8, int8-dynamic, int8-static, fp16, bf16, auto (see the module
    docstring for what each runs in which dtype). `calibration`: training batches (tensors,
    (x, y) pairs, or a data split) for int8-static, at most `calibration_batches` of them.
    `data`: labelled batches or a split that `auto` scores accuracy on. `tolerance`: the
    accuracy points auto may give up against fp32. `batch` and `threads`: what the speed is
    measured at. With `speed_check`, an explicit mode is timed against fp32 too and a slower
    result says so (``notes`` and a QuantizationWarning).

    >>> from archlab import build
    >>> net = build({"input": {"shape": [8]}, "model": [{"linear": 4}]})
    >>> quantize(net, "bf16", speed_check=False).dtype
    torch.bfloat16
    >>> quantize(net, "int4")
    Traceback (most recent call last):
    ...
    archlab.core._errors.ArchlabError: quantize: mode must be one of int8, int8-dynamic, int8-static, fp16, bf16, auto. Received: 'int4'; pass e.g. int8
    """
    require_one_input(net, "quantize")
    if getattr(net, "reads_input_by_name", False):  # quantized modules would drop the routes of the float ones
        raise SpecError("quantize: the spec routes named tensors (from:, name:, share: or memory:); quantization "
                        "handles serial, parallel and residual graphs so far")
    check_mode(mode, "quantize: mode")
    if not isinstance(tolerance, int | float) or not 0 <= tolerance <= 100:
        raise ArchlabError(f"quantize: tolerance is in accuracy points, between 0 and 100. Received: "
                           f"tolerance={tolerance!r}; pass e.g. 0.5")
    if isinstance(net, QuantizedNetwork):
        raise ArchlabError(f"quantize: the model is already quantized ({net.mode}). Received: a "
                           f"QuantizedNetwork; quantize the float model")
    devices = {str(t.device) for t in [*net.parameters(), *net.buffers()]}
    if devices - {"cpu"}:
        raise ArchlabError(f"quantize: quantized models run on the CPU. Received: a model on "
                           f"{', '.join(sorted(devices - {'cpu'}))}; pass net.cpu()")
    was_training = net.training
    net.eval()
    try:
        return _quantize(net, mode, _calibration_batches(calibration, calibration_batches), data, engine,
                         tolerance, batch, speed_check, threads)
    finally:
        net.train(was_training)


def _quantize(net: nn.Module, mode: str, batches: Sequence[Any], data: Any, engine: str | None, tolerance: float,
              batch: int, speed_check: bool, threads: int) -> QuantizedNetwork:
    if mode == "auto":
        return _auto(net, batches, data, engine, tolerance, batch, threads)
    if mode == "int8":
        mode = "int8-static" if _has(net, _CONV) else "int8-dynamic"
    engine = _check_engine(engine, "quantize") if mode.startswith("int8") else None
    result = _make(net, mode, engine, batches)
    if speed_check:
        x = _batch_input(net, batches[0] if batches else None, batch)
        t = time_candidates({"fp32": net, mode: result}, x, threads=threads)
        if t[mode] > t["fp32"]:
            _note(result, f"{mode} is slower than fp32 on this machine: {t['fp32'] / t[mode]:.2f}× its speed "
                          f"at batch {batch}, {threads} thread(s); keep the fp32 model or try auto")
    return result


def load_run_quantized(run_id: str, *, store: Any = None) -> QuantizedNetwork:
    """The quantized model `archlab compress RUN --quantize` stored with a run."""
    from ..runs import open_store

    st = store if hasattr(store, "run_dir") else open_store(store)
    record = st.get_run(run_id)
    folder = st.run_dir(record.run_id, create=False)
    if not (folder / QUANTIZED_META).is_file():
        raise ArchlabError(f"run {record.run_id} holds no quantized model. Received: a run without "
                           f"{QUANTIZED_META}; make one with `archlab compress {record.run_id} --quantize int8`")
    return load_quantized(folder)


def check_mode(mode: Any, where: str = "quantize: mode") -> str:
    """`mode` if it is one of MODES, else a one-line ArchlabError naming `where`."""
    if mode not in MODES:
        raise ArchlabError(f"{where} must be one of {', '.join(MODES)}. Received: {mode!r}; pass e.g. int8")
    return mode


def _note(result: QuantizedNetwork, text: str) -> None:
    result.notes = (*result.notes, text)
    warnings.warn(text, QuantizationWarning, stacklevel=3)


def _auto(net: nn.Module, batches: Sequence[Any], data: Any, engine: str | None, tolerance: float,
          batch: int, threads: int) -> QuantizedNetwork:
    engines = [_check_engine(engine, "quantize")] if engine else \
        [e for e in ("x86", "onednn") if e in torch.backends.quantized.supported_engines]
    wanted: list[tuple[str, str | None]] = [("fp32", None)]
    if _has(net, (nn.Linear, *_RECURRENT)):
        wanted += [("int8-dynamic", e) for e in engines]
    if _has(net, (nn.Linear, *_CONV)) and batches:
        wanted += [("int8-static", e) for e in engines]
    wanted += [("bf16", None), ("fp16", None)]
    notes: list[str] = []
    if not batches and _has(net, _CONV):
        notes.append("auto: int8-static was not tried: no calibration batches")
    built: dict[str, QuantizedNetwork] = {}
    for mode, eng in wanted:
        key = mode + (f"@{eng}" if eng else "")
        try:
            built[key] = _make(net, mode, eng, batches)
        except ArchlabError as e:
            notes.append(f"auto: {key} was not tried: {e}")
    if data is None and not batches:
        raise ArchlabError("quantize: auto needs data to score candidates on. Received: neither data= nor "
                           "calibration=; pass data= a labelled split (or calibration= training batches)")
    # Timed first, while no candidate has run another batch size: a oneDNN int8 model that has
    # (e.g. scoring on a 180-sample split) was ~20% slower at batch 64 afterwards, measured here.
    x = _batch_input(net, batches[0] if batches else None, batch)
    seconds = time_candidates(built, x, threads=threads)
    if data is not None:
        scores = {k: _accuracy(m, data) for k, m in built.items()}
        metric = "accuracy on the data given (compress: the validation split)"
    else:
        with torch.inference_mode():
            reference = [net(x).argmax(-1) for x in batches]
        scores = {k: _agreement(m, reference, batches) for k, m in built.items()}
        metric = "agreement with fp32"
    floor = scores["fp32"]
    fp32 = seconds["fp32"]
    candidates = [{"candidate": k, "mode": m.mode, "engine": m.engine, "seconds": seconds[k],
                   "speedup": fp32 / seconds[k], metric.replace(" ", "_"): scores[k],
                   "within_tolerance": 100 * (floor - scores[k]) <= tolerance + 1e-9}
                  for k, m in built.items()]
    ok = [c for c in candidates if c["within_tolerance"]]
    best = min(ok, key=lambda c: c["seconds"])
    chosen = built[best["candidate"]]
    if chosen.mode == "fp32":
        notes.append(f"auto: no quantized candidate was faster than fp32 within {tolerance} points of "
                     f"{metric} at batch {batch}, {threads} thread(s) on this machine; kept fp32")
    else:
        notes.append(f"auto: chose {best['candidate']}, {best['speedup']:.2f}× fp32's speed at batch {batch}, "
                     f"{metric} {100 * scores[best['candidate']]:.2f}% (fp32 {100 * floor:.2f}%)")
    return QuantizedNetwork(chosen.inner, mode=chosen.mode, engine=chosen.engine, source=net, notes=notes,
                            candidates=candidates)


# --------------------------------------------------------------------------- save and load

_DTYPES = {str(d): d for d in (torch.qint8, torch.quint8, torch.qint32, torch.float16, torch.bfloat16,
                               torch.float32)}


def _encode(key: str, value: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if value is None:
        return {"kind": "none"}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "dtype": str(value)}
    if isinstance(value, tuple | list):
        return {"kind": "tuple", "items": [_encode(f"{key}.{i}", v, tensors) for i, v in enumerate(value)]}
    if isinstance(value, torch.Tensor) and value.is_quantized:
        tensors[key] = value.int_repr().contiguous().clone()
        entry: dict[str, Any] = {"kind": "qtensor", "dtype": str(value.dtype)}
        if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            entry.update(scheme="per_tensor", scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
        else:
            tensors[f"{key}.scales"] = value.q_per_channel_scales().contiguous().clone()
            tensors[f"{key}.zero_points"] = value.q_per_channel_zero_points().contiguous().clone()
            entry.update(scheme="per_channel", axis=int(value.q_per_channel_axis()))
        return entry
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().contiguous().clone()
        return {"kind": "tensor"}
    raise ArchlabError(f"save_quantized: cannot store {key} of type {type(value).__name__}. Received: "
                       f"{type(value).__name__}; this layer's quantized form is not supported")


def _decode(key: str, entry: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Any:
    kind = entry["kind"]
    if kind == "none":
        return None
    if kind == "dtype":
        return _DTYPES[entry["dtype"]]
    if kind == "tuple":
        return tuple(_decode(f"{key}.{i}", e, tensors) for i, e in enumerate(entry["items"]))
    if kind == "qtensor":
        ints = tensors[key]  # int8 / uint8 / int32: the quantized dtype follows from it
        if entry["scheme"] == "per_tensor":
            return torch._make_per_tensor_quantized_tensor(ints, entry["scale"], entry["zero_point"])
        return torch._make_per_channel_quantized_tensor(ints, tensors[f"{key}.scales"],
                                                        tensors[f"{key}.zero_points"], entry["axis"])
    return tensors[key]


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, tuple | list):
        return tuple(_shapes(v) for v in value)
    return None


def _rnn_modules(model: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized.dynamic import GRU, LSTM

    return {name: m for name, m in model.named_modules() if isinstance(m, LSTM | GRU)}


def _state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}
    rnns = _rnn_modules(model)
    for name, m in rnns.items():  # packed recurrent weights: stored through their own accessor
        for group, values in m._weight_bias().items():
            for k, v in values.items():
                full = f"{name}.{group}.{k}"
                layout[full] = {**_encode(full, v, tensors), "rnn": name, "group": group, "name": k}
    with _quiet():
        state = model.state_dict()
    for key, value in state.items():
        if any(key.startswith(f"{name}.") for name in rnns):
            continue
        layout[key] = _encode(key, value, tensors)
    return tensors, layout


def _spec_of(net: nn.Module) -> Spec:
    spec = getattr(net, "spec", None)
    if not isinstance(spec, Spec):
        raise ArchlabError("save_quantized: the model must come from an archlab spec (it is rebuilt from it on "
                           "load). Received: a model without .spec; quantize a network built by archlab.build")
    return spec


def save_quantized(qnet: QuantizedNetwork, folder: str | Path) -> Path:
    """Write `qnet` to `folder` as quantized.safetensors + quantized.json; returns the weights file.

    >>> import tempfile
    >>> from archlab import build
    >>> net = build({"input": {"shape": [8]}, "model": [{"linear": 4}]})
    >>> q = quantize(net, "int8", speed_check=False)
    >>> path = save_quantized(q, tempfile.mkdtemp())
    >>> x = net.example_input(2)
    >>> bool(torch.equal(load_quantized(path.parent)(x), q(x)))
    True
    """
    from safetensors.torch import save_file

    if not isinstance(qnet, QuantizedNetwork):
        raise ArchlabError(f"save_quantized: expected the result of quantize(). Received: {type(qnet).__name__}; "
                           f"call quantize(net, mode) first")
    spec = _spec_of(qnet)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, layout = _state(qnet.inner)
    meta = {"format": _FORMAT, "version": _VERSION, "mode": qnet.mode, "engine": qnet.engine,
            "torch": torch.__version__, "spec": spec.to_dict(), "notes": list(qnet.notes),
            "candidates": qnet.candidates, "layout": layout}
    path = folder / QUANTIZED_WEIGHTS
    save_file(tensors, str(path), metadata={"format": _FORMAT, "mode": qnet.mode})
    write_text(folder / QUANTIZED_META, json.dumps(meta, indent=1, sort_keys=True))
    return path


def load_quantized(folder: str | Path) -> QuantizedNetwork:
    """Rebuild a model saved by save_quantized (no unpickling): its logits are bit-identical."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights_path = folder / QUANTIZED_META, folder / QUANTIZED_WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise ArchlabError(f"load_quantized: {folder} must hold {QUANTIZED_META} and {QUANTIZED_WEIGHTS}. "
                           f"Received: a folder without them; pass the folder save_quantized wrote")
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
        raise ArchlabError(f"load_quantized: {meta_path} is not an archlab quantized model (format "
                           f"{_FORMAT} v{_VERSION}). Received: {str(meta)[:80]}; save it with save_quantized")
    mode, engine = meta["mode"], meta["engine"]
    if mode not in (*MODES, "fp32") or mode in ("int8", "auto"):
        raise ArchlabError(f"load_quantized: unknown mode in {meta_path}. Received: {mode!r}; save it again")
    if engine is not None:
        _check_engine(engine, "load_quantized")
    net = build(Spec.from_dict(meta["spec"]), seed=0).eval()
    if mode == "int8-static":  # the same structure; placeholder statistics, replaced below
        prepared = _prepare_static(net, engine, net.example_input(2))
        with torch.no_grad(), _quiet():
            prepared(net.example_input(2))
        inner = _convert_static(prepared, engine)
    else:
        inner = _make(net, mode, engine, ()).inner
    tensors = load_file(str(weights_path))
    layout: dict[str, Any] = meta["layout"]
    with _quiet(), _engine(engine):
        current = inner.state_dict()
        state = OrderedDict((k, _decode(k, e, tensors)) for k, e in layout.items() if "rnn" not in e)
        state._metadata = getattr(current, "_metadata", None)  # type: ignore[attr-defined]  # module versions
        for k, v in current.items():  # recurrent packed weights: set below through their accessor
            if k not in state and any(e.get("rnn") and k.startswith(e["rnn"] + ".") for e in layout.values()):
                state[k] = v
        try:
            if set(state) != set(current):
                raise KeyError(f"keys differ: {sorted(set(state) ^ set(current))[:3]}")
            for k, v in state.items():  # quantized layers take any shape: check here
                if _shapes(v) != _shapes(current[k]):
                    raise KeyError(f"{k}: {_shapes(v)} where the spec builds {_shapes(current[k])}")
            inner.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError) as e:
            raise ArchlabError(f"load_quantized: {weights_path} does not fit the model its spec builds "
                               f"({str(e).splitlines()[0][:160]}). Received: a mismatched file; save it "
                               f"again with this archlab") from None
        rnns = _rnn_modules(inner)
        groups: dict[str, dict[str, Any]] = {}  # weight_ih_l0, bias_ih_l0, ... per recurrent layer
        for k, e in layout.items():
            if e.get("rnn"):
                groups.setdefault(e["rnn"], {})[e["name"]] = _decode(k, e, tensors)
        for name, wb in groups.items():
            have = rnns[name]._weight_bias() if name in rnns else {}
            want = {k: _shapes(v) for group in have.values() for k, v in group.items()}
            if {k: _shapes(v) for k, v in wb.items()} != want:
                raise ArchlabError(f"load_quantized: {weights_path} does not fit the model its spec builds "
                                   f"(recurrent layer {name}). Received: a mismatched file; save it again "
                                   f"with this archlab")
            rnns[name].set_weight_bias(wb)
    return QuantizedNetwork(inner, mode=mode, engine=engine, source=net, notes=meta.get("notes", ()),
                            candidates=meta.get("candidates", ()))
