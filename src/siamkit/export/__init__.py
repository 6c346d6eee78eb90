"""Exporting encoders for deployment without PyTorch (ONNX, run by :mod:`siamkit.runtime`)."""

from siamkit.export.onnx import DEFAULT_OPSET, export_onnx

__all__ = ["DEFAULT_OPSET", "export_onnx"]
