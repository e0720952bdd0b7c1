"""Making a trained architecture cheaper: structured and unstructured pruning that rewrites the
spec, distillation, quantization, and the measurements (parameters, MACs, size, latency,
accuracy) of every variant against its parent."""

from ._distill import distill

__all__ = ["distill"]
