"""Making a trained architecture cheaper: structured and unstructured pruning that rewrites the
spec, distillation, quantization, and the measurements (parameters, MACs, size, latency,
accuracy) of every variant against its parent."""

__all__: list[str] = []
