"""What a FaceIndex keeps with its gallery besides the items, and the encoder check.

One typed record (:class:`GalleryRecord`), saved by every store the same way
(``VectorStore.set_meta``: the FAISS store puts it in its manifest, the
Milvus store in a collection property), and one check of an encoder against
it, used by ``FaceIndex.load`` and ``FaceIndex.connect`` alike.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from siamkit._manifest import check_json_depth
from siamkit.exceptions import (
    ConfigError,
    EncoderMismatchError,
    GeometryError,
    IndexFileError,
    ShapeError,
)
from siamkit.geometry import check_metric
from siamkit.index._inputs import MAX_METADATA_DEPTH
from siamkit.index.calibration import check_far, check_fpir
from siamkit.index.results import Calibration
from siamkit.index.stores.base import VectorStore, store_kind, store_place
from siamkit.thresholds import FpirCalibration, check_threshold, growth_warning

if TYPE_CHECKING:  # the index runs without torch with an ONNX encoder
    from siamkit.encoders.base import Encoder
    from siamkit.runtime import OnnxEncoder


@dataclass
class GalleryRecord:
    """Thresholds, calibrations, the encoder's identity and notes of one gallery.

    Attributes:
        threshold: The 1:1 threshold of ``verify``.
        calibration: The 1:1 calibration report, or None.
        identify_threshold: The 1:N threshold of ``identify``.
        fpir_calibration: The 1:N calibration report, or None.
        encoder: ``{"fingerprint", "class", "embedding_dim"}`` of the encoder
            that made the embeddings, or None.
        extra: JSON-able notes (the CLI records the model folder).
        next_id: The next automatic integer id.

    Examples:
        >>> record = GalleryRecord(threshold=0.4, next_id=3)
        >>> GalleryRecord.from_meta(record.to_meta()) == record
        True
    """

    threshold: float | None = None
    calibration: Calibration | None = None
    identify_threshold: float | None = None
    fpir_calibration: FpirCalibration | None = None
    encoder: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    next_id: int = 0

    def to_meta(self) -> dict[str, Any]:
        """The record as the JSON a store keeps."""
        return {
            "threshold": self.threshold,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "identify_threshold": self.identify_threshold,
            "fpir_calibration": (
                None if self.fpir_calibration is None else self.fpir_calibration.to_dict()
            ),
            "encoder": self.encoder,
            "extra": dict(self.extra),
            "next_id": self.next_id,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], dim: int | None = None) -> GalleryRecord:
        """A record from a store's JSON (``{}``: a gallery nothing was recorded for).

        Every field is checked as a saved index's manifest is (a collection's
        record can be edited by hand): types, ranges, the calibrations against
        their thresholds, the encoder block against ``dim``.

        Raises:
            ConfigError: a missing, mistyped or inconsistent value (the caller
                names the gallery).
        """
        problems = record_problems(meta, dim)
        if problems:
            raise ConfigError("; ".join(problems[:3]))
        calibration = meta.get("calibration")
        fit = meta.get("fpir_calibration")  # absent before index format version 3
        threshold, identify = meta.get("threshold"), meta.get("identify_threshold")
        extra, next_id = meta.get("extra") or {}, meta.get("next_id", 0)
        encoder = meta.get("encoder")
        try:
            return cls(
                threshold=None if threshold is None else check_threshold(threshold),
                calibration=None if calibration is None else Calibration(**calibration),
                identify_threshold=None if identify is None else check_threshold(identify),
                fpir_calibration=None if fit is None else FpirCalibration(**fit),
                encoder=_encoder_record(encoder),
                extra=dict(extra),
                next_id=_next_id(next_id),
            )
        except TypeError as err:
            raise ConfigError(f"a malformed siamkit record ({err})") from None

    @property
    def fingerprint(self) -> str | None:
        """The recorded encoder's fingerprint, or None."""
        return (self.encoder or {}).get("fingerprint")

    def keep(self, fit: Calibration | FpirCalibration) -> None:
        """Keep a fresh calibration and its threshold (1:1 or 1:N, by its type)."""
        if isinstance(fit, FpirCalibration):
            self.identify_threshold, self.fpir_calibration = fit.threshold, fit
        else:
            self.threshold, self.calibration = fit.threshold, fit

    def set_threshold(self, value: float | None, kind: str) -> None:
        """Set the ``"1:1"`` or ``"1:N"`` threshold by hand; a report for another goes.

        Examples:
            >>> record = GalleryRecord()
            >>> record.set_threshold(0.4, "1:N"); record.identify_threshold
            0.4
        """
        value = None if value is None else check_threshold(value)
        if kind == "1:1":
            self.threshold = value
            if self.calibration is not None and self.calibration.threshold != value:
                self.calibration = None  # the report no longer describes the threshold
        else:
            self.identify_threshold = value
            if self.fpir_calibration is not None and self.fpir_calibration.threshold != value:
                self.fpir_calibration = None

    def warnings(self, count: int) -> list[str]:
        """What may make decisions worse than calibrated, for a gallery of ``count`` items."""
        grown = growth_warning(self.fpir_calibration, count)
        found = [] if grown is None else [grown]
        if self.identify_threshold is None and self.threshold is not None:
            found.append(
                "identify uses the 1:1 threshold, which accepts more strangers the larger the "
                "gallery: calibrate 1:N search (target_fpir=...)"
            )
        return found


