"""Making a trained architecture cheaper: structured and unstructured pruning that rewrites the
spec, distillation, quantization, and the measurements (parameters, MACs, size, latency,
accuracy) of every variant against its parent."""

from ._measure import (
    accuracy,
    compare_measurements,
    count_macs,
    latency,
    measure,
    size_on_disk,
    time_forward,
)
from ._quantize import (
    DEFAULT_TOLERANCE,
    MODES,
    QUANTIZED_META,
    QUANTIZED_WEIGHTS,
    QuantizationWarning,
    QuantizedNetwork,
    load_quantized,
    quantize,
    save_quantized,
    time_candidates,
)

__all__: list[str] = [
    "DEFAULT_TOLERANCE",
    "MODES",
    "QUANTIZED_META",
    "QUANTIZED_WEIGHTS",
    "QuantizationWarning",
    "QuantizedNetwork",
    "load_quantized",
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
