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
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from siamkit._atomic import sha256_file, write_error, write_json, write_with
from siamkit._batching import PICTURE_DTYPES, as_item_list, embed_in_batches
from siamkit._load_errors import load_error_reason
from siamkit._manifest import plain_file_name, read_manifest
from siamkit._model_files import open_model_file
from siamkit._version import __version__
from siamkit.alignment.base import FaceAligner, aligner_from_description
from siamkit.data.images import load_image, to_8bit, upright
from siamkit.encoders._checks import check_embedding_dim
from siamkit.encoders._schema import FORMAT_NAME, FORMAT_VERSION, check_encoder_manifest
from siamkit.exceptions import (
    ConfigError,
    ExportError,
    MissingExtraError,
    ModelFileError,
    ShapeError,
    UnknownComponentError,
)
from siamkit.geometry import Metric, check_metric
from siamkit.model_folder.layout import ENCODER_FILE, WEIGHTS_FILE, WEIGHTS_STAGING_FILE
from siamkit.registry import Registry
from siamkit.runtime.export_files import is_export
from siamkit.runtime.preprocessing import Preprocessing

#: Models without a face aligner are written as version 1, which older siamkit reads;
#: an aligner changes the embeddings, so a model with one must not load there.
_PLAIN_FORMAT_VERSION = 1
#: The largest weights file :func:`load_encoder` reads, far above any encoder's.
MAX_WEIGHTS_BYTES = 64 << 30
#: The largest ``encoder.json`` read: siamkit writes a few kilobytes.
MAX_MANIFEST_BYTES = 16 << 20

ImageLike = Image.Image | str | os.PathLike | torch.Tensor | np.ndarray


