"""The ``Encoder`` contract: an image (or vector) in, an embedding out.

Subclass :class:`Encoder`, implement ``forward`` and set ``embedding_dim``; the
base class then gives the encoder batched inference (:meth:`Encoder.embed`),
its preprocessing (:attr:`Encoder.transform`), and saving and loading
(:meth:`Encoder.save`, :func:`load_encoder`). siamkit's own encoders use
nothing more than this public contract.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import re
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from siamkit._atomic import sha256_file, write_json, write_with
from siamkit._batching import PICTURE_DTYPES, as_item_list, embed_in_batches
from siamkit._manifest import plain_file_name, read_manifest
from siamkit._version import __version__
from siamkit.alignment.base import FaceAligner, aligner_from_description
from siamkit.data.images import load_image, to_8bit
from siamkit.exceptions import (
    ConfigError,
    ExportError,
    ModelFileError,
    ShapeError,
    UnknownComponentError,
)
from siamkit.geometry import Metric, check_metric
from siamkit.registry import Registry
from siamkit.runtime._format import is_export
from siamkit.runtime.preprocessing import Preprocessing

ENCODER_FILE = "encoder.json"
FORMAT_NAME = "siamkit-encoder"
FORMAT_VERSION = 2
#: Models without a face aligner are written as version 1, which older siamkit reads;
#: an aligner changes the embeddings, so a model with one must not load there.
_PLAIN_FORMAT_VERSION = 1
#: The only weights file names a manifest may name: what :meth:`Encoder.save` writes.
WEIGHTS_FILE = re.compile(r"encoder-[0-9a-f]{16}\.pt")
_STAGING_FILE = ".encoder-weights.pt"

ImageLike = Image.Image | str | os.PathLike | torch.Tensor | np.ndarray


class Encoder(nn.Module, metaclass=ABCMeta):
    """Base class of every encoder: maps a batch of inputs to ``(B, embedding_dim)``.

    Subclasses implement :meth:`forward` and set, usually in ``__init__``:

    * ``embedding_dim`` (int): the size of the embeddings;
    * ``metric`` (``"euclidean"`` or ``"cosine"``, default euclidean): the geometry
      the embeddings are compared in, used by the loss, thresholds and the index;
    * ``in_channels`` (1 for greyscale, 3 for RGB) and ``input_size`` ``(H, W)``,
      which drive the default :attr:`transform`; ``input_size=None`` means
      no resizing (the model accepts any size, or inputs are vectors);
    * optionally ``default_margin``, the contrastive margin suited to the
      embeddings' scale (e.g. 2.0 for unit vectors compared by Euclidean distance);
    * optionally ``input_range``, the range of the pixel values its :attr:`transform`
      produces (default ``(-1.0, 1.0)``, the default transform's).

    The constructor's arguments are recorded automatically so :meth:`save` can
    rebuild the encoder; they must be JSON-serialisable (or override
    :meth:`get_config`).

    Examples:
        >>> import torch, siamkit
        >>> class Tiny(siamkit.Encoder):
        ...     def __init__(self, embedding_dim: int = 8):
        ...         super().__init__()
        ...         self.embedding_dim = embedding_dim
        ...         self.in_channels, self.input_size = 1, (16, 16)
        ...         self.net = torch.nn.Sequential(
        ...             torch.nn.Flatten(), torch.nn.Linear(256, embedding_dim))
        ...     def forward(self, x):
        ...         return self.net(x)
        >>> Tiny().embed(torch.zeros(3, 1, 16, 16)).shape
        (3, 8)
    """

    embedding_dim: int
    metric: Metric = "euclidean"
    in_channels: int = 1
    input_size: tuple[int, int] | None = None
    #: The contrastive margin that suits this encoder's embedding scale; the
    #: Trainer uses it when ``TrainConfig.margin`` is None.
    default_margin: float | None = None
    #: The range of the pixel values :attr:`transform` produces; training's
    #: augmentation scales its brightness changes to it.
    input_range: tuple[float, float] = (-1.0, 1.0)
    #: Set by the registry; the name :func:`load_encoder` rebuilds the class from.
    registry_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_init_arguments(cls.__dict__["__init__"])  # type: ignore[misc]

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a preprocessed batch ``(B, ...)`` to embeddings ``(B, embedding_dim)``."""

    # -- configuration -----------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this encoder (recorded from ``__init__``)."""
        config = self.__dict__.get("_siamkit_config")
        if config is None:
            return {}
        if isinstance(config, ConfigError):
            raise config
        return dict(config)

    # -- preprocessing -----------------------------------------------------------
    @property
    def aligner(self) -> FaceAligner | None:
        """The face aligner applied to every image before :attr:`transform` (None: none).

        It is part of the model: :meth:`save` records it, :func:`load_encoder`
        rebuilds it and the fingerprint covers it, so :meth:`embed`, a face
        index and ``siamkit eval`` all align the same way with no extra step.

        Examples:
            >>> import siamkit
            >>> enc = siamkit.create_encoder("compact")
            >>> enc.aligner = siamkit.create_aligner("none")
            >>> enc.aligner
            NoAligner()
        """
        return self.__dict__.get("_siamkit_aligner")

    @aligner.setter
    def aligner(self, value: FaceAligner | None) -> None:
        if value is not None and not isinstance(value, FaceAligner):
            raise ConfigError(
                f"an encoder's aligner must be a siamkit.FaceAligner or None, got "
                f"{type(value).__name__}; build one with siamkit.create_aligner(name)"
            )
        self.__dict__["_siamkit_aligner"] = value

    @property
    def image_mode(self) -> str:
        """PIL mode images are converted to: ``"L"`` for 1 channel, ``"RGB"`` for 3."""
        return "L" if self.in_channels == 1 else "RGB"

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Deterministic preprocessing of one PIL image into the model's input tensor.

        The default converts to :attr:`image_mode`, resizes to ``input_size`` and
        scales pixels to ``[-1, 1]``. Training and :meth:`embed` both use it, so
        what the model saw in training is what it sees at inference. Override it
        for other preprocessing.
        """
        return functools.partial(default_transform, mode=self.image_mode, size=self.input_size)

    def preprocessing(self) -> Preprocessing | None:
        """What :attr:`transform` does, as data, for an export to run without torch.

        The default transform is described exactly; an encoder that overrides
        :attr:`transform` returns None unless it also overrides this method
        (:meth:`export_onnx` then says so).

        Examples:
            >>> import siamkit
            >>> siamkit.create_encoder("compact").preprocessing().size
            (56, 46)
        """
        if type(self).transform is not Encoder.transform:
            return None
        return Preprocessing(self.image_mode, self.input_size, 1 / 127.5, -1.0)

    def example_input(self, batch: int) -> torch.Tensor:
        """A batch of inputs in the model's range, for tracing an export (seeded).

        The default draws pictures through :meth:`preprocessing`; an encoder
        of vectors (or of a custom transform) overrides it.

        Raises:
            ExportError: there is no preprocessing description to draw from.
        """
        spec = self.preprocessing()
        if spec is None:
            raise ExportError(
                f"{type(self).__name__} overrides transform, so siamkit cannot describe its "
                "preprocessing for the runtime: override preprocessing() and example_input() "
                "(or export_onnx())"
            )
        channels = 1 if spec.mode == "L" else 3
        height, width = spec.size or (64, 64)
        generator = torch.Generator().manual_seed(batch)
        pixels = torch.randint(0, 256, (batch, channels, height, width), generator=generator)
        return pixels.float() * spec.scale + spec.offset

    def export_onnx(self, path: str | os.PathLike, opset: int | None = None) -> Path:
        """Export to ONNX for ONNX Runtime: ``path`` (a ``.onnx`` file) and its manifest.

        The graph holds the network and everything after it (flip averaging,
        normalisation, the fitted whitening); the manifest beside it records
        the preprocessing (:meth:`preprocessing`), the aligner and this
        encoder's fingerprint. :func:`load_encoder` reads it back without torch.
        Override it for an encoder whose export needs special handling.

        Raises:
            ExportError: the graph cannot be exported (the message names the
                operation), or its outputs differ from PyTorch's.
        """
        from siamkit.export.onnx import export_onnx

        return export_onnx(self, path, opset=opset)

    def preprocess(self, item: ImageLike) -> torch.Tensor:
        """One image, path or tensor as a model input tensor.

        Tensors and float arrays are taken as already preprocessed; a uint8 or
        uint16 array is a picture and is preprocessed like a PIL image. Images
        of more than 8 bits are scaled to 8 (:func:`~siamkit.data.images.to_8bit`),
        then go through the :attr:`aligner`, if any.

        Raises:
            NoFaceError: the aligner found no face and its policy is ``"skip"``
                or ``"error"``.
        """
        if isinstance(item, torch.Tensor):
            return item.float()
        if isinstance(item, np.ndarray) and item.dtype in PICTURE_DTYPES:
            item = Image.fromarray(item)
        elif isinstance(item, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(item, dtype=np.float32))
        name = str(item) if isinstance(item, (str, os.PathLike)) else "image"
        if isinstance(item, (str, os.PathLike)):
            item = load_image(item, mode=self.image_mode)
        if isinstance(item, Image.Image):
            image = to_8bit(item)
            if self.aligner is not None:
                image = self.aligner.align(image, name=name)
            return self.transform(image.convert(self.image_mode))
        raise ConfigError(
            f"cannot embed an object of type {type(item).__name__}: pass PIL images, "
            "file paths, or preprocessed tensors"
        )

    # -- inference ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the encoder's parameters (CPU if it has none)."""
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    @torch.no_grad()
    def embed(self, images: ImageLike | Iterable[ImageLike], batch_size: int = 64) -> np.ndarray:
        """Embed images in eval mode, without gradients, in batches.

        Args:
            images: One item or a sequence of PIL images, file paths, uint8
                pictures, or preprocessed tensors; a 4-D tensor (images) or a
                2-D one (vectors) is a preprocessed batch.
            batch_size: How many inputs go through the model at once.

        Returns:
            A float32 array of shape ``(N, embedding_dim)``.

        Raises:
            ImageReadError: a path is not a readable image (named in the message).
            NonFiniteError: the model produced NaN or infinity.
        """
        items = as_item_list(images)
        was_training = self.training
        self.eval()
        try:
            return embed_in_batches(items, batch_size, self._embed_batch, self.embedding_dim)
        finally:
            self.train(was_training)

    def _embed_batch(self, items: Sequence[ImageLike]) -> np.ndarray:
        batch = torch.stack([self.preprocess(item) for item in items]).to(self.device)
        out = self(batch)
        if out.ndim != 2 or out.shape[1] != self.embedding_dim:
            raise ShapeError(
                f"{type(self).__name__}.forward returned shape {tuple(out.shape)}, expected "
                f"(batch, {self.embedding_dim}); fix forward() or embedding_dim"
            )
        return out.float().cpu().numpy()

    # -- persistence -------------------------------------------------------------
    def fingerprint(self) -> str:
        """A SHA-256 of the class name, config and weights: equal fingerprints, equal models.

        Examples:
            >>> import siamkit
            >>> enc = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
            >>> len(enc.fingerprint())
            64
        """
        digest = hashlib.sha256()
        header = {"name": _registered_name(type(self)), "config": self.get_config()}
        if self.aligner is not None:
            header["aligner"] = self.aligner.describe()
        digest.update(json.dumps(header, sort_keys=True, default=str).encode())
        for key, tensor in sorted(self.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Save weights and config into directory ``path``; :func:`load_encoder` reads it.

        The weights go to a file named by their checksum and the JSON manifest is
        replaced last, atomically: a crash at any moment leaves the previous save
        or the new one loadable, never a mix.

        Examples:
            >>> import tempfile, siamkit
            >>> enc = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2)
            >>> out = enc.save(tempfile.mkdtemp())
            >>> siamkit.load_encoder(out).fingerprint() == enc.fingerprint()
            True
        """
        name = _registered_name(type(self))
        if name is None:
            raise ConfigError(
                f"{type(self).__name__} is not registered, so it could not be rebuilt "
                "when loading: decorate the class with @siamkit.register_encoder"
            )
        config = self.get_config()
        try:
            json.dumps(config)
        except TypeError as err:
            raise ConfigError(
                f"cannot save {type(self).__name__}: its constructor arguments are not "
                f"JSON-serialisable ({err}); override get_config() to return plain values"
            ) from None
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        _check_previous_save(directory)  # before anything is written or deleted
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        staging = directory / _STAGING_FILE
        write_with(staging, lambda handle: torch.save(state, handle))
        weights_sha = sha256_file(staging)
        weights_name = f"encoder-{weights_sha[:16]}.pt"
        os.replace(staging, directory / weights_name)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION if self.aligner else _PLAIN_FORMAT_VERSION,
            "name": name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": config,
            "embedding_dim": int(self.embedding_dim),
            "metric": check_metric(self.metric),
            "weights": weights_name,
            "weights_sha256": weights_sha,
            "fingerprint": self.fingerprint(),
            "siamkit_version": __version__,
            "torch_version": torch.__version__,
            "extra": extra or {},
        }
        if self.aligner is not None:
            manifest["aligner"] = self.aligner.describe()
        write_json(directory / ENCODER_FILE, manifest)
        _collect_garbage(directory, keep=weights_name)
        return directory


def _check_previous_save(directory: Path) -> None:
    """Refuse to save over a manifest that names a file siamkit would not write."""
    if (directory / ENCODER_FILE).exists():
        _weights_name(_read_manifest(directory), directory)


def _weights_name(manifest: dict[str, Any], directory: Path) -> str:
    return plain_file_name(
        manifest.get("weights"),
        WEIGHTS_FILE,
        error=ModelFileError,
        manifest=directory / ENCODER_FILE,
    )


def _collect_garbage(directory: Path, keep: str) -> None:
    # Old weights, and what a save killed midway left behind: its staging file,
    # write_with's temporary copy of it, or weights no manifest names.
    for path in directory.iterdir():
        name = path.name
        stale = (WEIGHTS_FILE.fullmatch(name) and name != keep) or name == _STAGING_FILE
        temporary = name.startswith((f".{_STAGING_FILE}.", f".{ENCODER_FILE}."))
        if stale or (temporary and name.endswith(".tmp")):
            path.unlink(missing_ok=True)


def default_transform(
    image: Image.Image, mode: str = "L", size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Convert, resize to ``size`` ``(H, W)`` and scale a PIL image to a ``[-1, 1]`` tensor.

    Examples:
        >>> default_transform(Image.new("L", (92, 112)), size=(56, 46)).shape
        torch.Size([1, 56, 46])
    """
    if image.mode != mode:
        image = image.convert(mode)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _record_init_arguments(init: Callable[..., None]) -> Callable[..., None]:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Encoder, *args: Any, **kwargs: Any) -> None:
        outermost = "_siamkit_config" not in self.__dict__
        if outermost:
            object.__setattr__(self, "_siamkit_config", _bind_config(signature, self, args, kwargs))
        init(self, *args, **kwargs)

    return wrapper


