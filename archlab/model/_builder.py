"""Spec -> `nn.Module`, with shape inference at every node.

The builder walks the spec's `model` tree once. Each node receives the `TensorType` its
input will have, checks it, builds its module and returns the output type, so a wrong
shape is reported at the node that cannot take it, with the node that produced it:

    model[4].residual[1].conv2d: expects (C,H,W) input, got (128,) (flat) produced by model[3].flatten

Node forms (after `$var` / `${expr}` substitution):
    [a, b, c]                              serial
    relu | {linear: 10} | {conv2d: {...}}  a leaf layer from the registry
    name | {name: {var: value}}            a named block from `blocks:` (with var overrides)
    {parallel: [[...], [...]], merge: concat|add|mean}
    {residual: [...], projection: auto|none|[...]}   (projection beside the branch, or
    {residual: {body: [...], projection: ...}}        both under residual, the branch as body)
    {repeat: N, block: ..., var: i}        N copies; the copy index is var `i`

Several inputs and named nodes (a `model:` spec with `inputs:`): any node may say what it
reads instead of the previous node's output, `from: NAME` (an input, or an earlier node
given `name: NAME`) or `from: [a, b]` with `merge: concat|add|mean` (concat as `parallel`
does: along channels, or along features of a sequence); a node of only `from:` (and `merge:`)
passes what it read on. An attention leaf may attend to a named sequence with `memory: NAME`
(`cross_attention`, `cross_decoder_block`). A node of `share: NAME` (and a `from:`) applies
the layers of the node named NAME again, with the same weights: a Siamese network's second
tower. Reads are resolved in forward order, so a name is seen by every node after the one
that gives it (in a repeat, the latest copy's).

    inputs: {image: {shape: [1, 8, 8]}, question: {shape: [6], dtype: long, vocab: 20}}
    model:
      - {flatten, from: image}          # written as {flatten: null, from: image} in flow style
      - {linear: 64, name: seen}
      - {embedding: {vocab: 20, dim: 16}, from: question}
      - global_avgpool ...
      - {from: [seen, asked], merge: concat}

At run time the network puts its inputs in a `Scope` for the forward; a node that reads or
names carries a `Route` (a plain attribute, like the checkpoint mark, so state-dict keys do not
change) that `call` applies around the module.

Activation checkpointing (`checkpoint: true`) is an option of a repeat (every copy is a
checkpointed segment), of a residual (the whole residual), and of a block reference
(`{name: {checkpoint: true, var: value}}`). A checkpointed module keeps only its input for
backward and runs its forward again during backward, through
`torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`; `checkpoint_repeats(net)`
marks every repeat copy (`archlab train --activation-checkpointing`). State-dict keys do
not change: the mark is a plain attribute the parent reads when it calls the module.

A residual adds its input to its branch's output. Where the branch changes the shape, the
input goes through a projection first: `auto` (the default) makes a 1x1 convolution (with
batch norm if the branch has one) or a linear layer; `none` refuses the shape change; a
list of layers is an explicit projection. In YAML:

    - residual: [conv2d: {out: 64, kernel: 3, padding: same}, batchnorm, relu]
      projection: auto
    - residual:
        body: [linear: 64, relu]
        projection: [linear: 64]

Module names follow spec paths: `model[3].residual[0].conv2d` is `model.3.residual.0`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ..core import FrozenDict, ShapeError, SpecError, thaw
from ..layers import LAYERS, BuildContext, Inputs, MemoryUser, TensorType
from ..spec import (
    MAX_DEPTH,
    MAX_LAYERS,
    MAX_TENSOR_VALUES,
    Spec,
    substitute,
)
from ._network import BuiltNetwork, LeafInfo, Node, Section, is_meta

COMPOSITES = ("parallel", "residual", "repeat")
# Each level costs a few Python frames; this stays well inside the default recursion limit
# even when build is called from deep inside another program (a test runner, a search).
_MAX_DEPTH = MAX_DEPTH
# Far beyond any real model, but `repeat: 1e9` (a typo, or a search gone wrong) fails at once
# instead of building modules until memory runs out.
_MAX_REPEAT = 10_000
_MAX_LAYERS = MAX_LAYERS
MERGES = ("concat", "add", "mean")
ROUTE_KEYS = ("from", "merge", "name", "share", "memory")  # keys beside a node's layer (merge: not on a parallel)
# What the first node of a spec with several inputs receives: nothing, until it reads one with from:.
_NO_INPUT = TensorType((), "none", "none", "no input")


# ----------------------------------------------------------------- the weight guard

_FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
                        torch.empty_strided})


def _requested_size(args: tuple, kwargs: Mapping[str, Any]) -> tuple | None:
    size = kwargs.get("size", args[0] if args else None)
    if isinstance(size, int) and not isinstance(size, bool):  # torch.empty(3, 4)
        size = tuple(a for a in args if isinstance(a, int) and not isinstance(a, bool))
    if isinstance(size, list | tuple | torch.Size) and all(isinstance(d, int) for d in size):
        return tuple(size)
    return None


# In-place initialisers: on the meta device there are no values to initialise, and PyTorch
# runs each through Python reference kernels (about 2 ms per weight), so they are skipped.
_INITIALISERS = frozenset({"uniform_", "normal_", "zero_", "fill_", "copy_", "bernoulli_", "exponential_",
                           "random_", "clamp_", "mul_", "add_", "erfinv_", "trunc_normal_"})


class _WeightGuard(TorchFunctionMode):
    """Refuses, before PyTorch allocates it (or fails to describe its size), any tensor a
    layer creates with more than MAX_TENSOR_VALUES values: `linear: 100000000000` is a
    SpecError on every device, meta included, instead of an allocator's traceback.
    On the meta device it also skips weight initialisation (there are no values)."""

    def __init__(self, meta: bool = False):
        super().__init__()
        self.meta = meta

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if self.meta and (getattr(func, "__module__", "") == "torch.nn.init"
                          or getattr(func, "__name__", "") in _INITIALISERS):
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.device.type == "meta":
                return target
        if func in _FACTORIES:
            size = _requested_size(args, kwargs)
            if size is not None and math.prod(size) > MAX_TENSOR_VALUES:
                raise SpecError(f"its weights would need a tensor of shape {size}, {math.prod(size):.3g} "
                                f"values, more than the 2**36 one tensor may hold; reduce its sizes")
        return func(*args, **kwargs)


# ----------------------------------------------------------------- container modules


CHECKPOINT = "archlab_checkpoint"  # the attribute that marks a module as a checkpointed segment


def is_checkpointed(module: nn.Module) -> bool:
    return bool(module.__dict__.get(CHECKPOINT))  # not getattr: nn.Module's miss path is slow


class _KeepNormStatistics:
    """The context of a segment's recomputation in backward. Recomputing runs the forward again
    in training mode, so batch norm would update its running statistics (and its batch count)
    a second time each step; they are put back as they were after the forward."""

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.saved: list[list[torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [[b.clone() for b in m.buffers(recurse=False)] for m in self.norms]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for m, saved in zip(self.norms, self.saved, strict=True):
                for b, old in zip(m.buffers(recurse=False), saved, strict=True):
                    b.copy_(old)


def _checkpointed(fn: Any, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _torch_checkpoint(fn, x, use_reentrant=False,
                             context_fn=lambda: (contextlib.nullcontext(), _KeepNormStatistics(module)))


def merge_tensors(outs: list[torch.Tensor], merge: str, dim: int) -> torch.Tensor:
    """Branch outputs or reads joined: concat along batch dim `dim`, or summed (add) or averaged (mean)."""
    if merge == "concat":
        return torch.cat(outs, dim=dim)
    total = outs[0]
    for y in outs[1:]:
        total = total + y
    return total / len(outs) if merge == "mean" else total


class Scope:
    """The named tensors of one forward: the network's inputs, then each named node's output.
    `active` is true while the network's forward runs (a checkpoint's recomputation in backward
    runs after it, from a copy taken when its segment ran).

    Both are per thread, so one network serves several threads at once (each forward sees its
    own tensors); a copy or a pickle of a network gets an empty scope of its own."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def values(self) -> dict[str, torch.Tensor]:
        return self._local.__dict__.setdefault("values", {})

    @values.setter
    def values(self, values: dict[str, torch.Tensor]) -> None:
        self._local.values = values

    @property
    def active(self) -> bool:
        return self._local.__dict__.get("active", False)

    @active.setter
    def active(self, active: bool) -> None:
        self._local.active = active

    def __reduce__(self) -> tuple:
        return (Scope, ())  # thread-local state is never copied: a copy starts empty

    def read(self, name: str) -> torch.Tensor:
        try:
            return self.values[name]
        except KeyError:
            raise RuntimeError(f"{name!r} has not been computed in this forward; the network's inputs are read "
                               f"inside its own forward (call the whole network)") from None