class SharedRecord:
    """A gallery's record as its store keeps it: re-read before each change, written after.

    Several processes may share a database store (``persistence == "shared"``):
    each change starts from what the store holds now, so one process does not
    undo another's; a store this process alone holds is never re-read. One
    lock serialises the changes of this process (its threads).

    Examples:
        >>> from siamkit.index.stores import FaissStore
        >>> store, shared = FaissStore(2, "cosine"), SharedRecord()
        >>> with shared.changing(store) as record:
        ...     record.threshold = 0.3
        >>> store.get_meta()["threshold"], shared.take_ids(store, 2)
        (0.3, [0, 1])
    """

    def __init__(
        self,
        record: GalleryRecord | None = None,
        keep_own_encoder: Callable[[], bool] = lambda: True,
    ) -> None:
        self.record = record if record is not None else GalleryRecord()
        self.lock = threading.RLock()
        # Asked at each re-read: FaceIndex keeps its encoder block only while it has one.
        self.keep_own_encoder = keep_own_encoder

    def write(self, store: VectorStore | None) -> None:
        """Store the record (nothing to do before the store exists)."""
        if store is not None:
            store.set_meta(self.record.to_meta())

    @contextmanager
    def changing(self, store: VectorStore | None) -> Iterator[GalleryRecord]:
        """The record to change, fresh from a shared store, written back when the block ends."""
        with self.lock:
            self.refresh(store)
            yield self.record
            self.write(store)

    def refresh(self, store: VectorStore | None) -> None:
        """Re-read the record from a shared store (a no-op for one this process holds).

        This process's encoder block is kept rather than the stored one while
        ``keep_own_encoder()`` says so (its encoder was checked against the gallery).

        Raises:
            IndexFileError: the stored record is damaged or was edited.
        """
        if store is None or store.persistence != "shared":
            return
        meta = store.get_meta()
        if not meta:
            return
        try:
            fresh = GalleryRecord.from_meta(meta, store.dim)
        except ConfigError as err:
            raise IndexFileError(
                f"the siamkit record of the {store_kind(store)} gallery {store_place(store)} "
                f"is damaged or was edited ({err}); calibrate it again"
            ) from None
        with self.lock:
            if self.keep_own_encoder() or fresh.encoder is None:
                fresh.encoder = self.record.encoder
            self.record = fresh

    def take_ids(self, store: VectorStore | None, count: int) -> list[int]:
        """The next ``count`` automatic ids (another process may have taken some)."""
        self.refresh(store)
        start = self.record.next_id
        return list(range(start, start + count))

    def advance_ids(self, store: VectorStore | None, new_ids: list[Any]) -> None:
        """Move the next automatic id past the integer ids just stored."""
        ints = [i for i in new_ids if isinstance(i, int)]
        if ints and max(ints) + 1 > self.record.next_id:
            with self.changing(store) as record:
                record.next_id = max([record.next_id, *(i + 1 for i in ints)])


def _encoder_record(value: Any) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"encoder must be an object, got {type(value).__name__}")
    return value


def _next_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"next_id must be a non-negative integer, got {value!r}")
    return value


def encoder_info(encoder: Encoder | OnnxEncoder | None) -> dict[str, Any] | None:
    """What a gallery records of the encoder that made its embeddings."""
    if encoder is None:
        return None
    return {
        "fingerprint": encoder.fingerprint(),
        "class": type(encoder).__name__,
        "embedding_dim": int(encoder.embedding_dim),
    }