def _bind_config(
    signature: inspect.Signature, self: Encoder, args: tuple, kwargs: dict
) -> dict[str, Any] | ConfigError:
    try:
        bound = signature.bind(self, *args, **kwargs)
    except TypeError:
        return {}  # the real __init__ call raises the proper TypeError
    bound.apply_defaults()
    config: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                return ConfigError(
                    f"{type(self).__name__} was built with *args, which cannot be saved; "
                    "pass keyword arguments or override get_config()"
                )
        elif kind is inspect.Parameter.VAR_KEYWORD:
            config.update(value)
        else:
            config[name] = list(value) if isinstance(value, tuple) else value
    return config


encoder_registry: Registry[Encoder] = Registry("encoder", group="siamkit.encoders", base=Encoder)


def _registered_name(cls: type) -> str | None:
    return encoder_registry.name_of(cls)


def register_encoder(name: str | type | None = None, *, overwrite: bool = False) -> Any:
    """Class decorator registering an :class:`Encoder` subclass under a name.

    Registered encoders can be created by name (:func:`create_encoder`, the CLI's
    ``--encoder``) and rebuilt by :func:`load_encoder`.

    Examples:
        >>> import torch, siamkit
        >>> @siamkit.register_encoder("doc-linear")
        ... class Linear(siamkit.Encoder):
        ...     def __init__(self, dim: int = 3):
        ...         super().__init__()
        ...         self.embedding_dim = dim
        ...         self.fc = torch.nn.Linear(5, dim)
        ...     def forward(self, x):
        ...         return self.fc(x)
        >>> "doc-linear" in siamkit.list_encoders()
        True
    """
    return encoder_registry.register(name, overwrite=overwrite)


