"""torch.autocast's casting rules, applied where torch.autocast cannot go: the meta device.

The inspector prices a mixed-precision training step on meta tensors, and autocast refuses
them ("unsupported autocast device_type 'meta'"). Casting the whole network to bf16 instead
would be wrong twice: under autocast the weights stay fp32 (a bf16 copy of each is made once
per step and saved for backward), and some ops run in fp32 whatever their input — on CUDA the
norms, softmax and losses, so a layer norm saves an fp32 copy of its input. This mode applies
the same per-op policy at the same level as autocast (before autograd records the op, so what
autograd saves has the dtype the real step saves):

    lower precision   matrix products, convolutions, linear, attention, recurrent cells: their
                      floating inputs are cast to the autocast dtype (weights once per step)
    fp32              the device's fp32 list (CUDA: norms, softmax, exp/log/pow, losses;
                      CPU: losses and a few numerics-sensitive ops only)
    anything else     runs in the dtype of its inputs, as autocast leaves it

The op names follow PyTorch's autocast lists (aten/src/ATen/autocast_mode.cpp and the
"Autocast Op Reference" of the torch.amp docs) for the ops archlab's layers call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

_LOWER = {
    "linear", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "baddbmm", "addbmm", "addmv",
    "mv", "einsum", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "prelu", "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_attention_math", "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell",
    "rnn_tanh_cell", "rnn_relu_cell",
}
# Ops that both lists send to fp32: the losses.
_LOSSES = {
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "poisson_nll_loss", "cosine_embedding_loss",
    "hinge_embedding_loss", "margin_ranking_loss", "soft_margin_loss", "multi_margin_loss",
    "multilabel_margin_loss", "triplet_margin_loss",
}
_FP32 = {
    "cuda": _LOSSES | {
        "layer_norm", "group_norm", "softmax", "log_softmax", "softmin", "softplus", "exp", "expm1", "log",
        "log1p", "log2", "log10", "pow", "__pow__", "__rpow__", "rsqrt", "reciprocal", "sum", "prod",
        "cumsum", "cumprod", "norm", "normalize", "cosine_similarity", "logsumexp", "erfinv", "acos", "asin",
        "cosh", "sinh", "tan", "dist", "cdist", "pdist", "renorm",
    },
    "cpu": _LOSSES | {"prod", "cdist", "quantile", "nanquantile", "stft"},
}
DEVICES = tuple(_FP32)


class MetaAutocast(TorchFunctionMode):
    """Inside it, torch functions on float tensors follow `device`'s autocast policy for `dtype`.

    Weight casts are cached for the life of the mode, as autocast caches them for the life of
    its region, so a weight used twice (tied embeddings) is copied once."""

    def __init__(self, dtype: torch.dtype, device: str) -> None:
        super().__init__()
        if device not in _FP32:
            raise ValueError(f"autocast rules are known for {', '.join(_FP32)}, not {device!r}")
        self.dtype, self.fp32 = dtype, _FP32[device]
        self._weights: dict[int, torch.Tensor] = {}

    def _cast(self, value: Any, to: torch.dtype) -> Any:
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dtype in (to, torch.float64):
            return value
        if isinstance(value, torch.nn.Parameter) or (value.is_leaf and value.requires_grad):
            cached = self._weights.get(id(value))
            if cached is None:
                cached = self._weights[id(value)] = value.to(to)
            return cached
        return value.to(to)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _LOWER:
            to: torch.dtype | None = self.dtype
        elif name in self.fp32 and "dtype" not in kwargs:  # an explicit dtype= opts out, as in autocast
            to = torch.float32
        else:
            to = None
        if to is not None:
            args, kwargs = tree_map(lambda v: self._cast(v, to), (args, kwargs))
        return func(*args, **kwargs)
