"""Backpropagation by hand: a two-layer NumPy network with a hand-written forward pass,
backward pass and gradient descent (`_mlp`, readable top to bottom), and its comparison with
the same network trained by archlab's trainer (`compare_with_trainer`, `archlab scratch`).

NumPy only at import: torch loads only when `compare_with_trainer` or `mlp_from_network` runs.
"""

from ._mlp import (
    MLP,
    Activations,
    Gradients,
    accuracy,
    backward,
    epoch,
    forward,
    init_mlp,
    mse,
    one_hot,
    sgd_step,
    sigmoid,
    train,
)
from ._versus import (
    LR,
    SUPPORTED,
    SUPPORTED_DATA,
    TOLERANCE,
    Comparison,
    compare_with_trainer,
    mlp_from_network,
    scratch_spec,
)

__all__ = [
    "Activations",
    "Comparison",
    "Gradients",
    "MLP",
    "LR",
    "SUPPORTED",
    "SUPPORTED_DATA",
    "TOLERANCE",
    "accuracy",
    "backward",
    "compare_with_trainer",
    "epoch",
    "forward",
    "init_mlp",
    "mlp_from_network",
    "mse",
    "one_hot",
    "scratch_spec",
    "sgd_step",
    "sigmoid",
    "train",
]
