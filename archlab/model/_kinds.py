"""Network kinds, looked up in a registry: which sections a spec has (or which task it
trains for) decides how it is built.

    plain    model:                          Network
    seq2seq  encoder: + decoder:             Seq2SeqNetwork
    vae      encoder: + decoder:, task: vae  VAENetwork
    gan      generator: + discriminator:     GANNetwork

A kind is chosen by the spec's `train.task` where a kind claims that task (vae, gan), else
by the sections the spec has (parsing already refuses specs whose sections mix kinds).
Adding a kind is one `KINDS.register(...)` with its sections and a build function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core import FrozenDict, Registry, SpecError
from ..layers import TensorType, default_layout
from ..spec import Spec, check_shape, load_spec, resolve_input
from ._builder import Network, build_plain
from ._generative import GANNetwork, VAENetwork, build_gan, build_vae
from ._network import BuiltNetwork
from ._seq2seq import Seq2SeqNetwork, build_seq2seq


@dataclass(frozen=True)
class NetworkKind:
    name: str
    sections: tuple[str, ...]       # spec sections that make a spec this kind
    build: Callable[[Spec, TensorType, Mapping[str, Any], Any, int], BuiltNetwork]
    network: type                   # the class it builds
    tasks: tuple[str, ...] = ()     # train tasks that choose this kind whatever the sections


KINDS: Registry[NetworkKind] = Registry("network kind", SpecError)
KINDS.register("plain")(NetworkKind("plain", ("model",), build_plain, Network))
KINDS.register("seq2seq")(NetworkKind("seq2seq", ("encoder", "decoder"), build_seq2seq, Seq2SeqNetwork))
KINDS.register("vae")(NetworkKind("vae", (), build_vae, VAENetwork, tasks=("vae",)))
KINDS.register("gan")(NetworkKind("gan", ("generator", "discriminator"), build_gan, GANNetwork, tasks=("gan",)))


def network_kind(spec: Spec, task: str | None = None) -> str:
    """The name of the kind `spec` builds as (with an optional `--task` override).

    >>> network_kind(load_spec("zoo:gan")), network_kind(load_spec("zoo:mlp"))
    ('gan', 'plain')
    """
    task = task or spec.train.get("task")
    kinds = [KINDS.get(name) for name in KINDS.names()]
    for kind in kinds:
        if task in kind.tasks:
            return kind.name
    present = {name for name in ("model", "encoder", "decoder", "generator", "discriminator")
               if getattr(spec, name) is not None}
    for kind in kinds:
        if kind.sections and set(kind.sections) <= present:
            return kind.name
    raise SpecError("spec: it has none of the sections of a network kind "
                    f"({'; '.join(f'{k.name}: ' + ' + '.join(k.sections) for k in kinds if k.sections)})")


def build(spec: Spec | str | Mapping[str, Any], input_shape: tuple[int, ...] | None = None,
          seed: int = 0, *, vars: Mapping[str, Any] | None = None, device: str | torch.device = "cpu",
          dtype: str | None = None) -> Any:
    """Build a spec into a plain `nn.Module` of its kind (a `Network` for a `model:` spec),
    checking shapes at every node; every kind follows the `BuiltNetwork` protocol.

    On `device="meta"` no weights are allocated (used by `inspect`); elsewhere the
    initialisation is deterministic given `seed`.

    >>> net = build({"input": {"shape": [4]}, "model": [{"linear": 8}, "relu", {"linear": 2}]})
    >>> net(torch.zeros(3, 4)).shape
    torch.Size([3, 2])
    """
    spec = load_spec(spec)
    if vars:
        spec = spec.with_vars(vars, strict=False)
    if spec.spaces:
        spec = spec.with_defaults()
    if isinstance(input_shape, Mapping):  # several named inputs: {name: shape}
        declared = spec.input_specs
        spec = spec.with_input(named={n: (tuple(shape), declared[n].dtype if n in declared else "float")
                                      for n, shape in input_shape.items()})
    elif input_shape is not None:
        spec = spec.with_input(tuple(input_shape), dtype)
    elif dtype is not None:
        spec = spec.with_input(None, dtype)
    env = FrozenDict(spec.resolved_vars())
    kind = network_kind(spec)
    if spec.inputs is not None:
        if kind != "plain":
            raise SpecError(f"inputs: several named inputs are read by a model: section; a {kind} spec has one "
                            f"input: {{shape: [...]}}")
        resolved = {name: resolve_input(i, env, f"inputs.{name}") if i.shape else i for name, i in spec.inputs.items()}
        spec = dataclasses.replace(spec, inputs=FrozenDict(resolved))
        named = {name: _input_type(i.shape, i.dtype, f"inputs.{name}", i.layout) for name, i in resolved.items()}
        return build_plain(spec, next(iter(named.values())), env, device, seed, named=named)
    if spec.input is None or not spec.input.shape:
        raise SpecError("input: the spec has no input shape; add `input: {shape: [1, 28, 28]}` "
                        "or pass one (--input 1,28,28, or the data set gives it at train time)")
    x = _input_type(spec.input.shape, spec.input.dtype, "input", spec.input.layout)
    return KINDS.get(kind).build(spec, x, env, device, seed)


def _input_type(shape: tuple[int, ...], dtype: str, where: str, layout: str | None = None) -> TensorType:
    if not shape:
        raise SpecError(f"{where}: the input has no shape; give it one, e.g. {{shape: [1, 28, 28]}} "
                        f"(or the data set gives it at train time)")
    shape = check_shape(shape, f"{where}.shape")
    if layout == "sequence" and len(shape) != 2:
        raise SpecError(f"{where}.layout: a sequence is (T, D). Received: shape {list(shape)}")
    return TensorType(shape, dtype, layout or default_layout(shape, dtype), where)
