"""Export a trained model to a portable format: ``export_onnx`` (:mod:`.onnx_export`) writes
an ONNX graph and the card that says how to run it; ``load_onnx_predictor`` (:mod:`.runtime`)
runs the graph with onnxruntime exactly as segbench runs the torch model."""

from segbench.export.card import ExportCard
from segbench.export.onnx_export import export_onnx
from segbench.export.runtime import OnnxModel, OnnxPredictor, load_onnx_predictor

__all__ = [
    "ExportCard",
    "OnnxModel",
    "OnnxPredictor",
    "export_onnx",
    "load_onnx_predictor",
]
