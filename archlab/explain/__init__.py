"""Understanding a trained run: attributions (on Captum) and attention maps, with the checks
that tell a faithful explanation from a picture."""

from ._attention import AttentionMap, attention_maps, attention_modules, head_entropy, recording
from ._checks import curve_area, deletion_curves, random_orders, rank_correlation
from ._explain import (
    COMPLETENESS_TARGET,
    DELETION_TARGET,
    RANDOMISATION_TARGET,
    Explanation,
    MethodResult,
    explain,
)
from ._methods import (
    ATTRIBUTION_METHODS,
    METHOD_TITLES,
    METHODS,
    completeness_error,
    gradcam,
    integrated_gradients,
    last_conv,
    parse_methods,
    saliency,
)

__all__ = [
    "ATTRIBUTION_METHODS",
    "AttentionMap",
    "COMPLETENESS_TARGET",
    "DELETION_TARGET",
    "Explanation",
    "METHODS",
    "METHOD_TITLES",
    "MethodResult",
    "RANDOMISATION_TARGET",
    "attention_maps",
    "attention_modules",
    "completeness_error",
    "curve_area",
    "deletion_curves",
    "explain",
    "gradcam",
    "head_entropy",
    "integrated_gradients",
    "last_conv",
    "parse_methods",
    "random_orders",
    "rank_correlation",
    "recording",
    "saliency",
]
