"""What an architecture costs: parameters, forward FLOPs and training memory.

Everything runs on PyTorch's meta device: tensors there have shapes and dtypes but no
storage, so a 7-billion-parameter spec is measured on a laptop in seconds.

FLOPs. A dispatch mode sees every ATen op of one forward pass and prices it from its
shapes. Matrix products and convolutions cost 2 FLOPs per multiply-accumulate (1 MAC =
2 FLOPs); attention costs its two matrix products plus its softmax; pointwise ops cost
1 FLOP per output element, softmax 3, layer/batch norm 5, reductions and pooling 1 per
element read. Views, copies, gathers and allocations cost 0. Any other op is listed as
*uncounted* with how often it ran: never silently priced at zero.

Memory for one training step, split as PyTorch holds it under mixed precision
(`torch.autocast`): fp32 weights, fp32 gradients of trainable weights, optimizer state
(SGD with momentum: 1 copy, Adam/AdamW: 2 copies) and the activations autograd saves for
backward, measured from the tensors autograd actually saves (a saved-tensor hook, each
storage counted once, weights excluded) and still holds once the loss exists (a part of the
graph nothing reads is freed mid-forward, with what it saved: _held.py), in the compute
dtype. Allocator slack, CUDA context and temporary workspace are not included: the figures
are a floor, not a ceiling.

The activations are measured in training mode at batches 2 and 3, which give the line
`fixed + per_sample * batch`, and at the batch asked for. One exception: batch norm cannot
run a training step on one value per channel (PyTorch refuses it, e.g. batch 1 after a
`linear`, or a 1x1 feature map), so where batch 1 trips it, the batch-1 activations are read
off the line and `Memory.note` says so. Training at batch 1 fails the same way; that is the
spec's limit, not the inspector's.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..core import SpecError, parse_size, thaw
from ..layers import (
    LAYERS,
    PRICED_DEVICE,
    CrossAttention,
    MemoryUser,
    SelfAttention,
    attention_kernel,
)
from ..spec import Spec, load_spec
from ._autocast import DEVICES, MetaAutocast
from ._builder import (
    NOTHING_TO_CHECKPOINT,
    ROUTE,
    Network,
    Residual,
    checkpoint_repeats,
    is_checkpointed,
)
from ._held import Held, Replayed, SavedLog, unpack
from ._kinds import build
from ._meta_rules import meta_output
from ._network import Node

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}  # fp32 copies of each trainable weight
OUTSIDE = "(merges and skip adds)"
LEFT_OUT = "allocator slack, CUDA context, kernel workspaces, transient peaks of backward"
# PyTorch's recurrent kernels (oneDNN on CPU, cuDNN on CUDA) keep a workspace the meta device's
# step-by-step decomposition does not: zoo:lstm-classifier at batch 8 saves 31.5 MB on CPU
# against 16.4 MB priced (tests/test_memory_truth.py measures it).
LEFT_OUT_RECURRENT = "the recurrent kernels' workspace (an LSTM on CPU saves about 2x what is priced)"

# ----------------------------------------------------------------------- op pricing

_FREE = {
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "expand_as",
    "slice", "select", "split", "split_with_sizes", "unsafe_split", "unbind", "chunk", "narrow",
    "squeeze", "unsqueeze", "clone", "copy_", "contiguous", "cat", "stack", "embedding",
    "zeros", "ones", "empty", "empty_like", "zeros_like", "ones_like", "full", "full_like",
    "scalar_tensor", "arange", "tril", "triu", "detach", "alias", "_to_copy", "to", "index_select",
    "gather", "index", "lift_fresh", "new_zeros", "new_empty", "new_ones", "fill_", "zero_",
    "as_strided", "repeat", "repeat_interleave", "flip", "roll", "constant_pad_nd", "_reshape_alias",
    "empty_strided", "randn", "rand", "randint", "normal_", "uniform_", "set_", "resize_",
    "lift_fresh_copy", "_local_scalar_dense", "flatten", "unflatten", "view_as", "masked_select",
    "transpose_", "t_", "squeeze_", "unsqueeze_", "detach_", "as_strided_", "_unsafe_index",
}
_POINTWISE = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "relu", "relu_", "where",
    "clamp", "clamp_", "clamp_min", "sigmoid", "sigmoid_", "tanh", "tanh_", "silu", "silu_", "gelu",
    "exp", "exp_", "log", "sqrt", "rsqrt", "pow", "sin", "cos", "abs", "maximum", "minimum",
    "leaky_relu", "leaky_relu_", "elu", "hardtanh", "hardtanh_", "masked_fill", "masked_fill_",
    "bernoulli_", "bernoulli", "native_dropout", "lt", "gt", "le", "ge", "eq", "ne", "logical_not",
    "reciprocal", "square", "erf", "threshold", "sign", "addcmul", "addcdiv", "lerp",
    "bitwise_not", "bitwise_and", "bitwise_or", "logical_and", "logical_or",
}
_REDUCTION = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "logsumexp", "argmax",
              "_adaptive_avg_pool2d", "adaptive_avg_pool1d", "_adaptive_avg_pool1d", "norm"}
_PER_ELEMENT = {"_softmax": 3, "_safe_softmax": 3, "_log_softmax": 3,
                "native_layer_norm": 5, "native_batch_norm": 5, "_native_batch_norm_legit": 5,
                "_native_batch_norm_legit_functional": 5, "_native_batch_norm_legit_no_training": 5}


def _numel(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel()
    if isinstance(x, list | tuple):
        return sum(_numel(v) for v in x)
    return 0


def _first_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, list | tuple):
        for v in x:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


def op_flops(name: str, args: tuple, out: Any) -> int | None:
    """FLOPs of one ATen op (by its overload packet name), or None if it is unknown."""
    if name == "mm":
        (m, k), n = args[0].shape, args[1].shape[1]
        return 2 * m * k * n
    if name == "addmm":
        (m, k), n = args[1].shape, args[2].shape[1]
        return 2 * m * k * n + m * n
    if name == "bmm":
        (b, m, k), n = args[0].shape, args[1].shape[2]
        return 2 * b * m * k * n
    if name == "baddbmm":
        (b, m, k), n = args[1].shape, args[2].shape[2]
        return 2 * b * m * k * n + b * m * n
    if name in ("convolution", "_convolution"):
        w, bias = args[1], args[2]
        groups = args[8] if len(args) > 8 else 1
        y = _first_tensor(out)
        assert y is not None
        macs_per_out = (w.shape[1]) * math.prod(w.shape[2:])  # w: (out, in/groups, *kernel)
        del groups  # already folded into w.shape[1]
        return 2 * y.numel() * macs_per_out + (y.numel() if bias is not None else 0)
    if name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
        q, k = args[0], args[1]
        b, h, t, d = q.shape
        s = k.shape[2]
        return 4 * b * h * t * s * d + 3 * b * h * t * s  # q k^T, softmax, a v
    if name in ("max_pool2d_with_indices", "max_pool1d", "max_pool2d", "avg_pool2d", "avg_pool1d",
                "max_pool1d_with_indices"):
        kernel = args[1]
        kernel = [kernel] if isinstance(kernel, int) else list(kernel)
        if name.startswith("max_pool2d") or name == "avg_pool2d":
            kernel = kernel * 2 if len(kernel) == 1 else kernel
        y = _first_tensor(out)
        assert y is not None
        return y.numel() * math.prod(kernel)
    if name in _FREE:
        return 0
    if name in _POINTWISE:
        return _numel(_first_tensor(out))
    if name in _REDUCTION:
        return _numel(_first_tensor(args))
    if name in _PER_ELEMENT:
        return _PER_ELEMENT[name] * _numel(_first_tensor(out))
    return None


def op_macs(name: str, args: tuple, out: Any) -> int:
    """Multiply-accumulates of matrix products, convolutions and attention; 0 for other ops."""
    if name in ("mm", "addmm"):
        a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
        return a.shape[0] * a.shape[1] * b.shape[1]
    if name in ("bmm", "baddbmm"):
        a, b = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if name in ("convolution", "_convolution"):
        w, y = args[1], _first_tensor(out)
        assert y is not None
        return y.numel() * w.shape[1] * math.prod(w.shape[2:])
    if name.startswith("_scaled_dot_product_") and "backward" not in name:
        q, k = args[0], args[1]
        b, h, t, d = q.shape
        return 2 * b * h * t * k.shape[2] * d
    return 0


class _CostMode(TorchDispatchMode):
    """Prices every op of a forward pass and charges it to the innermost spec layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.flops: Counter[str] = Counter()
        self.macs = 0
        self.uncounted: dict[str, list] = {}
        self.loss = ""  # what _priced_loss priced, in words
        self.recompute = 0  # bytes the largest checkpointed segment saves again during its backward

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps a subclass's __torch_dispatch__ in torch._disable_dynamo
        # unless this says False. That wrapper keeps torch.compile from tracing into the mode;
        # it imports torch._dynamo on the first op (1.0-1.4 s, more than the whole 7B
        # inspection) and switches the frame evaluator on every op. This mode runs only
        # inside inspect, on meta tensors, never under torch.compile: nothing to keep out.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = meta_output(func, args, kwargs or {})  # PyTorch's kernel, or the same output without it
        name = func.overloadpacket.__name__
        where = self.stack[-1] if self.stack else OUTSIDE
        cost = op_flops(name, args, out)
        if cost is None:
            entry = self.uncounted.setdefault(name, [0, where])
            entry[0] += 1
        else:
            self.flops[where] += cost
            self.macs += op_macs(name, args, out)
        return out