def resolve_metric(encoder: Any, metric: str | None) -> str:
    """The index's geometry: the encoder's, which ``metric`` may only repeat."""
    if encoder is None:
        if metric is None:
            raise ConfigError(
                "an index without an encoder needs metric='cosine' or 'euclidean': the "
                "geometry your embeddings were trained with"
            )
        return check_metric(metric)
    own = check_metric(encoder.metric)
    if metric is not None and check_metric(metric) != own:
        raise GeometryError(
            f"the encoder was trained with the {own} metric but the index was asked for "
            f"{metric}: thresholds would mean nothing; drop metric= to use the encoder's"
        )
    return own


def resolve_dim(encoder: Any, dim: int | None) -> int | None:
    """The embedding size: the encoder's, which ``dim`` may only repeat; None if unknown."""
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
        raise ConfigError(f"dim must be a positive integer, got {dim!r}")
    if encoder is None:
        return dim
    own = int(encoder.embedding_dim)
    if dim is not None and dim != own:
        raise ShapeError(f"dim={dim} but the encoder makes {own}-d embeddings; drop dim=")
    return own


def check_encoder(
    record: GalleryRecord, dim: int, metric: str, encoder: Any, where: str, rebuild: str
) -> None:
    """Refuse ``encoder`` unless it made the gallery's embeddings.

    Args:
        record: The gallery's record.
        dim: The gallery's embedding size.
        metric: The gallery's geometry.
        encoder: The encoder to search with, or None (nothing to check).
        where: The gallery, for messages (``"the index in DIR"``).
        rebuild: What to do instead, for messages.

    Raises:
        GeometryError: another metric.
        EncoderMismatchError: another size, or another fingerprint.
    """
    if encoder is None:
        return
    if check_metric(encoder.metric) != metric:
        raise GeometryError(
            f"{where} uses the {metric} metric but the encoder {encoder.metric}: "
            "load it with the encoder it was built with"
        )
    if int(encoder.embedding_dim) != dim:
        raise EncoderMismatchError(
            f"{where} holds {dim}-d embeddings but the encoder makes "
            f"{encoder.embedding_dim}-d ones: load it with the encoder it was built with, "
            f"or {rebuild}"
        )
    saved = record.fingerprint
    own = encoder.fingerprint() if saved is not None else None
    if saved is not None and saved != own:
        raise EncoderMismatchError(
            f"{where} was built with another encoder (fingerprint {saved[:12]}..., this one "
            f"{own[:12]}...): its embeddings would not be comparable. Load it with the model "
            f"it was built with, or {rebuild}"
        )


# -- checks of a record read back (a manifest, or a collection property edited by hand) --
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ENCODER_KEYS = frozenset({"fingerprint", "class", "embedding_dim"})
_FPIR_SOURCES = ("leave-one-person-out", "probes")


def is_int(value: Any) -> bool:
    """True for an int that is not a bool (JSON reads both)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_rate(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def is_hex64(value: Any) -> bool:
    """True for a sha256 written as 64 lowercase hex digits."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def is_notes(value: Any) -> bool:
    """True for ``extra`` notes ``FaceIndex.save`` would write: a dict, nested within bounds."""
    if not isinstance(value, dict):
        return False
    try:
        check_json_depth(value, MAX_METADATA_DEPTH)
    except ValueError:
        return False
    return True


def threshold_problems(manifest: dict[str, Any]) -> list[str]:
    """What is wrong with the thresholds and calibrations of a record or manifest."""
    threshold, calibration = manifest["threshold"], manifest["calibration"]
    problems = []
    if threshold is not None:
        try:
            check_threshold(threshold)
        except ConfigError:
            problems.append(f"invalid threshold {threshold!r}")
    if calibration is not None:
        problems += _calibration_problems(calibration, threshold)
    if "identify_threshold" in manifest:
        problems += _identify_problems(manifest["identify_threshold"], manifest["fpir_calibration"])
    return problems


def _identify_problems(threshold: Any, fit: dict[str, Any] | None) -> list[str]:
    problems = []
    if threshold is not None:
        try:
            check_threshold(threshold)
        except ConfigError:
            problems.append(f"invalid identify_threshold {threshold!r}")
    if fit is not None and not _valid_fpir_calibration(fit, threshold):
        problems.append(f"invalid fpir_calibration {fit!r}")
    return problems


