"""archlab: declare, inspect, train, compare, search and compress neural-network architectures.

    >>> import archlab
    >>> net = archlab.build("zoo:mlp")            # a plain torch.nn.Module
    >>> report = archlab.inspect("zoo:gpt2")       # params, FLOPs, training memory; no weights allocated
    >>> report.params
    124439808
    >>> net = archlab.load("shipped/")   # doctest: +SKIP

`archlab.load(FOLDER)` rebuilds a model folder written by `archlab export RUN_ID --folder`.
The names below are loaded on first use, so that `import archlab.runs` (the store) or
`archlab --help` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core import ArchlabError, DataError, ShapeError, SpecError, StoreError, TrainingError

__version__ = "0.1.0"

# name -> the subpackage that makes it public
_LAZY = {
    "LAYERS": "layers", "TensorType": "layers", "register_layer": "layers", "Inputs": "layers",
    "Network": "model", "build": "model", "Inspection": "model", "inspect": "model",
    "Spec": "spec", "load_spec": "spec", "zoo_names": "spec",
    "load": "deploy",
}

if TYPE_CHECKING:
    from .deploy import load
    from .layers import LAYERS, Inputs, TensorType, register_layer
    from .model import Inspection, Network, build, inspect
    from .spec import Spec, load_spec, zoo_names


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'archlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "LAYERS",
    "ArchlabError",
    "DataError",
    "Inputs",
    "Inspection",
    "Network",
    "ShapeError",
    "Spec",
    "SpecError",
    "StoreError",
    "TensorType",
    "TrainingError",
    "build",
    "inspect",
    "load",
    "load_spec",
    "register_layer",
    "zoo_names",
]
