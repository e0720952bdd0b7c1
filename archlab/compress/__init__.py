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

__all__: list[str] = [
    "accuracy",
    "compare_measurements",
    "count_macs",
    "latency",
    "measure",
    "size_on_disk",
    "time_forward",
]
