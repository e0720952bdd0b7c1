"""Shipping a trained run: ONNX export (verified in onnxruntime), a self-contained model folder
loadable offline, and prediction on new files with the run's own preprocessing."""

__all__: list[str] = []
