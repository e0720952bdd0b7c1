"""Attribution methods, all on Captum: saliency, integrated gradients, Grad-CAM.

archlab only chooses what Captum is asked: the target (the model's predicted class), the
baseline (zeros: a black image, or the train mean of a standardised table), the layer
Grad-CAM reads (the last convolution of the built network) and, for integrated gradients,
how many steps are needed for the attributions to add up to f(x) - f(baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core import ArchlabError, SpecError
from ..model import LeafInfo

METHODS = ("saliency", "ig", "gradcam", "attention")
ATTRIBUTION_METHODS = ("saliency", "ig", "gradcam")
METHOD_TITLES = {"saliency": "saliency |∂f/∂x|", "ig": "integrated gradients", "gradcam": "Grad-CAM",
                 "attention": "attention maps"}
# Integrated gradients: the midpoint rule converges fastest here (measured on zoo:cnn / digits:
# 512 steps at most for 1e-3, where Gauss-Legendre needed 2048; a ReLU network's path gradient
# is piecewise constant, so no rule beats O(1/steps) and float64 changes nothing).
IG_RULE = "riemann_middle"
IG_START_STEPS = 64


def parse_methods(methods: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """'saliency,ig' -> ('saliency', 'ig'); None -> None (every method the model allows)."""
    if methods is None:
        return None
    items = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    items = [m for m in items if m]
    unknown = [m for m in items if m not in METHODS]
    if unknown or not items:
        raise ArchlabError(f"--methods: expected a comma-separated list of {', '.join(METHODS)}. "
                           f"Received: {', '.join(unknown) if unknown else repr(methods)}")
    return tuple(dict.fromkeys(items))


def last_conv(net: nn.Module, layers: Sequence[LeafInfo]) -> tuple[LeafInfo, nn.Module] | None:
    """The last conv1d/conv2d leaf the builder built (Grad-CAM's layer), with its module."""
    for leaf in reversed(layers):
        module = net.get_submodule(leaf.module_name)
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            return leaf, module
    return None


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|∂f_target/∂x| (Simonyan et al. 2014), through captum.attr.Saliency."""
    from captum.attr import Saliency

    x = x.detach().clone().requires_grad_(True)   # Captum warns when it has to set this itself
    return Saliency(model).attribute(x, target=target, abs=True).detach()


def gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at `layer`, upsampled to the input and repeated over its
    channels, so it has the input's shape. Through captum's LayerGradCam and its interpolate."""
    from captum.attr import LayerAttribution, LayerGradCam

    x = x.detach().clone().requires_grad_(True)
    cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True).detach()  # (N, 1, *S')
    spatial = tuple(x.shape[2:])
    mode = "bilinear" if len(spatial) == 2 else "linear"
    cam = LayerAttribution.interpolate(cam, spatial, mode)  # (N, 1, *S)
    return cam.expand_as(x).detach().contiguous()


@dataclass(frozen=True)
class IGResult:
    attributions: torch.Tensor   # (N, *input_shape)
    steps: np.ndarray            # (N,) the steps each sample needed
    error: np.ndarray            # (N,) |sum(attributions) - (f(x) - f(baseline))|


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor,
                         tolerance: float = 1e-3, max_steps: int = 4096, start_steps: int = IG_START_STEPS,
                         internal_batch: int = 4096) -> IGResult:
    """Integrated gradients (Sundararajan et al. 2017) through captum.attr.IntegratedGradients,
    with the steps doubled, for the samples that need it, until each sample's completeness
    error is at most `tolerance` (or `max_steps` is reached: its error is then reported as is).
    """
    from captum.attr import IntegratedGradients

    if start_steps < 1 or max_steps < start_steps:
        raise ArchlabError(f"--ig-max-steps: expected at least {start_steps}. Received: {max_steps}")
    ig = IntegratedGradients(model)
    n = len(x)
    out = torch.zeros_like(x)
    steps = np.zeros(n, dtype=np.int64)
    error = np.full(n, np.inf)
    todo = torch.arange(n)
    k = start_steps
    while len(todo):
        xs, bs, ts = x[todo], baseline[todo], target[todo]
        a = ig.attribute(xs, baselines=bs, target=ts, n_steps=k, method=IG_RULE,
                         internal_batch_size=max(internal_batch, len(todo))).detach()
        err = completeness_error(model, xs, bs, ts, a)
        out[todo], steps[todo.numpy()], error[todo.numpy()] = a, k, err
        if k * 2 > max_steps:
            break
        todo = todo[torch.from_numpy(err > tolerance)]
        k *= 2
    return IGResult(out, steps, error)


def completeness_error(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
                       attributions: torch.Tensor) -> np.ndarray:
    """|Σ attributions − (f(x) − f(baseline))| per sample, f the target output (sums in float64)."""
    with torch.no_grad():
        fx = pick(model(x), target).double()
        fb = pick(model(baseline), target).double()
    total = attributions.double().reshape(len(x), -1).sum(1)
    return (total - (fx - fb)).abs().numpy()


def pick(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """output[i, target[i]] for (N, K) outputs."""
    return output.reshape(len(output), -1).gather(1, target.view(-1, 1)).squeeze(1)


def check_methods(wanted: tuple[str, ...] | None, *, float_input: bool, conv: tuple[LeafInfo, nn.Module] | None,
                  attention_found: bool, kinds: Sequence[str], input_rank: int, where: str) -> tuple[str, ...]:
    """The methods to run: those asked for, each checked against the model (one-line errors
    that say what the model has and which methods it allows); by default all it allows."""
    cam = conv is not None and _cam_fits(conv[0], input_rank)
    allowed = [m for m in ATTRIBUTION_METHODS if float_input and (m != "gradcam" or cam)]
    allowed += ["attention"] if attention_found else []
    has = ", ".join(dict.fromkeys(kinds))
    fix = f"use --methods {','.join(allowed)}" if allowed else "this model allows none"
    if wanted is None:
        if not allowed:
            raise SpecError(f"explain {where}: nothing to explain: attributions need float inputs and this "
                            f"model takes token ids, and it has no attention layer (it has {has})")
        return tuple(allowed)
    for m in wanted:
        if m in allowed:
            continue
        if m in ATTRIBUTION_METHODS and not float_input:
            why = (f"--methods {m} needs float inputs; this model takes token ids (attributions to tokens are "
                   f"not supported)")
        elif m == "gradcam" and conv is None:
            why = f"--methods gradcam needs a conv1d or conv2d layer; the model has none (it has {has})"
        elif m == "gradcam":
            why = (f"--methods gradcam: the last conv layer {conv[0].path} makes maps {conv[0].output.describe()} "
                   f"that do not line up with the input (rank {input_rank})")
        else:
            why = (f"--methods attention needs an attention layer (attention, encoder_block, decoder_block, "
                   f"additive_attention); the model has none (it has {has})")
        raise SpecError(f"explain {where}: {why}. Received: --methods {','.join(wanted)}; {fix}")
    return wanted


def _cam_fits(leaf: LeafInfo, input_rank: int) -> bool:
    """Grad-CAM maps line up with the input when both are channels-first of the same rank."""
    return leaf.output.rank == input_rank and leaf.input.rank == input_rank and input_rank in (2, 3)