def create_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name`` (built-in or plugin) with ``kwargs``.

    Examples:
        >>> import siamkit
        >>> siamkit.create_encoder("compact").embedding_dim
        128
    """
    return encoder_registry.create(name, **kwargs)


def list_encoders() -> list[str]:
    """Names of all available encoders, plugins included.

    Examples:
        >>> import siamkit
        >>> {"compact", "tutorial", "resnet", "mlp"} <= set(siamkit.list_encoders())
        True
    """
    return encoder_registry.names()


def _saved_aligner(manifest: dict[str, Any], directory: Path) -> FaceAligner | None:
    try:
        return aligner_from_description(manifest.get("aligner"))
    except UnknownComponentError:
        raise
    except ConfigError as err:
        raise ModelFileError(f"{directory / ENCODER_FILE}: bad aligner block: {err}") from None


def _read_manifest(directory: Path) -> dict[str, Any]:
    return read_manifest(
        directory / ENCODER_FILE,
        format_name=FORMAT_NAME,
        max_version=FORMAT_VERSION,
        error=ModelFileError,
        what="encoder manifest",
        missing=f"{directory} is not a siamkit model directory: {ENCODER_FILE} is missing. "
        "Pass the directory written by Encoder.save() or `siamkit train --out`",
        resave="save the model again",
    )


def load_encoder(
    path: str | os.PathLike,
    encoder_class: type[Encoder] | None = None,
    map_location: str | torch.device = "cpu",
) -> Encoder:
    """Rebuild an encoder saved with :meth:`Encoder.save` (or by ``siamkit train``).

    The class is found by its registered name (plugins included) unless
    ``encoder_class`` is given. Weights are loaded with ``weights_only=True`` and
    checked against the manifest's checksum. The encoder is returned in eval mode.

    An ONNX export (a ``.onnx`` file, or a folder holding ``encoder.onnx``,
    written by :meth:`Encoder.export_onnx`) loads as a
    :class:`~siamkit.runtime.OnnxEncoder`, run by ONNX Runtime.

    Raises:
        ModelFileError: the directory is not a model, a file is missing,
            corrupted or from a newer siamkit.
        UnknownComponentError: the encoder's class is not registered here.

    Examples:
        >>> import tempfile, siamkit
        >>> d = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2).save(tempfile.mkdtemp())
        >>> type(siamkit.load_encoder(d)).__name__
        'MLPEncoder'
    """
    if encoder_class is None and is_export(path):
        from siamkit.runtime.onnx import OnnxEncoder

        return OnnxEncoder(path)  # type: ignore[return-value]
    directory = Path(path)
    manifest = _read_manifest(directory)
    cls = encoder_class or encoder_registry.get(manifest["name"])
    weights_path = directory / _weights_name(manifest, directory)
    if not weights_path.is_file():
        raise ModelFileError(f"weights file {weights_path} is missing; save the model again")
    if sha256_file(weights_path) != manifest.get("weights_sha256"):
        raise ModelFileError(
            f"{weights_path} does not match its checksum in {ENCODER_FILE}: the file is "
            "corrupted or was replaced; save the model again"
        )
    try:
        encoder = cls(**manifest.get("config", {}))
    except TypeError as err:
        raise ModelFileError(
            f"cannot rebuild {cls.__name__} from the saved config: {err}"
        ) from None
    try:
        state = torch.load(weights_path, map_location=map_location, weights_only=True)
        encoder.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        raise ModelFileError(f"cannot load weights from {weights_path}: {err}") from None
    encoder.aligner = _saved_aligner(manifest, directory)
    if int(encoder.embedding_dim) != int(manifest["embedding_dim"]):
        raise ModelFileError(
            f"{cls.__name__} now has embedding_dim {encoder.embedding_dim}, the saved "
            f"model {manifest['embedding_dim']}"
        )
    return encoder.eval()