# ---------------------------------------------------------------------- the report


@dataclass(frozen=True)
class LayerCost:
    path: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    flops: int                      # forward FLOPs per sample
    note: str = ""


@dataclass(frozen=True)
class Uncounted:
    op: str
    calls: int
    first_seen_in: str


@dataclass(frozen=True)
class Memory:
    """Bytes for one training step at `batch` samples."""

    batch: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_per_sample: float
    activations_fixed: float
    note: str = ""                  # how the activations were found, where not measured directly
    priced_for: str = "cpu"         # the device whose kernels and autocast rules were priced
    attention: str = ""             # the attention kernel priced in training, e.g. "math (dropout 0.1 on cpu)"
    loss: str = ""                  # the loss whose saved tensors are included, e.g. "cross-entropy over 10"
    left_out: str = LEFT_OUT        # what the figure does not hold, in words
    accumulate: int = 1             # micro-batches per step: activations are those of batch / accumulate
    checkpointed: int = 0           # activation-checkpointed segments (repeat copies, blocks, residuals)
    recompute: int = 0              # what the largest segment saves again while its backward runs

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.recompute

    def at_batch(self, batch: int) -> int:
        """The step's bytes at `batch`: measured at the batch inspected, else read off the line."""
        if batch == self.batch:
            return self.total
        act = self.activations_fixed + self.activations_per_sample * batch
        again = self.recompute * batch / self.batch  # a segment's saves grow with the batch
        return int(self.weights + self.gradients + self.optimizer + act + again)


