"""What every built network is, whatever its kind: the one protocol, and the node tree the
builder records.

`BuiltNetwork` is the base of `Network` (plain), `Seq2SeqNetwork`, `VAENetwork` and
`GANNetwork`. Code that takes a built network reads these and nothing else:

    spec           the concrete spec it was built from
    kind           its network kind ("plain", "seq2seq", "vae", "gan"), see archlab.model.KINDS
    input_type     per-sample input (TensorType); input_shape is its shape
    output_type    per-sample output; output_shape is its shape
    data_shape     the shape of one data sample it learns from (a GAN's is its image shape,
                   not its latent input)
    layers         every leaf, in build order (LeafInfo: path, kind, module name, types, args)
    sections       the spec sections it was built from, each with its node tree (Section)
    example_input  a batch of the right shape and dtype, on any device (meta included)

The node tree is what the builder saw: composition, block references, repeats, auto
projections, with the input and output type of every node. The report's architecture
diagram is drawn from it, so it never walks the spec a second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..layers import TensorType

NODE_KINDS = ("serial", "leaf", "block", "parallel", "residual", "repeat", "route")


@dataclass(frozen=True)
class LeafInfo:
    path: str            # spec path, e.g. model[3].residual[0].conv2d
    kind: str            # layer name, e.g. conv2d
    module_name: str     # qualified module name, e.g. model.3.residual.0
    input: TensorType
    output: TensorType
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Node:
    """One node of the tree the builder built.

    kind      serial | leaf | block | parallel | residual | repeat | route (a node that only
              reads named tensors, `{from: [a, b], merge: add}`, or only names its input)
    path      its spec path (a leaf's ends in its layer name: model[2].linear)
    name      leaf: the layer; block: the block's name; parallel: the merge; repeat: the copy var;
              route: the merge of several reads ("" for one)
    args      leaf: its bound arguments; block: the var overrides it was given
    children  serial, block: the nodes in order; parallel: the branches; residual: the
              branch (one node); repeat: one node per copy
    projection  residual only: None where the skip is the identity; a description such as
              "1×1 conv, stride 2 + batchnorm" for an auto projection; a Node where the spec
              gives one
    """

    kind: str
    path: str
    input: TensorType
    output: TensorType
    name: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)
    children: tuple[Node, ...] = ()
    projection: Node | str | None = None
    reads: tuple[str, ...] = ()   # `from:`: the inputs or named nodes it reads instead of the previous node
    keeps: str = ""               # `name:`: the name later nodes read its output by
    memory: str = ""              # `memory:` of an attention leaf: the named tensor it attends to

    def leaves(self) -> list[Node]:
        """The leaf nodes under this one, in order."""
        if self.kind == "leaf":
            return [self]
        out = [leaf for child in self.children for leaf in child.leaves()]
        if isinstance(self.projection, Node):
            out += self.projection.leaves()
        return out


@dataclass(frozen=True)
class Section:
    """One spec section of a built network: `model`, or `encoder` and `decoder`, or
    `generator` and `discriminator`; with the labels a diagram gives its two ends."""

    name: str
    input: TensorType
    output: TensorType
    tree: Node
    input_label: str = "input"
    output_label: str = "output"


class BuiltNetwork:
    """The protocol every built network follows (a mixin beside nn.Module).

    A network with several named inputs (`inputs:`) has their names in `input_names` and their
    types in `input_types`; it is called with an `Inputs` (or a dict) of them, and `input_type`
    is the first one's. With one unnamed input `input_names` is empty and it takes a tensor."""

    kind: str = ""
    spec: Any
    input_names: tuple[str, ...] = ()
    input_type: TensorType
    output_type: TensorType
    layers: list[LeafInfo]
    sections: tuple[Section, ...]

    @property
    def input_types(self) -> dict[str, TensorType]:
        return {"input": self.input_type}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.input_type.shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_type.shape

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one sample of the data it learns from."""
        return self.input_shape

    def example_input(self, batch: int = 2, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A batch of the right shape and dtype; on the meta device, an empty one."""
        raise NotImplementedError


def require_one_input(net: Any, what: str) -> None:
    """Refuse, in one line, a network of several named inputs where `what` handles one input."""
    names = getattr(net, "input_names", ())
    if len(names) > 1:
        from ..core import SpecError

        raise SpecError(f"{what}: the model reads {len(names)} named inputs ({', '.join(names)}); {what} handles "
                        f"models of one input so far. Train, inspect, compare and search take several inputs")


def is_meta(device: torch.device | str | None) -> bool:
    return torch.device(device or "cpu").type == "meta"
