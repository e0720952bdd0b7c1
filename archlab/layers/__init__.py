"""The layer registry and the leaf layers, each a function that checks its input and returns a module and its output type."""

# Importing these modules registers their entries.
from . import _attention, _basic, _conv, _cross, _recurrent, _transformer  # noqa: F401
from ._attention import (
    PRICED_DEVICE,
    AdditiveAttention,
    LayerCache,
    SelfAttention,
    attention_kernel,
    math_attention,
)
from ._basic import LearnedPositions, SinusoidalPositions
from ._cross import CrossAttention, MemoryUser, cross_attention_kernel
from ._inputs import Inputs, cat_inputs
from ._registry import (
    LAYERS,
    LAYOUTS,
    BuildContext,
    Built,
    LayerDef,
    TensorType,
    default_layout,
    pair,
    positive,
    probability,
    register_layer,
)

__all__ = [
    "AdditiveAttention",
    "BuildContext",
    "Built",
    "CrossAttention",
    "Inputs",
    "LAYERS",
    "LAYOUTS",
    "LayerCache",
    "LayerDef",
    "LearnedPositions",
    "MemoryUser",
    "PRICED_DEVICE",
    "SelfAttention",
    "SinusoidalPositions",
    "TensorType",
    "attention_kernel",
    "cat_inputs",
    "cross_attention_kernel",
    "default_layout",
    "math_attention",
    "pair",
    "positive",
    "probability",
    "register_layer",
]
