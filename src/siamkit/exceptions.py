"""The exceptions siamkit raises.

Every error siamkit raises on bad input derives from :class:`SiamkitError`, so
``except siamkit.SiamkitError`` catches them all. Each also derives from the
closest built-in type (``ValueError``, ``FileNotFoundError``...) so existing
handlers keep working.

Examples:
    >>> import siamkit
    >>> try:
    ...     siamkit.create_encoder("no-such-encoder")
    ... except siamkit.SiamkitError as err:
    ...     print(type(err).__name__)
    UnknownComponentError
"""

from __future__ import annotations


class SiamkitError(Exception):
    """Base class of every error siamkit raises on purpose."""


class ConfigError(SiamkitError, ValueError):
    """An argument or setting is invalid (a bad metric name, a negative margin...)."""


class UnknownComponentError(ConfigError, KeyError):
    """A registry was asked for a name it does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(SiamkitError, ValueError):
    """A dataset is missing, empty or malformed."""


class ImageReadError(DataError):
    """An image file could not be read; the message names the file."""


class DownloadError(SiamkitError, OSError):
    """A download failed or the archive it fetched is not what was expected."""


class ShapeError(SiamkitError, ValueError):
    """Arrays or tensors have incompatible shapes (labels vs embeddings, dims...)."""


class NonFiniteError(SiamkitError, FloatingPointError):
    """Embeddings or a loss contain NaN or infinity."""


class WriteError(SiamkitError, OSError):
    """A file could not be written (a full disk, no permission); names the file and the cause.

    The previous version of the file, if any, is left in place. The CLI exits
    with status 1 on it, as on other system errors.
    """


class LockTimeoutError(SiamkitError, TimeoutError):
    """Another process held a folder's write lock for longer than the caller would wait."""


class ModelFileError(SiamkitError, OSError):
    """A saved model or checkpoint is missing, corrupted or incompatible."""


class GeometryError(ConfigError):
    """Two parts of a pipeline disagree on the distance (euclidean vs cosine)."""


class TrainingError(SiamkitError, RuntimeError):
    """Training cannot go on (diverged, nothing to train on, a bad checkpoint...)."""


class IndexFileError(SiamkitError, OSError):
    """A saved face index is missing, corrupted, truncated or from a newer siamkit."""


class EncoderMismatchError(SiamkitError, ValueError):
    """A face index was built with another encoder (fingerprint or dimension differ)."""


class DuplicateIdError(SiamkitError, ValueError):
    """An id given to a face index is already taken, or repeated in one call."""


class UnknownIdError(SiamkitError, KeyError):
    """A face index was asked for an id it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class EmptyIndexError(SiamkitError, ValueError):
    """A face index holds no item, so it cannot be searched or calibrated."""


class NotCalibratedError(SiamkitError, RuntimeError):
    """A decision needs a threshold, but the index was never calibrated."""


class MissingExtraError(SiamkitError, ImportError):
    """An optional dependency (a ``siamkit[...]`` extra) is not installed."""


class NoFaceError(DataError):
    """No face was found in an image whose aligner's policy is ``"error"``."""


class ExportError(SiamkitError, RuntimeError):
    """An encoder cannot be exported (an operation ONNX lacks, outputs that differ)."""


class KeyFileError(SiamkitError, ValueError):
    """A service's API keys file is unreadable, malformed, or names an unknown key."""
