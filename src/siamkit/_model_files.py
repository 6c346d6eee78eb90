"""Finding the model files that registry packages ship, without importing them.

The face models come from ``face-recognition-models`` (public-domain dlib
models). Importing that package runs ``pkg_resources``, which recent
setuptools no longer ships, so siamkit locates its folder with
``importlib.util.find_spec`` (which does not run the package) instead.
``SIAMKIT_FACE_MODELS`` may name a folder holding the same files.

A model file's path may come from a user, that variable or a saved file, so it
is read only if it is a regular file of bounded size (:func:`open_model_file`):
a FIFO would block forever, a device such as ``/dev/zero`` never ends.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import stat
from pathlib import Path
from typing import BinaryIO

from siamkit.exceptions import MissingExtraError, ModelFileError

FACE_MODELS_PACKAGE = "face_recognition_models"
FACE_MODELS_ENV = "SIAMKIT_FACE_MODELS"
#: dlib's face ResNet: 150x150 RGB chips to 128-d descriptors (public domain).
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
#: dlib's 5-point landmark model (public domain; the 68-point one is not used).
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
#: The largest dlib model file siamkit reads: the face ResNet's is 22 MB, the
#: landmarks' 9 MB.
MAX_DLIB_FILE_BYTES = 256 << 20
_REINSTALL = "reinstall siamkit[faces] (pip install --force-reinstall face-recognition-models)"


def package_folder(package: str, missing: str) -> Path:
    """The folder of an installed package that ships model files; the package is not imported.

    Raises:
        MissingExtraError: ``missing`` (what to install), when the package is not there.

    Examples:
        >>> package_folder("siamkit", "pip install siamkit").name
        'siamkit'
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(missing)
    return Path(next(iter(spec.submodule_search_locations)))


def face_models_folder() -> Path:
    """The folder holding the face model files.

    Raises:
        MissingExtraError: neither ``SIAMKIT_FACE_MODELS`` nor the
            ``face-recognition-models`` package is there.
    """
    override = os.environ.get(FACE_MODELS_ENV)
    if override:
        return Path(override)
    missing = (
        "the face models are not installed: pip install 'siamkit[faces]' (it brings "
        f"face-recognition-models), or set {FACE_MODELS_ENV} to a folder holding "
        f"{RECOGNITION_MODEL} and {LANDMARK_MODEL}"
    )
    return package_folder(FACE_MODELS_PACKAGE, missing) / "models"


def face_model_file(name: str) -> Path:
    """The path of one face model file (``RECOGNITION_MODEL``, ``LANDMARK_MODEL``).

    Raises:
        MissingExtraError: the file is not installed.
        ModelFileError: the path is there but is not a regular file of at most
            ``MAX_DLIB_FILE_BYTES`` (a folder, a FIFO, a device).
    """
    path = face_models_folder() / name
    if not path.exists():
        raise MissingExtraError(
            f"the face model file {path} is missing: reinstall with "
            "pip install --force-reinstall face-recognition-models"
        )
    with open_model_file(path, limit=MAX_DLIB_FILE_BYTES, what="face model file", fix=_REINSTALL):
        return path


def open_model_file(
    path: str | os.PathLike, *, limit: int, what: str = "model file", fix: str = _REINSTALL
) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file of at most ``limit`` bytes.

    The file is opened without blocking (a FIFO opens at once) and checked on
    the open handle, so what is read is what was checked. Read at most
    ``limit`` bytes from it.

    Args:
        path: The file.
        limit: The most bytes the file may hold.
        what: What the file is, for messages ("dlib model file").
        fix: What to do about a bad file, for messages.

    Raises:
        ModelFileError: the file is missing, unreadable, not a regular file or
            larger than ``limit``; the message names it.

    Examples:
        >>> open_model_file("/dev/zero", limit=100)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ModelFileError: model file /dev/zero is not a regular file ...
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ModelFileError(f"{what} {path} is missing; {fix}") from None
    except OSError as err:
        raise ModelFileError(f"cannot read {what} {path}: {err.strerror or err}; {fix}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError(
                f"{what} {path} is not a regular file (a folder, a FIFO or a device), so "
                f"nothing was read from it; {fix}"
            )
        if info.st_size > limit:
            raise ModelFileError(
                f"{what} {path} holds {info.st_size} bytes, more than the {limit} such a file "
                f"may; {fix}"
            )
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_model_file(
    path: str | os.PathLike,
    *,
    limit: int,
    what: str = "model file",
    fix: str = _REINSTALL,
    sha256: str | None = None,
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see :func:`open_model_file`).

    With ``sha256``, the bytes must be that pinned file: anything else (damaged or
    replaced) is a :class:`ModelFileError` naming the file and ``fix``.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.dat"
        >>> _ = p.write_bytes(b"abc")
        >>> read_model_file(p, limit=3)
        b'abc'
    """
    with open_model_file(path, limit=limit, what=what, fix=fix) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:  # it grew after the check
        raise ModelFileError(f"{what} {path} holds more than {limit} bytes; {fix}")
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise ModelFileError(
                f"{what} {path} has sha256 {digest}, not the {sha256} siamkit was measured "
                f"with (damaged or replaced); {fix}"
            )
    return data
