"""Making a trained architecture cheaper: structured and unstructured pruning that rewrites the
spec, distillation, quantization, and the measurements (parameters, MACs, size, latency,
accuracy) of every variant against its parent."""

from ._compress import COMPRESSION_JSON, Compressed, Variant, compress, read_compression
from ._distill import distill
from ._measure import (
    accuracy,
    compare_measurements,
    count_macs,
    latency,
    measure,
    size_on_disk,
    time_forward,
)
from ._prune import (
    METHODS,
    Pruned,
    PrunedLayer,
    check_method,
    check_ratio,
    prune,
    recalibrate_batchnorm,
    taylor_scores,
)
from ._quantize import (
    DEFAULT_TOLERANCE,
    MODES,
    QUANTIZED_META,
    QUANTIZED_WEIGHTS,
    QuantizationWarning,
    QuantizedNetwork,
    load_quantized,
    load_run_quantized,
    quantize,
    save_quantized,
    time_candidates,
)
from ._unstructured import SCOPES, Sparsity, magnitude_prune, sparsity_of

__all__: list[str] = [
    "COMPRESSION_JSON",
    "Compressed",
    "Variant",
    "compress",
    "read_compression",
    "distill",
    "METHODS",
    "Pruned",
    "PrunedLayer",
    "SCOPES",
    "Sparsity",
    "magnitude_prune",
    "sparsity_of",
    "check_method",
    "check_ratio",
    "prune",
    "recalibrate_batchnorm",
    "taylor_scores",
    "DEFAULT_TOLERANCE",
    "MODES",
    "QUANTIZED_META",
    "QUANTIZED_WEIGHTS",
    "QuantizationWarning",
    "QuantizedNetwork",
    "load_quantized",
    "load_run_quantized",
    "quantize",
    "save_quantized",
    "time_candidates",
    "accuracy",
    "compare_measurements",
    "count_macs",
    "latency",
    "measure",
    "size_on_disk",
    "time_forward",
]