ROUTE = "archlab_route"  # the attribute that gives a module its reads and its name


@dataclass
class Route:
    """What `call` does around one module: read named tensors instead of its input (merged),
    give its memory-attending layers a named tensor as memory, keep its output under a name."""

    scope: Scope
    reads: tuple[str, ...] = ()
    merge: str = ""
    dim: int = 1  # the concat dim of a batch (1 + the per-sample dim)
    keeps: str = ""
    memory: str = ""
    users: tuple[nn.Module, ...] = ()  # the MemoryUsers that `memory` feeds
    path: str = ""  # the node's spec path (the inspector prices a merge of reads under it)

    def read(self) -> torch.Tensor:
        outs = [self.scope.read(name) for name in self.reads]
        return outs[0] if len(outs) == 1 else merge_tensors(outs, self.merge, self.dim)

    def run(self, module: nn.Module, x: Any) -> Any:
        if self.reads:
            x = self.read()
        if self.memory:
            memory = self.scope.read(self.memory)
            for m in self.users:
                m.memory, m.memory_mask = memory, None
        try:
            y = _call(module, x)
        finally:
            for m in self.users:
                m.memory = m.memory_mask = None
        if self.keeps:
            self.scope.values[self.keeps] = y
        return y


def call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x), with its route (reads, memory, name) where it has one, and through torch's
    (non-reentrant) activation checkpoint where the module is marked and a graph is being
    recorded. On the meta device (the inspector) it runs plainly: the inspector prices what
    checkpoint keeps itself."""
    route = module.__dict__.get(ROUTE)
    if route is not None:
        return route.run(module, x)
    return _call(module, x)


def _call(module: nn.Module, x: Any) -> Any:
    if module.__dict__.get(CHECKPOINT) and torch.is_grad_enabled() and module.training and (
            x is None or x.device.type != "meta"):
        users = [m for m in module.modules() if isinstance(m, MemoryUser)]
        scopes = {id(r.scope): r.scope for m in module.modules() if (r := m.__dict__.get(ROUTE)) is not None}
        if not users and not scopes:
            return _checkpointed(module, module, x)
        # A decoder block reads the encoder's memory from an attribute its network sets for the
        # forward and clears after it, and a node inside may read named tensors of the forward:
        # the recomputation in backward, after the forward, gets both back as they were.
        memories = [(m.memory, m.memory_mask) for m in users]
        taken = [(scope, dict(scope.values)) for scope in scopes.values()]

        def run(inp: torch.Tensor) -> torch.Tensor:
            before = [(m.memory, m.memory_mask) for m in users]
            for m, (memory, mask) in zip(users, memories, strict=True):
                m.memory, m.memory_mask = memory, mask
            again = [scope for scope, _ in taken if not scope.active]
            for scope, values in taken:
                if not scope.active:
                    scope.values = dict(values)
            try:
                return module(inp)
            finally:
                for m, (memory, mask) in zip(users, before, strict=True):
                    m.memory, m.memory_mask = memory, mask
                for scope in again:
                    scope.values = {}

        return _checkpointed(run, module, x)
    return module(x)


NOTHING_TO_CHECKPOINT = ("--activation-checkpointing: the spec has nothing to checkpoint. Received: a network "
                         "without repeat: copies or checkpoint: true parts; put the layers to recompute in a "
                         "repeat:, mark a residual or block use checkpoint: true, or drop the flag")


def checkpoint_repeats(net: nn.Module) -> int:
    """Mark every copy of every repeat as a checkpointed segment; returns how many.

    >>> import archlab
    >>> checkpoint_repeats(archlab.build("zoo:gpt-mini"))
    4
    """
    n = 0
    for module in net.modules():
        if isinstance(module, Repeat):
            for copy in module.repeat:
                setattr(copy, CHECKPOINT, True)
                n += 1
    return n


def _checkpoint_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"{where}.checkpoint: expected true or false. Received: {value!r}; write "
                        f"checkpoint: true to recompute this part's forward during backward, or leave it out")
    return value


class Serial(nn.Sequential):
    """Layers in order. Children are named "0", "1", ... after their spec index."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._modules.values():
            d = module.__dict__
            x = call(module, x) if CHECKPOINT in d or ROUTE in d else module(x)  # inline: the hot path
        return x


