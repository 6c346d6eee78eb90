"""Reading image files with errors that name the file (see :mod:`siamkit._images`).

The code lives in a module that imports neither torch nor this package, so
that the ONNX Runtime path (:mod:`siamkit.runtime`) reads images exactly as
training did without PyTorch installed.
"""

from siamkit._images import IMAGE_EXTENSIONS, is_image_file, load_image, to_8bit, upright

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "load_image", "to_8bit", "upright"]