def _valid_fpir_calibration(fit: dict[str, Any], threshold: Any) -> bool:
    names = {f.name for f in fields(FpirCalibration)}
    # "warnings" came with issue 18: files saved before lack it.
    if not names - {"warnings"} <= set(fit) <= names or not _valid_warnings(fit):
        return False
    counts = ("num_mated", "num_non_mated", "gallery_size", "gallery_people")
    ok = (
        all(is_int(fit[k]) and fit[k] >= 0 for k in counts)
        and fit["num_non_mated"] > 0
        and fit["gallery_size"] >= fit["gallery_people"] >= 1
        and _is_rate(fit["fpir"])
        and all(fit[k] is None or _is_rate(fit[k]) for k in ("fnir", "misidentified"))
        and (fit["fnir"] is None) == (fit["num_mated"] == 0)
        and (fit["misidentified"] is None) == (fit["fnir"] is None)
        and isinstance(fit["reliable"], bool)
        and fit["source"] in _FPIR_SOURCES
        and fit["threshold"] == threshold
    )
    try:
        check_fpir(fit["target_fpir"])
    except (ConfigError, TypeError, ValueError):
        return False
    return ok


def _valid_warnings(fit: dict[str, Any]) -> bool:
    """A calibration's warnings, when present: a short list of strings (a tuple in memory)."""
    found = fit.get("warnings", [])
    return (
        isinstance(found, (list, tuple))
        and len(found) <= 16
        and all(isinstance(w, str) for w in found)
    )


def record_problems(meta: dict[str, Any], dim: int | None) -> list[str]:
    """What is wrong with a gallery record kept outside a manifest (a collection property).

    The checks a manifest's thresholds, calibrations and encoder block pass
    (:func:`check_manifest`), for a record a person may have edited by hand.

    Examples:
        >>> record_problems({"threshold": 0.5, "extra": "notes"}, 8)
        ["invalid extra 'notes'"]
    """
    threshold, calibration = meta.get("threshold"), meta.get("calibration")
    fit, encoder = meta.get("fpir_calibration"), meta.get("encoder")
    problems = []
    if calibration is not None and not isinstance(calibration, dict):
        problems.append(f"invalid calibration {calibration!r}")
    if fit is not None and not isinstance(fit, dict):
        problems.append(f"invalid fpir_calibration {fit!r}")
    if encoder is not None and not isinstance(encoder, dict):
        problems.append(f"invalid encoder block {encoder!r}")
    if problems:
        return problems
    record = {"identify_threshold": None, "fpir_calibration": None, **meta}
    problems += threshold_problems({**record, "threshold": threshold, "calibration": calibration})
    if encoder is not None:
        own_dim = dim if dim is not None else encoder.get("embedding_dim")
        problems += encoder_problems({"encoder": encoder, "dim": own_dim})
    extra, next_id = meta.get("extra", {}), meta.get("next_id", 0)
    if isinstance(extra, dict) and not is_notes(extra):
        problems.append(f"extra nested deeper than {MAX_METADATA_DEPTH} levels")
    elif not isinstance(extra, dict):
        problems.append(f"invalid extra {extra!r}")
    if not (is_int(next_id) and next_id >= 0):
        problems.append(f"invalid next_id {next_id!r}")
    return problems


def _calibration_problems(calibration: dict[str, Any], threshold: Any) -> list[str]:
    names = {f.name for f in fields(Calibration)}
    # "warnings" came with issue 18: files saved before lack it.
    if not names - {"warnings"} <= set(calibration) <= names:
        return [f"calibration must have exactly the keys {sorted(names)}"]
    if not _valid_warnings(calibration):
        return [f"invalid calibration warnings {calibration['warnings']!r}"]
    counts, rates = ("num_genuine", "num_impostor"), ("far", "tar")
    ok = (
        all(is_int(calibration[k]) and calibration[k] >= 0 for k in counts)
        and all(_is_rate(calibration[k]) for k in rates)
        and isinstance(calibration["reliable"], bool)
        and calibration["source"] in ("gallery", "pairs")
        and calibration["threshold"] == threshold
    )
    try:
        check_far(calibration["target_far"])
    except (ConfigError, TypeError, ValueError):
        ok = False
    return [] if ok else [f"invalid calibration {calibration!r}"]


def encoder_problems(manifest: dict[str, Any]) -> list[str]:
    """What is wrong with the encoder block (against the ``dim`` beside it)."""
    encoder = manifest["encoder"]
    if encoder is None:
        return []
    ok = (
        set(encoder) == _ENCODER_KEYS
        and is_hex64(encoder["fingerprint"])
        and isinstance(encoder["class"], str)
        and encoder["embedding_dim"] == manifest["dim"]
        and is_int(encoder["embedding_dim"])
    )
    return [] if ok else [f"invalid encoder block {encoder!r}"]