class Encoder(nn.Module, metaclass=ABCMeta):
    """Base class of every encoder: maps a batch of inputs to ``(B, embedding_dim)``.

    Subclasses implement :meth:`forward` and set, usually in ``__init__``:

    * ``embedding_dim`` (int): the size of the embeddings, from 1 to 65536; any
      other value raises :class:`~siamkit.exceptions.ConfigError` where it is set,
      so an impossible encoder is never built;
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
    :meth:`get_config`). Arguments that only pick the weights training starts
    from (a pretrained file, a download) are named in :attr:`starting_weights`:
    :func:`load_encoder` builds with their neutral values, as the saved weights
    replace them, so loading a model never reads a file its configuration names
    nor reaches the network.

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
    #: Constructor arguments that only choose the starting weights, each with its
    #: value for "none" (e.g. ``{"pretrained": False, "weights_file": None}``):
    #: :func:`load_encoder` and :func:`check_encoder_arguments` build with these
    #: values, so they read no file and download nothing.
    starting_weights: ClassVar[Mapping[str, Any]] = {}
    #: Constructor arguments a saved config may leave out, with the value they had
    #: then (a default changed since): :func:`load_encoder` rebuilds such a model
    #: as it was saved, not with today's default.
    saved_defaults: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _record_init_arguments(cls.__dict__["__init__"])  # type: ignore[misc]
        declared = cls.__dict__.get("embedding_dim")
        if declared is not None and not hasattr(declared, "__get__"):  # a value, not a property
            check_embedding_dim(declared, cls.__name__)
        _check_starting_weights(cls)

    def __setattr__(self, name: str, value: Any) -> None:
        # Every encoder's size goes through here, built-in or plugin, before the
        # layers that would use it are built.
        if name == "embedding_dim":
            value = check_embedding_dim(value, type(self).__name__)
        super().__setattr__(name, value)

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
        if value is not None:
            self._check_chips(value)
        self.__dict__["_siamkit_aligner"] = value

    def _check_chips(self, aligner: FaceAligner) -> None:
        """Refuse an aligner cutting other chips than the class declares (``chip_settings``).

        A chip of another size or padding would be resized into the model and
        embedded without any error, only worse.
        """
        import inspect

        wanted = getattr(type(self), "chip_settings", None) or {}
        # Only settings the aligner takes: "none" cuts no chip (its size is unused).
        takes = inspect.signature(type(aligner)).parameters
        wrong = {
            key: getattr(aligner, key)
            for key, value in wanted.items()
            if key in takes and getattr(aligner, key, value) != value
        }
        if wrong:
            given = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
            needed = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
            raise ConfigError(
                f"{type(self).__name__} takes chips cut with {needed}, but this aligner cuts "
                f"them with {given}: build it with those settings (siamkit.training.face_aligner"
                "(name, encoder=...) does)"
            )

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
            ConfigError: ``path`` holds files that are not an earlier export
                (a model folder, say); nothing is written.
            WriteError: a file could not be written; the earlier export, if
                any, is left as it was.
        """
        from siamkit.export.onnx import export_onnx

        return export_onnx(self, path, opset=opset)

    def preprocess(self, item: ImageLike) -> torch.Tensor:
        """One image, path or tensor as a model input tensor.

        Tensors and float arrays are taken as already preprocessed; a uint8 or
        uint16 array is a picture and is preprocessed like a PIL image. Files
        and PIL images are first turned upright by their EXIF orientation
        (:func:`~siamkit.data.images.upright`; arrays and tensors have none).
        Images of more than 8 bits are scaled to 8 (:func:`~siamkit.data.images.to_8bit`),
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
        elif isinstance(item, Image.Image):
            item = upright(item)  # one opened with Image.open keeps its EXIF orientation
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
                2-D one (vectors) is a preprocessed batch. Files and PIL images
                are turned upright by their EXIF orientation.
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
        name, config = _saveable(self)
        directory = Path(path)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(directory, err) from None
        _check_previous_save(directory)  # before anything is written or deleted
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        staging = directory / WEIGHTS_STAGING_FILE
        write_with(staging, lambda handle: torch.save(state, handle))
        weights_sha = sha256_file(staging)
        weights_name = f"encoder-{weights_sha[:16]}.pt"
        try:
            os.replace(staging, directory / weights_name)
        except OSError as err:  # the manifest still names the previous weights
            raise write_error(directory / weights_name, err) from None
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


def _saveable(encoder: Encoder) -> tuple[str, dict[str, Any]]:
    """The registered name and the JSON-able config :func:`load_encoder` rebuilds from.

    Raises:
        ConfigError: the class is not registered, or its config is not JSON.
    """
    name = _registered_name(type(encoder))
    if name is None:
        raise ConfigError(
            f"{type(encoder).__name__} is not registered, so it could not be rebuilt "
            "when loading: decorate the class with @siamkit.register_encoder"
        )
    config = encoder.get_config()
    try:
        json.dumps(config)
    except TypeError as err:
        raise ConfigError(
            f"cannot save {type(encoder).__name__}: its constructor arguments are not "
            f"JSON-serialisable ({err}); override get_config() to return plain values"
        ) from None
    return name, config


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
        stale = (WEIGHTS_FILE.fullmatch(name) and name != keep) or name == WEIGHTS_STAGING_FILE
        temporary = name.startswith((f".{WEIGHTS_STAGING_FILE}.", f".{ENCODER_FILE}."))
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
        if outermost:
            _check_built(self)

    return wrapper


def _check_built(encoder: Encoder) -> None:
    dim = getattr(encoder, "embedding_dim", None)
    if dim is None:
        raise ConfigError(
            f"{type(encoder).__name__} did not set embedding_dim: set it in __init__ (or on "
            "the class) to the size of its embeddings"
        )
    check_embedding_dim(dim, type(encoder).__name__)


def _check_starting_weights(cls: type[Encoder]) -> None:
    declared = cls.__dict__.get("starting_weights")
    if declared is None:
        return
    if not isinstance(declared, Mapping) or not all(isinstance(key, str) for key in declared):
        raise ConfigError(
            f"{cls.__name__}.starting_weights must map argument names to their neutral values"
        )
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(declared) - set(parameters))
    if unknown:
        raise ConfigError(
            f"{cls.__name__}.starting_weights names {unknown}, which its __init__ does not take"
        )


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
    path = directory / ENCODER_FILE
    if path.is_file() and path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ModelFileError(
            f"{path} holds {path.stat().st_size} bytes, more than a model manifest may "
            f"({MAX_MANIFEST_BYTES}): it was edited or damaged; save the model again"
        )
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


def _checked_manifest(directory: Path) -> dict[str, Any]:
    manifest = _read_manifest(directory)
    _weights_name(manifest, directory)  # a name outside the folder is told as such first
    check_encoder_manifest(manifest, directory / ENCODER_FILE)
    return manifest


def check_encoder_arguments(name: str, **kwargs: Any) -> None:
    """Refuse arguments that could not build the encoder ``name``, without building it.

    The encoder is built on PyTorch's meta device, which holds no weights, and
    without its :attr:`~Encoder.starting_weights`, so nothing is read or
    downloaded: an impossible setting fails at once, before any work.

    Raises:
        UnknownComponentError: no encoder is registered as ``name``.
        ConfigError: an argument the encoder does not take, or a value it refuses.

    Examples:
        >>> check_encoder_arguments("compact", embedding_dim=64)
        >>> check_encoder_arguments("compact", embedding_dim=0)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: CompactCNN: embedding_dim must be an integer from 1 ...
    """
    cls = encoder_registry.get(name)
    encoder_registry.check_arguments(name, kwargs)
    try:
        with torch.device("meta"):
            cls(**{**kwargs, **cls.starting_weights})
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build the encoder {name!r} with {kwargs}: {err}") from None
    except Exception:
        pass  # it cannot run on the meta device: the real build will tell


def load_encoder(
    path: str | os.PathLike,
    encoder_class: type[Encoder] | None = None,
    map_location: str | torch.device = "cpu",
) -> Encoder:
    """Rebuild an encoder saved with :meth:`Encoder.save` (or by ``siamkit train``).

    The class is found by its registered name (plugins included) unless
    ``encoder_class`` is given. Every field of the manifest is checked first;
    the weights must be a regular file in the folder matching the manifest's
    checksum, and are loaded with ``weights_only=True``. The encoder is built
    without its :attr:`~Encoder.starting_weights` (nothing is read or
    downloaded), first on PyTorch's meta device to check that the saved weights
    fit it before any memory is taken. The rebuilt encoder's size, metric and
    fingerprint must equal the manifest's. It is returned in eval mode.

    An ONNX export (a ``.onnx`` file, or a folder holding ``encoder.onnx``,
    written by :meth:`Encoder.export_onnx`) loads as a
    :class:`~siamkit.runtime.OnnxEncoder`, run by ONNX Runtime.

    Raises:
        ModelFileError: the directory is not a model, a file is missing,
            corrupted, edited or from a newer siamkit (the message names the
            file and the field).
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
    manifest = _checked_manifest(directory)
    cls = encoder_class or encoder_registry.get(manifest["name"])
    weights_path = directory / _weights_name(manifest, directory)
    state = _saved_state(weights_path, manifest["weights_sha256"], map_location)
    encoder = _rebuilt(cls, manifest["config"], state, directory)
    aligner = _saved_aligner(manifest, directory)
    if aligner is not None and not isinstance(aligner, FaceAligner):
        encoder.aligner = aligner  # refused, with the setter's message
    # Set as saved, chips unchecked: the model was made (and fingerprinted) with this
    # aligner, and a model saved before the chip check must still load.
    encoder.__dict__["_siamkit_aligner"] = aligner
    _check_rebuilt(encoder, manifest, directory)
    return encoder.eval()