class Parallel(nn.Module):
    """Branches on the same input, merged by concat (along `dim`), add or mean."""

    def __init__(self, branches: list[nn.Module], merge: str, dim: int):
        super().__init__()
        self.parallel = nn.ModuleList(branches)
        self.merge, self.dim = merge, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merge_tensors([call(branch, x) for branch in self.parallel], self.merge, self.dim)

    def extra_repr(self) -> str:
        return f"merge={self.merge}" + (f", dim={self.dim}" if self.merge == "concat" else "")


class Residual(nn.Module):
    """x + f(x), with `proj(x)` in place of x where f changes the shape.

    `auto_projection` is (spec path, description) when the builder made the projection itself
    (`projection: auto`), so the inspector can give it a row of its own; None otherwise."""

    def __init__(self, body: nn.Module, proj: nn.Module | None,
                 auto_projection: tuple[str, str] | None = None):
        super().__init__()
        self.residual = body
        self.proj = proj
        self.auto_projection = auto_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = call(self.residual, x)  # the branch first: it may name a tensor that a projection reads
        return (x if self.proj is None else call(self.proj, x)) + y


class Repeat(nn.Module):
    """N copies in order, under `repeat.0`, `repeat.1`, ... like their spec paths."""

    def __init__(self, copies: list[nn.Module]):
        super().__init__()
        self.repeat = Serial(*copies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.repeat(x)


def _example(net: nn.Module, t: TensorType, declared: Any, batch: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    shape = (batch, *t.shape)
    if t.dtype == "long":
        if is_meta(device):
            return torch.empty(shape, dtype=torch.long, device=device)
        vocab = getattr(declared, "vocab", None) or min(
            (m.num_embeddings for m in net.modules() if isinstance(m, nn.Embedding)), default=2)
        return torch.randint(0, vocab, shape, device=device)
    return torch.randn(shape, device=device, dtype=dtype) if not is_meta(device) \
        else torch.empty(shape, device=device, dtype=dtype)


class Reuse(nn.Module):
    """Another node's module applied again, with its weights (not a copy): `share: NAME`, the
    second tower of a Siamese network. The module is held as a plain attribute, so its
    parameters belong to (and are saved under) the node that made them, once."""

    def __init__(self, target: nn.Module, shares: str):
        super().__init__()
        self.__dict__["target"] = target
        self.shares = shares

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _call(self.target, x)  # the layers only: the target's own reads and name are its node's

    def extra_repr(self) -> str:
        return f"shares={self.shares}"


class Network(BuiltNetwork, nn.Module):
    """The built model: `model` holds the spec's layers. A plain nn.Module.

    `layers` lists each leaf (spec path, layer kind, module name, input and output type)
    for the inspector; `spec` is the concrete spec it was built from; `tree` the node tree
    the builder built (see BuiltNetwork for the protocol). With several named inputs it is
    called with an `Inputs` (or a dict, or keywords) of them: `net(image=x, question=q)`.
    """

    kind = "plain"

    def __init__(self, model: nn.Module, spec: Spec, input_type: TensorType, output_type: TensorType,
                 layers: list[LeafInfo], tree: Node | None = None, section: str = "model",
                 named_inputs: Mapping[str, TensorType] | None = None, scope: Scope | None = None):
        super().__init__()
        self.model = model
        # Plain attributes, not submodules: kept out of state_dict and parameters().
        self.spec = spec
        self.input_type = input_type
        self.output_type = output_type
        self.layers = layers
        self.tree = tree or Node("serial", section, input_type, output_type)
        self.sections = (Section(section, input_type, output_type, self.tree),)
        self._named = dict(named_inputs or {})
        self.input_names = tuple(self._named)
        self.scope = scope or Scope()

    @property
    def input_types(self) -> dict[str, TensorType]:
        return dict(self._named) if self._named else {"input": self.input_type}

    reads_input_by_name = False  # whether a node routes (from:, name:, memory:): then the forward fills the scope

    def forward(self, x: Any = None, **named: torch.Tensor) -> torch.Tensor:
        if not self.input_names:
            if not self.reads_input_by_name:
                return self.model(x)
            self.scope.values, self.scope.active = {"input": x}, True
            try:
                return self.model(x)
            finally:
                self.scope.values, self.scope.active = {}, False
        scope = self.scope
        scope.values = self._inputs_of(x, named)
        scope.active = True
        try:  # one named input is also the first node's input; several are read with from:
            return self.model(scope.values[self.input_names[0]] if len(self.input_names) == 1 else None)
        finally:
            scope.values = {}
            scope.active = False

    def _inputs_of(self, x: Any, named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(x, Mapping):
            named = {**x, **named}
        elif x is not None:
            if len(self.input_names) > 1:
                raise ValueError(f"this network reads {len(self.input_names)} inputs ({', '.join(self.input_names)}); "
                                 f"call it with all of them: net(Inputs({', '.join(f'{n}=...' for n in self.input_names)}))")
            named = {self.input_names[0]: x, **named}
        missing = [n for n in self.input_names if n not in named]
        if missing:
            raise ValueError(f"missing input {missing[0]!r}: this network reads {', '.join(self.input_names)}; "
                             f"received {', '.join(named) or 'none'}")
        return {n: named[n] for n in self.input_names}

    def example_input(self, batch: int = 2, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> Any:
        """A batch of the right shape and dtype (token ids in range for embeddings); an `Inputs`
        of every input where there are several."""
        # `self` may be another module that borrows this method (a QuantizedNetwork): read attributes only.
        named = dict(self.input_types) if getattr(self, "input_names", ()) else {}
        if not named:
            return _example(self, self.input_type, self.spec.input, batch, device, dtype)
        specs = self.spec.input_specs
        return Inputs({n: _example(self, t, specs.get(n), batch, device, dtype) for n, t in named.items()})


# --------------------------------------------------------------------------- builder


@dataclass
class _Builder:
    spec: Spec
    leaves: list[LeafInfo] = field(default_factory=list)
    ctx_built: list[tuple[str, str, nn.Module]] = field(default_factory=list)
    memory: TensorType | None = None  # set while building a seq2seq decoder
    depth: int = 0
    on_meta: bool | None = None  # whether the build runs on the meta device (found at the first leaf)
    last: Node | None = None  # the tree of the node built last (each method sets it)
    # The tensors `from:` may read, by name: the inputs, then each named node as it is built. None
    # where the network kind has no named tensors (seq2seq, VAE, GAN sections).
    names: dict[str, TensorType] | None = None
    inputs: tuple[str, ...] = ()
    scope: Scope = field(default_factory=Scope)
    routes: int = 0  # how many modules carry a Route (a network without any never fills its scope)
    dropped: list[Node] = field(default_factory=list)  # nodes whose output the next node does not take
    read_names: set[str] = field(default_factory=set)  # every name a from: or memory: reads
    # name -> (module, input type, output type) of each named node, for `share:`
    sharable: dict[str, tuple[nn.Module, TensorType, TensorType]] = field(default_factory=dict)

    def section(self, nodes: Any, x: TensorType, path: str, qual: str,
                env: Mapping[str, Any]) -> tuple[nn.Module, TensorType, Node]:
        """A spec section (always serial at the top, so every path starts `path[i]`)."""
        nodes = nodes if isinstance(nodes, list | tuple) else (nodes,)
        module, out = self.serial(nodes, x, path, qual, env)
        assert self.last is not None
        return module, out, self.last

    def node(self, node: Any, x: TensorType, path: str, qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise SpecError(f"{path}: nesting is deeper than {_MAX_DEPTH} levels; "
                            f"is a block referring to itself?")
        try:
            return self._node(node, x, path, qual, env)
        finally:
            self.depth -= 1

    def _node(self, node: Any, x: TensorType, path: str, qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        if isinstance(node, str) and "$" in node:
            node = substitute(node, env, path)
        if isinstance(node, list | tuple):
            return self.serial(node, x, path, qual, env)
        if isinstance(node, str):
            return self.named(node, None, x, path, qual, env)
        if isinstance(node, Mapping) and any(k in node for k in ROUTE_KEYS) and not (
                set(node) & set(ROUTE_KEYS) == {"merge"} and "parallel" in node):
            return self.routed(node, x, path, qual, env)
        if isinstance(node, Mapping):
            keys = list(node)
            composite = [k for k in keys if k in COMPOSITES]
            if composite:
                return self.composite(composite[0], node, x, path, qual, env)
            if len(keys) != 1:
                raise SpecError(f"{path}: a layer is written as a one-key mapping such as "
                                f"{{linear: 10}}, got keys {keys}. Put each layer in its own list item.")
            return self.named(str(keys[0]), node[keys[0]], x, path, qual, env)
        raise SpecError(f"{path}: expected a layer name, a {{layer: args}} mapping or a list. "
                        f"Received: {thaw(node)!r}")

    def routed(self, node: Mapping[str, Any], x: TensorType, path: str, qual: str,
               env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        """A node with `from:` (what it reads), `merge:` (how several reads join) and/or `name:`."""
        keys = ("from", "name", "share") if "parallel" in node else ROUTE_KEYS  # a parallel's merge is its own
        if "memory" in node and "parallel" not in node:  # beside the layer as from: is, or among its arguments
            node = _memory_into_arguments(node, path)
        if self.names is None:
            raise SpecError(f"{path}: from: and name: route named tensors in a spec's model: section; "
                            f"this section cannot use them (remove {', '.join(k for k in keys if k in node)})")
        route = {k: substitute(node[k], env, path) for k in keys if k in node}
        rest = {k: v for k, v in node.items() if k not in keys}
        reads: tuple[str, ...] = ()
        merge, dim = "", 1
        if "from" in route:
            x, reads, merge, dim = self.read(route["from"], route.get("merge"), path)
        elif "merge" in route:
            raise SpecError(f"{path}: merge: says how the tensors of from: join; give them, e.g. "
                            f"{{from: [image, text], merge: concat}}")
        if "share" in route:
            if rest:
                raise SpecError(f"{path}: share: applies the layers of an earlier node again, with its weights; "
                                f"give no layer beside it. Received: {', '.join(map(str, rest))}")
            module, out = self.shared(route["share"], x, path)
            inner = None
        elif rest:
            module, out = self._node(FrozenDict(rest), x, path, qual, env)
            inner = self.last
        else:
            module, out, inner = nn.Identity(), x, None
            if x is _NO_INPUT:
                raise SpecError(f"{path}: name: names the previous node's output, and there is none: the spec has "
                                f"several inputs ({', '.join(self.inputs)}); read one with from:")
        keeps = route.get("name", "")
        if keeps:
            if not isinstance(keeps, str) or not keeps.isidentifier():
                raise SpecError(f"{path}.name: expected a name (letters, digits, _). Received: {thaw(keeps)!r}")
            if keeps in self.inputs:
                raise SpecError(f"{path}.name: {keeps!r} is one of the spec's inputs; give this node another name")
            self.names[keeps] = TensorType(out.shape, out.dtype, out.layout, out.source)
            if "share" not in route:
                self.sharable[keeps] = (module, x, out)
        if inner is not None and not reads and not keeps:  # only memory: beside the layer, now its argument
            return module, out
        if ROUTE in module.__dict__:  # the node's own module routes already (a block of one routed node)
            module = Serial(module)
        module.__dict__[ROUTE] = Route(self.scope, reads, merge, dim, keeps, path=path)
        self.routes += 1
        if inner is None:
            what = f"share {route['share']}" if "share" in route else merge
            self.last = Node("route", path, x, out, name=what, reads=reads, keeps=keeps)
        else:
            self.last = dataclasses.replace(inner, reads=reads, keeps=keeps)
        return module, out

    def shared(self, target: Any, x: TensorType, path: str) -> tuple[nn.Module, TensorType]:
        """`share: NAME`: the module of the node named NAME, applied again to this node's input."""
        where = f"{path}.share"
        if not isinstance(target, str) or target not in self.sharable:
            known = ", ".join(self.sharable) or "none yet"
            raise SpecError(f"{where}: expected the name of an earlier node with layers (given with name:) whose "
                            f"weights to use again (known: {known}). Received: {thaw(target)!r}")
        module, took, gave = self.sharable[target]
        if x is _NO_INPUT:
            raise SpecError(f"{where}: there is no input to apply {target!r} to; read one with from:")
        if (x.shape, x.dtype) != (took.shape, took.dtype):
            raise ShapeError(f"{where}: {target!r} was built for {took.describe()} (from {took.source}) and cannot take "
                             f"{x.describe()} from {x.source}; shared weights need inputs of one shape")
        return Reuse(module, target), TensorType(gave.shape, gave.dtype, gave.layout, path)

    def read(self, source: Any, merge: Any, path: str) -> tuple[TensorType, tuple[str, ...], str, int]:
        """The type `from:` gives, the names it reads, its merge and the batch dim a concat joins on."""
        assert self.names is not None
        names = tuple(source) if isinstance(source, list | tuple) else (source,)
        where = f"{path}.from"
        if not names or not all(isinstance(n, str) for n in names):
            raise SpecError(f"{where}: expected the name of an input or of an earlier node, or a list of them. "
                            f"Received: {thaw(source)!r}")
        for n in names:
            if n not in self.names:
                known = list(self.names)
                close = difflib.get_close_matches(n, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise SpecError(f"{where}: nothing is called {n!r} here.{hint} It can read the inputs "
                                f"({', '.join(self.inputs) or 'none declared'}) and nodes named earlier with name: "
                                f"({', '.join(k for k in known if k not in self.inputs) or 'none yet'})")
        types = [self.names[n] for n in names]
        self.read_names.update(names)
        if len(names) == 1:
            if merge is not None:
                raise SpecError(f"{path}.merge: joins several from: tensors, and this node reads one ({names[0]}); "
                                f"remove merge: or read a list")
            return types[0], names, "", 1
        merge = "concat" if merge is None else merge
        if merge not in MERGES:
            raise SpecError(f"{path}.merge: must be one of {', '.join(MERGES)}. Received: {thaw(merge)!r}")
        out, dim = _merge_types(types, merge, where, "the tensors it reads")
        return TensorType(out.shape, out.dtype, out.layout, where), names, merge, dim + 1

    def serial(self, nodes: Any, x: TensorType, path: str, qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        modules, children, first = [], [], x
        for i, child in enumerate(nodes):
            if i and self.names is not None and self._reads_first(child):
                self.dropped.append(children[-1])  # the previous node's output goes nowhere, unless read by name
            module, x = self.node(child, x, f"{path}[{i}]", f"{qual}.{i}", env)
            modules.append(module)
            children.append(self.last)
        self.last = Node("serial", path, first, x, children=tuple(children))
        return Serial(*modules), x

    def _reads_first(self, node: Any, depth: int = 0) -> bool:
        """Whether `node` starts by reading named tensors (from:) instead of its input."""
        if depth > 20:
            return False
        if isinstance(node, list | tuple):
            return bool(node) and self._reads_first(node[0], depth + 1)
        if isinstance(node, Mapping):
            if "from" in node:
                return True
            if len(node) == 1 and next(iter(node)) in self.spec.blocks:
                return self._reads_first(self.spec.blocks[next(iter(node))], depth + 1)
            return False
        return isinstance(node, str) and node in self.spec.blocks and self._reads_first(self.spec.blocks[node], depth + 1)

    def check_reads(self) -> None:
        """Refuse what a graph computes and never uses: a node whose output the next node
        ignores (it reads from: instead) and nothing reads by name, and an input never read."""
        for node in self.dropped:
            name = _kept_name(node)
            if not name or name not in self.read_names:
                fix = (f"read it ({name!r}) with from: where it is needed" if name else
                       "give it a name: and read it with from: where it is needed")
                raise SpecError(f"{node.path}: its output is never used: the node after it reads from: instead, and "
                                f"nothing reads it by name; {fix}, or remove it")
        if len(self.inputs) > 1:
            for name in self.inputs:
                if name not in self.read_names:
                    raise SpecError(f"inputs.{name}: is declared but no node reads it; read it with from: {name}, "
                                    f"or drop it from inputs:")

    def named(self, name: str, args: Any, x: TensorType, path: str, qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        if name in self.spec.blocks:
            return self.block_ref(name, args, x, path, qual, env)
        if name not in LAYERS:
            known = [*LAYERS.names(), *self.spec.blocks]
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise SpecError(f"{path}: unknown layer {name!r}.{hint} "
                            f"List layers with `archlab layers`.")
        return self.leaf(name, args, x, path, qual, env)

    def leaf(self, name: str, args: Any, x: TensorType, path: str, qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        where = f"{path}.{name}"
        if len(self.leaves) >= _MAX_LAYERS:
            raise SpecError(f"{where}: the model has more than {_MAX_LAYERS:,} layers; is a repeat count too large?")
        if x is _NO_INPUT:
            raise SpecError(f"{where}: the spec has several inputs ({', '.join(self.inputs)}); say which this layer "
                            f"reads, e.g. {{{name}: ..., from: {self.inputs[0]}}}")
        layer = LAYERS.get(name)
        args = substitute(args, env, where)
        memory_name = ""
        if isinstance(args, Mapping) and "memory" in args and layer.wants_ctx and self.names is not None:
            memory_name = args["memory"]
            if not isinstance(memory_name, str) or memory_name not in self.names:
                known = ", ".join(self.names) or "none"
                raise SpecError(f"{where}.memory: expected the name of an input or an earlier named node to attend "
                                f"to (known: {known}). Received: {thaw(memory_name)!r}")
            args = {k: v for k, v in args.items() if k != "memory"}
            self.read_names.add(memory_name)
        freeze = False
        if isinstance(args, Mapping) and "freeze" in args:
            freeze = args["freeze"]
            if not isinstance(freeze, bool):
                raise SpecError(f"{where}: 'freeze' must be true or false. Received: {freeze!r}")
            args = {k: v for k, v in args.items() if k != "freeze"}
        kwargs = layer.bind(args, where)
        if layer.wants_ctx:
            memory = self.names[memory_name] if memory_name else self.memory
            kwargs["ctx"] = BuildContext(where, self.ctx_built, memory)
        try:
            if self.on_meta is None:
                self.on_meta = torch.get_default_device().type == "meta"
            with _WeightGuard(meta=self.on_meta):
                module, out = layer.fn(x, **kwargs)
        except SpecError as e:  # ShapeError included: prefix the path once
            raise type(e)(f"{where}: {e}") from None
        except RuntimeError as e:  # weights too large for PyTorch to describe, or for memory
            text = str(e).lower()
            if "overflow" in text:
                raise SpecError(f"{where}: its weights are too large for PyTorch "
                                f"({str(e).splitlines()[0]}); reduce its sizes") from None
            if isinstance(e, torch.OutOfMemoryError) or "allocate" in text:
                raise SpecError(f"{where}: its weights do not fit in memory ({str(e).splitlines()[0][:160]}); "
                                f"`archlab inspect` gives a model's size without allocating it") from None
            raise
        out = TensorType(out.shape, out.dtype, out.layout, where)
        if freeze:
            module.requires_grad_(False)
        if memory_name:
            users = tuple(m for m in module.modules() if isinstance(m, MemoryUser))
            if not users:
                raise SpecError(f"{where}.memory: {name} attends to nothing; memory: is for layers that attend to "
                                f"another sequence (cross_attention, cross_decoder_block)")
            module.__dict__[ROUTE] = Route(self.scope, memory=memory_name, users=users)
            self.routes += 1
        self.leaves.append(LeafInfo(where, name, qual, x, out, FrozenDict(kwargs)))
        self.ctx_built.append((where, name, module))
        self.last = Node("leaf", where, x, out, name=name, args=self.leaves[-1].args, memory=memory_name)
        return module, out

    def block_ref(self, name: str, args: Any, x: TensorType, path: str, qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        overrides = substitute(args, env, f"{path}.{name}") if args is not None else {}
        if not isinstance(overrides, Mapping):
            raise SpecError(f"{path}.{name}: a block takes a mapping of var overrides such as "
                            f"{{{name}: {{width: 64}}}}. Received: {thaw(overrides)!r}")
        ckpt = _checkpoint_flag(overrides.get("checkpoint", False), f"{path}.{name}")
        overrides = {k: v for k, v in overrides.items() if k != "checkpoint"}
        inner = {**env, **overrides}
        module, out = self.node(self.spec.blocks[name], x, f"{path}.{name}", qual, FrozenDict(inner))
        if ckpt:
            setattr(module, CHECKPOINT, True)
        self.last = Node("block", f"{path}.{name}", x, out, name=name, args=FrozenDict(overrides),
                         children=(self.last,) if self.last is not None else ())
        return module, out

    # -- composition

    def composite(self, kind: str, node: Mapping[str, Any], x: TensorType, path: str, qual: str,
                  env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        body = node[kind]
        options = {k: v for k, v in node.items() if k != kind}
        if isinstance(body, Mapping) and kind != "repeat":  # long form: {residual: {body: ..., projection: ...}}
            options = {**{k: v for k, v in body.items() if k not in ("body", "branches")}, **options}
            body = body.get("body", body.get("branches"))
        elif kind == "repeat" and isinstance(body, Mapping):
            options = {**{k: v for k, v in body.items() if k != "times"}, **options}
            body = body.get("times")
        options = {k: substitute(v, env, f"{path}.{kind}") if k not in ("block", "projection") else v
                   for k, v in options.items()}
        return getattr(self, kind)(body, options, x, f"{path}.{kind}", qual, env)

    def _check_options(self, options: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in options:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                if where.endswith(".residual"):  # the natural guess: {residual: {layers: [...]}}
                    hint += (" The branch's layers go under 'body' (residual: {body: [...], projection: "
                             "none}) or are the residual's own list, with projection beside it "
                             "(- residual: [...] and, on the next line, projection: none).")
                raise SpecError(f"{where}: unknown option {key!r}.{hint} Allowed: {', '.join(allowed)}")

    def parallel(self, branches: Any, options: Mapping[str, Any], x: TensorType, where: str,
                 qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        self._check_options(options, ("merge",), where)
        merge = options.get("merge", "concat")
        if merge not in MERGES:
            raise SpecError(f"{where}: merge must be one of {', '.join(MERGES)}. Received: {merge!r}")
        if isinstance(branches, str) and "$" in branches:
            branches = substitute(branches, env, where)
        if not isinstance(branches, list | tuple) or len(branches) < 2:
            raise SpecError(f"{where}: expected a list of at least 2 branches, each a list of layers. "
                            f"Received: {thaw(branches)!r}")
        modules, outs, children = [], [], []
        for i, branch in enumerate(branches):
            module, out = self.node(branch, x, f"{where}[{i}]", f"{qual}.parallel.{i}", env)
            modules.append(module)
            outs.append(out)
            children.append(self.last)
        out, dim = _merge_types(outs, merge, where, "branch outputs")
        # +1: the tensor's dim 0 is the batch.
        out = TensorType(out.shape, out.dtype, out.layout, where)
        self.last = Node("parallel", where, x, out, name=merge, children=tuple(children))
        return Parallel(modules, merge, dim + 1), out

    def residual(self, body: Any, options: Mapping[str, Any], x: TensorType, where: str,
                 qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        self._check_options(options, ("projection", "checkpoint"), where)
        ckpt = _checkpoint_flag(options.get("checkpoint", False), where)
        if x is _NO_INPUT:
            raise SpecError(f"{where}: adds its input to its branch, and there is none yet: the spec has several "
                            f"inputs ({', '.join(self.inputs)}); read one first with from:")
        if isinstance(body, str) and "$" in body:
            body = substitute(body, env, where)
        if body is None:
            raise SpecError(f"{where}: expected the layers of the residual branch, e.g. residual: [linear: 64, relu], "
                            f"or residual: {{body: [linear: 64, relu], projection: auto}}")
        module, out = self.node(body, x, where, f"{qual}.residual", env)
        branch = self.last
        projection = options.get("projection", "auto")
        proj = None
        skip: Node | str | None = None
        if out.shape != x.shape or out.dtype != x.dtype:
            if projection in ("none", False):
                raise ShapeError(f"{where}: the branch maps {x.describe()} to {out.describe()} but "
                                 f"projection is 'none'; make the shapes agree or allow projection: auto")
            if projection == "auto":
                proj = self._auto_projection(x, out, where, body)
                skip = _describe_projection(proj)
            else:
                proj, pout = self.node(projection, x, f"{where}.projection", f"{qual}.proj", env)
                skip = self.last
                if pout.shape != out.shape:
                    raise ShapeError(f"{where}.projection: maps {x.describe()} to {pout.describe()} "
                                     f"but the branch gives {out.describe()}")
        elif projection not in ("auto", "none", False):
            raise SpecError(f"{where}: a projection is given but the branch keeps the shape "
                            f"{x.describe()}; remove 'projection'")
        out = TensorType(out.shape, out.dtype, out.layout, where)
        self.last = Node("residual", where, x, out, children=(branch,) if branch is not None else (),
                         projection=skip)
        auto = (f"{where}.projection", skip) if isinstance(skip, str) else None
        residual = Residual(module, proj, auto)
        if ckpt:
            setattr(residual, CHECKPOINT, True)
        return residual, out

    def _auto_projection(self, x: TensorType, out: TensorType, where: str, body: Any) -> nn.Module:
        if x.dtype != "float":
            raise ShapeError(f"{where}: cannot add token ids {x.describe()} to {out.describe()}; "
                             f"put the embedding before the residual")
        if x.rank == out.rank and x.layout == "channels" and x.rank in (2, 3):
            strides = []
            for a, b in zip(x.shape[1:], out.shape[1:], strict=True):
                if b > a or a % b and (a + 1) // 2 != b:
                    raise ShapeError(f"{where}: cannot project {x.describe()} onto {out.describe()} "
                                     f"with a strided 1x1 convolution; give an explicit projection")
                strides.append(max(1, -(-a // b)))
            conv = (nn.Conv1d if x.rank == 2 else nn.Conv2d)
            uses_bn = "batchnorm" in repr(thaw(body))
            layers: list[nn.Module] = [conv(x.shape[0], out.shape[0], 1, stride=tuple(strides), bias=not uses_bn)]
            if uses_bn:  # ResNet's downsample: 1x1 conv + batchnorm
                layers.append((nn.BatchNorm1d if x.rank == 2 else nn.BatchNorm2d)(out.shape[0]))
            return Serial(*layers)
        if x.rank == out.rank and x.shape[:-1] == out.shape[:-1]:
            return nn.Linear(x.shape[-1], out.shape[-1])
        raise ShapeError(f"{where}: cannot project {x.describe()} onto {out.describe()} "
                         f"automatically; give an explicit projection or make the shapes agree")

    def repeat(self, times: Any, options: Mapping[str, Any], x: TensorType, where: str,
               qual: str, env: Mapping[str, Any]) -> tuple[nn.Module, TensorType]:
        self._check_options(options, ("block", "var", "checkpoint"), where)
        ckpt = _checkpoint_flag(options.get("checkpoint", False), where)
        times = substitute(times, env, where)
        if isinstance(times, bool) or not isinstance(times, int) or times < 0:
            raise SpecError(f"{where}: expected a non-negative integer count. Received: {thaw(times)!r}")
        if times > _MAX_REPEAT:
            raise SpecError(f"{where}: {times} copies is more than the {_MAX_REPEAT:,} a spec may repeat")
        if "block" not in options:
            raise SpecError(f"{where}: missing 'block' (the layers to repeat), e.g. "
                            f"{{repeat: 3, block: [linear: 64, relu]}}")
        var = options.get("var", "i")
        if not isinstance(var, str) or not var.isidentifier():
            raise SpecError(f"{where}: 'var' must be a name. Received: {var!r}")
        modules, copies, first = [], [], x
        for i in range(times):
            inner = FrozenDict({**env, var: i})
            if i and self.names is not None and self._reads_first(options["block"]):
                self.dropped.append(copies[-1])  # the previous copy's output, unless read by name
            module, x = self.node(options["block"], x, f"{where}[{i}]", f"{qual}.repeat.{i}", inner)
            if ckpt:
                setattr(module, CHECKPOINT, True)
            modules.append(module)
            copies.append(self.last)
        out = TensorType(x.shape, x.dtype, x.layout, x.source)
        self.last = Node("repeat", where, first, out, name=var, children=tuple(copies))
        return Repeat(modules), out


def _memory_into_arguments(node: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """`{cross_attention: {heads: 4}, memory: patches}` -> `{cross_attention: {heads: 4, memory: patches}}`."""
    layers = [k for k in node if k not in ROUTE_KEYS]
    if len(layers) != 1 or layers[0] in COMPOSITES:
        raise SpecError(f"{path}.memory: names what one attention layer attends to, e.g. "
                        f"{{cross_attention: {{heads: 4}}, memory: patches}}. Received: a node of {layers or 'no layer'}")
    layer, args = layers[0], node[layers[0]]
    if args is not None and not isinstance(args, Mapping):
        raise SpecError(f"{path}.{layer}: with memory:, write the layer's arguments as a mapping, e.g. "
                        f"{{{layer}: {{heads: {thaw(args)!r}}}, memory: {thaw(node['memory'])}}}")
    rest = {k: v for k, v in node.items() if k not in (layer, "memory")}
    return FrozenDict({**rest, layer: FrozenDict({**(args or {}), "memory": node["memory"]})})


def _kept_name(node: Node) -> str:
    """The name the output of `node` is kept under: its own, or its last part's."""
    if node.keeps:
        return node.keeps
    if node.kind in ("serial", "repeat", "block") and node.children:
        return _kept_name(node.children[-1])
    return ""


def _merge_types(outs: list[TensorType], merge: str, where: str, what: str) -> tuple[TensorType, int]:
    """The type of `outs` merged, and the per-sample dim a concat joins them on (channels for
    images and flat features, features for a sequence)."""
    dim = 0 if outs[0].layout in ("channels", "flat") else outs[0].rank - 1
    shapes = ", ".join(f"{o.describe()} from {o.source}" for o in outs)
    if len({o.dtype for o in outs}) != 1:
        raise ShapeError(f"{where}: {what} have different dtypes ({shapes}); "
                         f"embed token ids in every one or in none")
    if merge == "concat":
        ranks_ok = len({o.rank for o in outs}) == 1
        rest_ok = ranks_ok and len({o.shape[:dim] + o.shape[dim + 1:] for o in outs}) == 1
        if not rest_ok:
            raise ShapeError(f"{where}: concat needs {what} equal in all dims but dim {dim}; got {shapes}")
        shape = list(outs[0].shape)
        shape[dim] = sum(o.shape[dim] for o in outs)
        return outs[0].derive(tuple(shape)), dim
    if len({o.shape for o in outs}) != 1:
        raise ShapeError(f"{where}: merge '{merge}' needs {what} of one shape; got {shapes}. "
                         f"Use merge: concat or make them agree.")
    return outs[0], dim


def _describe_projection(proj: nn.Module) -> str:
    """What an auto projection is, for diagrams: "1×1 conv, stride 2 + batchnorm", "linear"."""
    if isinstance(proj, nn.Linear):
        return "linear"
    conv = proj[0]
    stride = max(conv.stride)
    norm = " + batchnorm" if len(proj) > 1 else ""
    return f"1×1 conv{f', stride {stride}' if stride > 1 else ''}{norm}"


def build_plain(spec: Spec, x: TensorType, env: Mapping[str, Any], device: Any, seed: int,
                named: Mapping[str, TensorType] | None = None) -> Network:
    """A spec with a `model:` section: one serial stack. With several named inputs (`named`)
    the first node reads them with from:; with one, it is the first node's input as well."""
    # One unnamed input can be read again later as `from: input`.
    builder = _Builder(spec, names=dict(named or {"input": x}), inputs=tuple(named or ("input",)))
    if named and len(named) > 1:
        x = _NO_INPUT
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, out, tree = builder.section(spec.model, x, "model", "model", env)
    if out is _NO_INPUT:
        raise SpecError("model: reads none of its inputs; read them with from:")
    builder.check_reads()
    first = next(iter(named.values())) if named else x
    net = Network(model, spec, first, out, builder.leaves, tree, named_inputs=named, scope=builder.scope)
    net.reads_input_by_name = builder.routes > 0
    return net
