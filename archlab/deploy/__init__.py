"""Shipping a trained run: ONNX export (verified in onnxruntime), a self-contained model folder
loadable offline, and prediction on new files with the run's own preprocessing.

    export_onnx("r1a2b3c4d", "model.onnx", verify=True)   # batch-dynamic, checked at batch 1, 2, 7
    export_folder("r1a2b3c4d", "shipped/")                # spec.yaml, model.safetensors, preprocessing.json, README.md
    net = load("shipped/")                                # a plain nn.Module; nothing unpickled
    predict("shipped/", "images/", "predictions.csv")     # PNG folder, .npy or CSV in; a CSV out
"""

from ._folder import ExportedFolder, export_folder, model_card
from ._onnx import TOLERANCE, VERIFY_BATCHES, OnnxExport, export_onnx, onnx_graph
from ._predict import PREDICT_BATCH, Predictions, predict
from ._source import MODEL_CARD, MODEL_WEIGHTS, Shipped, load, open_source, run_preprocessing

__all__ = [
    "ExportedFolder",
    "MODEL_CARD",
    "MODEL_WEIGHTS",
    "OnnxExport",
    "PREDICT_BATCH",
    "Predictions",
    "Shipped",
    "TOLERANCE",
    "VERIFY_BATCHES",
    "export_folder",
    "export_onnx",
    "load",
    "model_card",
    "onnx_graph",
    "open_source",
    "predict",
    "run_preprocessing",
]