def _saved_state(
    weights_path: Path, sha256: str, map_location: str | torch.device
) -> dict[str, torch.Tensor]:
    fix = "save the model again"
    with open_model_file(weights_path, limit=MAX_WEIGHTS_BYTES, what="weights file", fix=fix) as f:
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise ModelFileError(
                f"{weights_path} does not match its checksum in {ENCODER_FILE}: the file is "
                "corrupted or was replaced; save the model again"
            )
        f.seek(0)  # the bytes just checked, from the same open file
        try:
            state = torch.load(f, map_location=map_location, weights_only=True)
        except Exception as err:  # untrusted bytes fail in many ways (see load_checkpoint)
            raise ModelFileError(
                f"cannot load weights from {weights_path}: {load_error_reason(err)}"
            ) from None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ModelFileError(
            f"{weights_path} does not hold a state dict (names to tensors); save the model again"
        )
    return state


def _rebuilt(
    cls: type[Encoder], config: dict[str, Any], state: dict[str, torch.Tensor], directory: Path
) -> Encoder:
    # The saved weights replace the starting ones: build without them, so the
    # config can make the constructor neither read a file nor download.
    arguments = {**cls.saved_defaults, **config, **cls.starting_weights}
    manifest_path = directory / ENCODER_FILE
    probe = _constructed(cls, arguments, manifest_path, meta=True)
    if probe is not None:  # the saved weights bound what the config may allocate
        _check_fits(probe, state, directory, cls)
    encoder = _constructed(cls, arguments, manifest_path, meta=False)
    assert encoder is not None
    try:
        encoder.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"cannot load weights into {cls.__name__}: {err}") from None
    # What was saved, starting weights included: the fingerprint stays the saved one.
    object.__setattr__(encoder, "_siamkit_config", dict(config))
    return encoder


