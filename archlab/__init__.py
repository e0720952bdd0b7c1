"""archlab: declare, inspect, train, compare, search and compress neural-network architectures.

    >>> import archlab
    >>> net = archlab.build("zoo:mlp")            # a plain torch.nn.Module
    >>> report = archlab.inspect("zoo:gpt2")       # params, FLOPs, training memory; no weights allocated
"""

from .build import Network, build
from .errors import ArchlabError, DataError, ShapeError, SpecError, StoreError, TrainingError
from .layers import LAYERS, TensorType, register_layer
from .measure import Inspection, inspect
from .spec import Spec, load_spec, zoo_names

__version__ = "0.1.0"

__all__ = [
    "LAYERS",
    "ArchlabError",
    "DataError",
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
    "load_spec",
    "register_layer",
    "zoo_names",
]