@dataclass(frozen=True)
class Inspection:
    name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    dtype: str
    optimizer: str
    layers: tuple[LayerCost, ...]
    params: int
    trainable: int
    flops_per_sample: int           # forward
    uncounted: tuple[Uncounted, ...]
    memory: Memory
    device_memory: int | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    macs_per_sample: int = 0        # multiply-accumulates of matmuls, convolutions, attention
    # Several named inputs: name -> per-sample shape and dtype, in order ({} for one unnamed input,
    # whose shape is input_shape).
    inputs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def frozen(self) -> int:
        return self.params - self.trainable

    @property
    def fits(self) -> bool | None:
        return None if self.device_memory is None else self.memory.total <= self.device_memory

    @property
    def max_batch(self) -> int | None:
        """Largest batch whose training step fits in `device_memory` (0 if none does)."""
        if self.device_memory is None:
            return None
        m = self.memory
        room = self.device_memory - (m.weights + m.gradients + m.optimizer + m.activations_fixed)
        per_sample = m.activations_per_sample + m.recompute / (m.batch // m.accumulate)
        if room <= 0 or per_sample <= 0:
            return 0 if room <= 0 else None
        return max(0, int(room // per_sample)) * m.accumulate

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vars"] = dict(self.vars)
        d["inputs"] = {n: dict(v) for n, v in self.inputs.items()}
        d.update(frozen=self.frozen,
                 training_flops_per_sample_approx=3 * self.flops_per_sample,
                 fits=self.fits, max_batch=self.max_batch)
        d["memory"]["total"] = self.memory.total
        return d


# ------------------------------------------------------------------------ measuring


def _unique_params(module: nn.Module, seen: set[int]) -> int:
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


# Leaves of one kind, arguments and input are priced once per inspect (see _forward_cost).
_CACHE_LEAVES = True
# Recurrent leaves cost the same at every step: priced on a few steps, extended to all.
_RECURRENT = ("rnn", "lstm", "gru")


def _dense_strides(shape: tuple[int, ...], order: list[int]) -> tuple[int, ...]:
    """Strides of a dense tensor of `shape` whose dims lie in memory in `order` (outermost first)."""
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    return tuple(strides)


@dataclass
class _LeafCost:
    """What one leaf's forward cost, for the next leaf of the same kind, arguments and input."""

    flops: int
    macs: int
    uncounted: dict[str, int]
    saves_input: bool               # its input's storage is saved for backward
    saves_output: bool              # its output's storage is saved for backward
    internal_bytes: int             # storages it made and saved, its output's aside
    out_view_of_input: bool
    out_meta: tuple                 # shape, stride, storage offset, storage values, dtype, requires_grad


def _leaf_key(leaf: Any, module: nn.Module) -> tuple | None:
    """What a leaf's cost depends on besides its input; None where a leaf reads more than
    its input (the encoder's memory, a tied weight), so it is always run."""
    if isinstance(module, MemoryUser) or any(isinstance(m, MemoryUser) for m in module.modules()):
        return None
    if leaf.kind not in LAYERS or LAYERS.get(leaf.kind).wants_ctx:
        return None
    try:
        args = repr(sorted((k, thaw(v)) for k, v in leaf.args.items()))
    except Exception:  # noqa: BLE001 - an argument without a stable repr: never cached
        return None
    return (leaf.kind, args, type(module),
            tuple((p.dtype, p.requires_grad, tuple(p.shape)) for p in module.parameters()),
            tuple((b.dtype, tuple(b.shape)) for b in module.buffers()))


def _priced_loss(net: Network, y: Any) -> tuple[torch.Tensor | None, str]:
    """The loss a training step adds to the graph, as the trainer computes it (on fp32 logits):
    cross-entropy over the last dim where it has several entries (classes, or a vocabulary at
    every position), else mean squared error. A seq2seq network's is the cross-entropy over
    the vocabulary at each target position (padding ignored, which saves the same tensors).
    Other kinds (VAE, GAN) build their loss from several outputs: not priced, and said so."""
    seq2seq = net.kind == "seq2seq" and isinstance(y, torch.Tensor) and y.dim() == 3 and y.shape[-1] > 1
    if (net.kind != "plain" and not seq2seq) or not isinstance(y, torch.Tensor) or not y.is_floating_point():
        return None, f"not priced for a {net.kind} network"
    out = y.float()
    if out.shape[-1] > 1:
        target = torch.zeros(out.shape[:-1].numel(), dtype=torch.long, device=out.device)
        where = "" if out.dim() == 2 else f" at each of {out.shape[1:-1].numel():,} positions"
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target), f"cross-entropy over {out.shape[-1]:,}{where}"
    return F.mse_loss(out, torch.zeros_like(out)), "mean squared error"


def _forward_cost(net: Network, batch: int, dtype: torch.dtype, train: bool = True,
                  cache: dict | None = None, device: str = "cpu") -> tuple[_CostMode, int]:
    """One meta forward; returns the op costs and the bytes autograd saved for backward.

    FLOPs are taken in eval mode (inference: dropout off, batch norm on running statistics),
    the memory saved for backward in training mode.

    `cache` makes a large spec cost time in proportion to its distinct leaves: a leaf of the
    same kind, arguments and input type as one already run is not run again; its FLOPs and
    saved bytes are those of the first, and its output an empty tensor of the same layout.
    A recurrent leaf (rnn, lstm, gru), which PyTorch's meta device runs one step at a time,
    is run on 2, 3 and 4 steps; where the three costs lie on a line (they do: every step
    costs the same), the line gives the cost at the real length; else it runs in full.
    """
    leaf_modules = dict(net.named_modules())
    mode = _CostMode()
    handles = []
    patched = []
    exclude = {t.untyped_storage()._cdata for t in [*net.parameters(), *net.buffers()]}
    # What autograd saves, held by the graph node that saved it: counted once the loss exists,
    # where it is still alive (_held.py says why not when packed).
    log = SavedLog(exclude)
    recording: list[SavedLog] = []  # the saves of the leaf running now (and of the leaves around it)
    anchor: list[torch.Tensor] = []  # a trainable empty tensor that gives replayed outputs a grad
    # Inside a checkpointed segment (torch.utils.checkpoint, non-reentrant) nothing is kept for
    # backward: torch's own saved-tensor hooks take the segment's saves (the innermost hooks
    # win), and only the segment's input is saved, by torch, under the outer hooks. What the
    # segment would have saved goes to `segment` instead; it is saved again, one segment at a
    # time, while that segment's backward runs.
    segment: list[list] = []  # [the open segment's saves (a SavedLog), the holder of its input]
    depth = [0]

    def saving() -> SavedLog:
        return segment[0][0] if segment else log

    def pack(t: torch.Tensor) -> Held:
        held = saving().pack(t)
        if recording:
            recording[-1].add(held)
        return held

    def leaf_forward(module: nn.Module, path: str, static: tuple | None) -> Any:
        """The leaf's forward, charging its ops to `path` (and, with a cache, priced once)."""
        real = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            mode.stack.append(path)
            try:
                return priced(*args, **kwargs)
            finally:
                mode.stack.pop()

        def priced(*args: Any, **kwargs: Any) -> Any:
            x = args[0] if len(args) == 1 and not kwargs else None
            if static is None or not isinstance(x, torch.Tensor):
                return real(*args, **kwargs)
            key = (static, tuple(x.shape), x.stride(), x.dtype, x.requires_grad, module.training)
            hit = cache.get(key)
            if hit is None and static[0] in _RECURRENT and x.dim() == 3 and x.shape[1] > 8:
                hit = cache[key] = extrapolate(x, real, path) or record_only(x, real, path)
            if hit is None:
                return record(key, x, real, path)
            return replay(hit, x, path)

        return forward

    def record(key: tuple, x: torch.Tensor, real: Any, path: str) -> Any:
        flops0, macs0, unc0 = mode.flops[path], mode.macs, {k: v[0] for k, v in mode.uncounted.items()}
        recording.append(SavedLog(exclude))
        try:
            y = real(x)
        finally:
            stored = recording.pop()
        if not isinstance(y, torch.Tensor) or y.device.type != "meta":
            return y
        cache[key] = leaf_cost(x, y, stored, flops0, macs0, unc0, path)
        return y

    def leaf_cost(x: torch.Tensor, y: torch.Tensor, stored: SavedLog, flops0: int, macs0: int,
                  unc0: dict[str, int], path: str) -> _LeafCost:
        """What the leaf that just turned x into y cost, and what its graph holds now it returned."""
        held, _ = stored.held()
        xin, yout = x.untyped_storage()._cdata, y.untyped_storage()._cdata
        return _LeafCost(
            flops=mode.flops[path] - flops0, macs=mode.macs - macs0,
            uncounted={k: v[0] - unc0.get(k, 0) for k, v in mode.uncounted.items() if v[0] > unc0.get(k, 0)},
            saves_input=xin in held, saves_output=yout in held,
            internal_bytes=sum(n for c, n in held.items() if c not in (xin, yout)),
            out_view_of_input=xin == yout,
            out_meta=(tuple(y.shape), y.stride(), y.storage_offset(), y.untyped_storage().nbytes() // y.element_size(),
                      y.dtype, y.requires_grad))

    def measure(x: torch.Tensor, real: Any, path: str) -> tuple[_LeafCost, torch.Tensor] | None:
        """Run the leaf on `x` and return its cost; leave no trace in this pass's figures."""
        flops0, macs0, unc0 = mode.flops[path], mode.macs, {k: v[0] for k, v in mode.uncounted.items()}
        recording.append(SavedLog(exclude))
        try:
            y = real(x)
        finally:
            stored = recording.pop()
        cost = leaf_cost(x, y, stored, flops0, macs0, unc0, path) if isinstance(y, torch.Tensor) else None
        mode.flops[path], mode.macs = flops0, macs0
        for k in list(mode.uncounted):
            if k in unc0:
                mode.uncounted[k][0] = unc0[k]
            else:
                del mode.uncounted[k]
        # What it saved dies with its graph once the caller drops y: nothing the forward keeps
        # links to this run's output (a graph points back to its inputs, never forward).
        return (cost, y) if cost is not None else None

    def record_only(x: torch.Tensor, real: Any, path: str) -> _LeafCost | None:
        got = measure(x, real, path)
        return got[0] if got else None

    def extrapolate(x: torch.Tensor, real: Any, path: str) -> _LeafCost | None:
        """A recurrent leaf costs the same at every step: run it on 2, 3 and 4 steps and
        extend the line to the real length, where the three points lie on one line (else
        None, and it runs at full length)."""
        b, t, f = x.shape
        costs = []
        for steps in (2, 3, 4):
            with torch._C.DisableTorchFunction():
                part = torch.empty((b, steps, f), dtype=x.dtype, device="meta", requires_grad=x.requires_grad)
            got = measure(part, real, path)
            if got is None:
                return None
            costs.append(got[0])
        c2, c3, c4 = costs
        if (c2.saves_input, c2.saves_output, c2.out_view_of_input, c2.uncounted.keys()) != \
                (c4.saves_input, c4.saves_output, c4.out_view_of_input, c4.uncounted.keys()) or c4.out_view_of_input:
            return None

        def line(a: int, b_: int, c: int) -> int | None:
            return a + (b_ - a) * (t - 2) if b_ - a == c - b_ else None

        flops, macs = line(c2.flops, c3.flops, c4.flops), line(c2.macs, c3.macs, c4.macs)
        internal = line(c2.internal_bytes, c3.internal_bytes, c4.internal_bytes)
        calls = {op: line(c2.uncounted[op], c3.uncounted.get(op, -1), c4.uncounted[op]) for op in c4.uncounted}
        shapes = [c.out_meta[0] for c in costs]
        if None in (flops, macs, internal, *calls.values()) or any(len(sh) != len(shapes[0]) for sh in shapes):
            return None
        shape = []
        for d2, d3, d4 in zip(*shapes, strict=True):
            if (d2, d3, d4) == (2, 3, 4):
                shape.append(t)
            elif d2 == d3 == d4:
                shape.append(d2)
            else:
                return None
        # The output is dense in some order of its dims (a bidirectional LSTM's is time-major).
        # Strides of size-1 dims say nothing (PyTorch ignores them): they are kept as they were.
        order = sorted(range(len(shape)), key=lambda d: -c4.out_meta[1][d])

        def same(got: tuple, want: tuple, dims: tuple) -> bool:
            return all(g == w for g, w, n in zip(got, want, dims, strict=True) if n > 1)

        dense = all(same(c.out_meta[1], _dense_strides(c.out_meta[0], order), c.out_meta[0]) and c.out_meta[2] == 0
                    and c.out_meta[3] == math.prod(c.out_meta[0]) for c in costs)
        if not dense:
            return None
        strides = tuple(s_ if n > 1 else old for s_, n, old in
                        zip(_dense_strides(tuple(shape), order), shape, c4.out_meta[1], strict=True))
        return _LeafCost(flops, macs, calls, c4.saves_input, c4.saves_output, internal, False,
                         (tuple(shape), strides, 0, math.prod(shape), c4.out_meta[4], c4.out_meta[5]))

    def replay(hit: _LeafCost, x: torch.Tensor, path: str) -> torch.Tensor:
        mode.flops[path] += hit.flops
        mode.macs += hit.macs
        for op, calls in hit.uncounted.items():
            mode.uncounted.setdefault(op, [0, path])[0] += calls
        shape, stride, offset, elems, out_dtype, grad = hit.out_meta

        def make() -> torch.Tensor:
            if hit.out_view_of_input:
                return x.as_strided(shape, stride, offset)
            return torch.empty(elems, dtype=out_dtype, device="meta").as_strided(shape, stride, offset)

        with torch._C.DisableTorchFunction():  # plain tensors, outside the pricing
            if not grad:  # no graph: the leaf's ops saved nothing a real step keeps
                return make()
            if not anchor:
                anchor.append(torch.empty(0, device="meta", requires_grad=True))
            # Linked to x, holding what the leaf saved: alive as long as the leaf's graph would be.
            return Replayed.apply(x, anchor[0], make, hit.saves_input, hit.saves_output, hit.internal_bytes, saving())

    for leaf in net.layers:
        module = leaf_modules[leaf.module_name]
        if "forward" in module.__dict__:  # patched by someone else: hooks mark where its ops belong
            handles.append(module.register_forward_pre_hook(
                lambda _m, _a, p=leaf.path: mode.stack.append(p)))
            handles.append(module.register_forward_hook(lambda _m, _a, _o: mode.stack.pop() and None))
            continue
        static = None
        if cache is not None:  # what the cost depends on besides the input: found once per inspect
            if ("static", leaf.module_name) not in cache:
                cache["static", leaf.module_name] = _leaf_key(leaf, module)
            static = cache["static", leaf.module_name]
        module.__dict__["forward"] = leaf_forward(module, leaf.path, static)
        patched.append(module)

    for module in net.modules():  # an auto projection is no spec leaf, but has a row of its own
        if isinstance(module, Residual) and module.auto_projection is not None:
            path = module.auto_projection[0]
            handles.append(module.proj.register_forward_pre_hook(lambda _m, _a, p=path: mode.stack.append(p)))
            handles.append(module.proj.register_forward_hook(lambda _m, _a, _o: mode.stack.pop() and None))

    routes = []  # a merge of several reads (from: [a, b], merge: add) is priced under its node's row
    for module in net.modules():
        route = module.__dict__.get(ROUTE)
        if route is not None and len(route.reads) > 1:
            def priced_read(read=route.read, path=route.path) -> torch.Tensor:
                mode.stack.append(path)
                try:
                    return read()
                finally:
                    mode.stack.pop()

            route.__dict__["read"] = priced_read
            routes.append(route)

    def enter_segment(_m: nn.Module, args: tuple) -> None:
        if not segment:
            inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
            # torch keeps the segment's input, on the node of its output (see leave_segment)
            kept = log.add(Held(storages=(inp.untyped_storage(),))) if inp is not None else None
            segment.append([SavedLog(exclude), kept])
        depth[0] += 1

    def leave_segment(_m: nn.Module, _a: tuple, out: Any) -> None:
        depth[0] -= 1
        if depth[0] == 0:
            saves, kept = segment.pop()
            inner, replayed = saves.held()
            outer, _ = log.held()
            mode.recompute = max(mode.recompute, sum(n for c, n in inner.items() if c not in outer) + replayed)
            if kept is not None and isinstance(out, torch.Tensor) and out.grad_fn is not None:
                out.grad_fn.metadata["archlab_checkpoint_input"] = kept

    if train:
        for module in net.modules():
            if is_checkpointed(module):
                handles.append(module.register_forward_pre_hook(enter_segment))
                handles.append(module.register_forward_hook(leave_segment))

    x = net.example_input(batch, device="meta")  # data arrives in fp32; autocast casts it
    net.train(train)
    autocast = MetaAutocast(dtype, device) if dtype != torch.float32 else contextlib.nullcontext()
    priced = PRICED_DEVICE.set(device)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack), mode, autocast:
            y = net(x)
            loss = None
            if train:  # the loss and its fp32 logits belong to the step (206 MB a sample for GPT-2)
                loss, mode.loss = _priced_loss(net, y)
        activation_bytes = log.held_bytes()  # what the graph holds now the loss exists
        del y, loss
    finally:
        PRICED_DEVICE.reset(priced)
        for h in handles:
            h.remove()
        for module in patched:
            del module.__dict__["forward"]
        for route in routes:
            del route.__dict__["read"]
    return mode, activation_bytes


def inspect(spec: Spec | str | Mapping[str, Any], *, input_shape: tuple[int, ...] | None = None,
            batch: int = 1, dtype: str = "fp32", optimizer: str = "adamw",
            device_memory: str | int | None = None, vars: Mapping[str, Any] | None = None,
            device: str | None = None, accumulate: int = 1,
            activation_checkpointing: bool = False) -> Inspection:
    """Parameters, forward FLOPs and training memory of a spec, on the meta device.

    `device` ("cpu" or "cuda"; default: cuda where one is present, else cpu) is the device
    whose training step is priced: its attention kernel and, under bf16/fp16, its autocast
    rules decide what autograd saves.

    With `accumulate` K (gradient accumulation, `archlab train --accumulate K`), a step of
    `batch` samples runs as K micro-batches of batch / K: the activations saved for backward
    are those of one micro-batch.

    With `activation_checkpointing` every repeat copy is a checkpointed segment (`archlab
    train --activation-checkpointing`); segments the spec marks (`checkpoint: true`) always
    are. A segment keeps only its input for backward, and saves its activations again, one
    segment at a time, during backward: `memory.recompute`, the largest, is in the total.

    >>> r = inspect({"input": {"shape": [4]}, "model": [{"linear": 8}, "relu", {"linear": 2}]})
    >>> r.params, r.flops_per_sample
    (58, 114)
    """
    if dtype not in DTYPES:
        raise SpecError(f"--dtype: expected one of {', '.join(DTYPES)}. Received: {dtype!r}")
    if optimizer not in OPTIMIZER_STATES:
        raise SpecError(f"--optimizer: expected one of {', '.join(OPTIMIZER_STATES)}. Received: {optimizer!r}")
    if batch < 1:
        raise SpecError(f"--batch: expected a positive integer. Received: {batch}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise SpecError(f"--device: expected one of {', '.join(DEVICES)}. Received: {device!r}")
    if accumulate < 1 or batch % accumulate:
        raise SpecError(f"--accumulate: expected a number of micro-batches >= 1 that divides --batch {batch}. "
                        f"Received: {accumulate}")
    micro = batch // accumulate
    spec = load_spec(spec)
    if vars:
        spec = spec.with_vars(vars)
    net = build(spec, input_shape=input_shape, device="meta")
    if activation_checkpointing and not checkpoint_repeats(net) and not any(map(is_checkpointed, net.modules())):
        raise SpecError(NOTHING_TO_CHECKPOINT)
    torch_dtype = DTYPES[dtype]

    cache: dict | None = {} if _CACHE_LEAVES else None
    mode1, _ = _forward_cost(net, 1, torch_dtype, train=False, cache=cache, device=device)
    # The line through batches 2 and 3, not 1 and 2: at batch 1 PyTorch often skips a copy
    # (a transpose across a size-1 dim is already contiguous), so batch 1 may save less.
    mode2, act2 = _forward_cost(net, 2, torch_dtype, cache=cache, device=device)
    mode3, act3 = _forward_cost(net, 3, torch_dtype, cache=cache, device=device)
    measured = {2: act2, 3: act3}
    per_sample = measured[3] - measured[2]
    fixed = measured[2] - 2 * per_sample
    memory_note = ""
    recompute = {2: mode2.recompute, 3: mode3.recompute}
    try:
        if micro in measured:
            act_b = measured[micro]
        else:
            mode_b, act_b = _forward_cost(net, micro, torch_dtype, cache=cache, device=device)
            recompute[micro] = mode_b.recompute
    except ValueError as e:  # batch norm over one value per channel, in training mode
        if "value per channel" not in str(e):
            raise
        act_b = int(fixed + per_sample * micro)
        recompute[micro] = int(mode2.recompute * micro / 2)
        memory_note = (f"activations at batch {micro} read off the line through batches 2 and 3: batch norm "
                f"cannot train on one value per channel (nor can this model at batch {micro})")

    seen: set[int] = set()
    leaf_rows = {}
    for leaf in net.layers:
        module = net.get_submodule(leaf.module_name)
        n = _unique_params(module, seen)
        note = f"tied to {module.tied_to}" if hasattr(module, "tied_to") else ""
        if any(not p.requires_grad for p in module.parameters()):
            note = (note + "; " if note else "") + "frozen"
        leaf_rows[leaf.path] = LayerCost(leaf.path, leaf.kind, leaf.output.shape, n, mode1.flops[leaf.path], note)
    rows = []
    for node in _rows_in_order(net):  # leaves, and the nodes that only read (from:) or reuse (share:)
        if node.kind == "leaf":
            rows.append(leaf_rows.pop(node.path))
        else:
            rows.append(_route_row(node, mode1.flops.get(node.path, 0)))
    rows += leaf_rows.values()  # none: every leaf is in a section's tree
    for module in net.modules():  # each auto projection after the last row of its residual's branch
        if isinstance(module, Residual) and module.auto_projection is not None:
            path, what = module.auto_projection
            where = path.removesuffix(".projection")
            at = max((i for i, row in enumerate(rows) if row.path.startswith((where + "[", where + "."))),
                     default=len(rows) - 1)
            # Its output has the shape of the branch's (that is why it exists).
            rows.insert(at + 1, LayerCost(path, "projection", rows[at].output_shape,
                                          _unique_params(module.proj, seen), mode1.flops.get(path, 0), what))
    extra_params = _unique_params(net, seen)  # parameters outside every layer (none today)
    if mode1.flops.get(OUTSIDE) or extra_params:
        rows.append(LayerCost(OUTSIDE, "", net.output_shape, extra_params, mode1.flops.get(OUTSIDE, 0),
                              "skip adds, concats"))

    params = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    memory = Memory(batch=batch, weights=4 * params + sum(b.numel() * 4 for b in net.buffers()),
                    gradients=4 * trainable, optimizer=4 * trainable * OPTIMIZER_STATES[optimizer],
                    activations=act_b, activations_per_sample=float(per_sample),
                    activations_fixed=float(fixed), note=memory_note, priced_for=device,
                    attention=_attention_priced(net, device, torch_dtype), loss=mode2.loss,
                    left_out=LEFT_OUT + ("; " + LEFT_OUT_RECURRENT if any(isinstance(m, nn.RNNBase) for m in net.modules())
                                         else ""),
                    accumulate=accumulate,
                    checkpointed=sum(is_checkpointed(m) for m in net.modules()),
                    recompute=recompute.get(micro, 0))
    uncounted = tuple(Uncounted(op, c, w) for op, (c, w) in sorted(mode1.uncounted.items()))
    return Inspection(
        name=spec.name, input_shape=net.input_shape, output_shape=net.output_shape, dtype=dtype,
        optimizer=optimizer, layers=tuple(rows), params=params, trainable=trainable,
        flops_per_sample=sum(mode1.flops.values()), macs_per_sample=mode1.macs, uncounted=uncounted, memory=memory,
        device_memory=None if device_memory is None else parse_size(device_memory, "--device-memory",
                                                                       require_unit=True),
        vars=thaw(net.spec.resolved_vars()),  # plain data: to_dict() must deep-copy it
        inputs={n: {"shape": list(t.shape), "dtype": t.dtype} for n, t in net.input_types.items()}
        if net.input_names else {},
    )


def _rows_in_order(net: nn.Module) -> list[Node]:
    """The leaf and route nodes of every section, in forward order."""
    out: list[Node] = []

    def walk(node: Node) -> None:
        if node.kind in ("leaf", "route"):
            out.append(node)
            return
        for child in node.children:
            walk(child)
        if isinstance(node.projection, Node):
            walk(node.projection)

    for section in net.sections:
        walk(section.tree)
    return out


def _route_row(node: Node, flops: int) -> LayerCost:
    """A row for a node of only `from:` (what it reads, merged) or `share:` (a tower again)."""
    if node.name.startswith("share "):
        target = node.name.removeprefix("share ")
        return LayerCost(node.path, "share", node.output.shape, 0, flops,
                         f"{target}'s layers again, same weights; their rows count both uses")
    what = " + ".join(node.reads) if node.reads else "the previous output"
    merge = f" ({node.name})" if node.name else ""
    named = f", named {node.keeps}" if node.keeps else ""
    return LayerCost(node.path, "from", node.output.shape, 0, flops, f"reads {what}{merge}{named}")


def _attention_priced(net: nn.Module, device: str, dtype: torch.dtype) -> str:
    """Which attention kernels the training step was priced with, in words ("" without any):
    self-attention's, then cross-attention's (as its layers ran them on the meta device)."""
    kinds, cross = set(), set()
    for m in net.modules():
        if isinstance(m, SelfAttention):
            kernel = attention_kernel(device, dtype, m.dropout, m.head_dim)
            why = f"dropout {m.dropout:g}" if m.dropout else "no dropout"
            kinds.add(f"{kernel} ({why}, {dtype_name(dtype)} on {device})")
        elif isinstance(m, CrossAttention) and m.priced is not None:
            kernel, masked = m.priced
            why = "padding mask" if masked else "no mask"
            cross.add(f"cross-attention {kernel} ({why}, {dtype_name(dtype)} on {device})")
    return "; ".join([*sorted(kinds), *sorted(cross)])


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def count_params(module: nn.Module) -> int:
    """Unique parameters of a module (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters())


def group_by_kind(report: Inspection) -> dict[str, dict[str, int]]:
    """Params and FLOPs summed per layer kind, e.g. for a compact summary."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"params": 0, "flops": 0, "count": 0})
    for row in report.layers:
        g = out[row.kind or OUTSIDE]
        g["params"] += row.params
        g["flops"] += row.flops
        g["count"] += 1
    return dict(out)