def _constructed(
    cls: type[Encoder], arguments: dict[str, Any], manifest_path: Path, meta: bool
) -> Encoder | None:
    try:
        if meta:
            with torch.device("meta"):
                return cls(**arguments)
        return cls(**arguments)
    except (MissingExtraError, UnknownComponentError):
        raise
    except Exception as err:  # a constructor given a config from a file may fail any way
        if meta and not isinstance(err, (ConfigError, TypeError, ValueError)):
            return None  # it cannot run on the meta device: the real build will tell
        reason = str(err) if len(str(err)) <= 300 else f"{str(err)[:300]}..."
        raise ModelFileError(
            f"{manifest_path}: cannot rebuild {cls.__name__} from the saved config "
            f"({type(err).__name__}: {reason}); the file was edited or damaged, save the "
            "model again"
        ) from None


def _check_fits(
    probe: Encoder, state: dict[str, torch.Tensor], directory: Path, cls: type[Encoder]
) -> None:
    wanted = {key: tuple(value.shape) for key, value in probe.state_dict().items()}
    saved = {key: tuple(value.shape) for key, value in state.items()}
    if wanted == saved:
        return
    missing = sorted(set(wanted) - set(saved))[:3]
    unexpected = sorted(set(saved) - set(wanted))[:3]
    reshaped = [key for key in wanted if key in saved and wanted[key] != saved[key]][:3]
    raise ModelFileError(
        f"cannot load weights into {cls.__name__}: the weights in {directory} do not fit the "
        f"saved config (missing {missing}, unexpected {unexpected}, other shapes {reshaped}); "
        f"{ENCODER_FILE} was edited or damaged, save the model again"
    )


def _check_rebuilt(encoder: Encoder, manifest: dict[str, Any], directory: Path) -> None:
    path = directory / ENCODER_FILE
    name = type(encoder).__name__
    if int(encoder.embedding_dim) != manifest["embedding_dim"]:
        raise ModelFileError(
            f"{path}: embedding_dim is {manifest['embedding_dim']}, but {name} rebuilt from "
            f"it has {encoder.embedding_dim}; save the model again"
        )
    if check_metric(encoder.metric) != manifest["metric"]:
        raise ModelFileError(
            f"{path}: metric is {manifest['metric']!r}, but {name} rebuilt from it compares "
            f"by {encoder.metric!r}; save the model again"
        )
    # Only for the class the manifest names: another class given on purpose
    # (encoder_class) fingerprints differently.
    ours = _registered_name(type(encoder)) == manifest["name"]
    if ours and encoder.fingerprint() != manifest["fingerprint"]:
        raise ModelFileError(
            f"{path}: fingerprint {manifest['fingerprint'][:16]}... is not the loaded "
            "model's: the file was edited or damaged; save the model again"
        )
