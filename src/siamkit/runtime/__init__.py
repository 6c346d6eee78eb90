"""Inference without PyTorch: exported encoders run by ONNX Runtime.

Nothing here imports torch: ``pip install 'siamkit[onnx]'`` on a machine
without PyTorch, then :func:`load_onnx_encoder` (or
:func:`siamkit.load_encoder`) on what :meth:`siamkit.Encoder.export_onnx` wrote.
"""

from siamkit.runtime.onnx import OnnxEncoder, inference_session, load_onnx_encoder
from siamkit.runtime.preprocessing import Preprocessing

__all__ = ["OnnxEncoder", "Preprocessing", "inference_session", "load_onnx_encoder"]
