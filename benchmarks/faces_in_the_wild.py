"""Faces in whole web photos: face_recognition's way, siamkit before, and each new stage.

The set is the in-the-wild CelebA development photos that
``../shared/data/celeba-wild-dev/build.py`` builds (``--data``: one folder per
identity, whole photos, 97 people, 2,144 images). People are split into 4
subject-disjoint folds: identities sorted as strings, ``fold = position % 4``
(the split the YuNet threshold was chosen on, folds 0-2). Every pipeline embeds
every photo once, and per fold:

* AUC and EER over all pairs of photos within the fold
  (:func:`siamkit.evaluation.verification_metrics`);
* TAR at FAR 1e-3: the threshold is fitted on the pairs of the other three
  folds (:func:`siamkit.evaluation.tar_at_far`, whose threshold rule is the face
  index's) and applied to this fold's pairs (:func:`siamkit.thresholds.accepts`);
* rank-1: leave-one-out nearest neighbour within the fold
  (:func:`siamkit.evaluation.rank1_leave_one_out`);
* faces found: the share of photos where the pipeline found a face (the rest are
  embedded whole, as each pipeline's fallback does).

The tables give the mean over the 4 folds (the JSON keeps each fold).

Rows, in one run:

1. **face_recognition's way** (the anchor): what the ``face_recognition``
   package does, through dlib's own API (the package itself would build dlib
   from source): the photo read with Pillow and shrunk so its longer side is at
   most 1024 px (``Image.thumbnail``, the usual user step; the package has no
   such bound), ``dlib.get_frontal_face_detector()`` with upsample 1, the
   largest face (boxes trimmed to the photo, as ``face_locations`` does), the
   5-point predictor and ``dlib.face_recognition_model_v1.compute_face_descriptor``
   from ``face_recognition_models``, euclidean distance; no face: the whole
   photo is the face box. A sub-row scores it on the photos where HOG found a
   face only (what the detector, not the network, costs).
2. **siamkit before**: ``dlib-face`` (frozen, as the face preset builds it:
   :func:`siamkit.training.recipes.face_encoder`, with ``flip_average=False``,
   the previous default) behind ``create_aligner("dlib")`` with its defaults
   (second look on), through ``encoder.embed``.
3. **yunet**: the same encoder (no flip) behind ``create_aligner("yunet")`` (its
   defaults, its ``choose`` rule included), through ``encoder.embed``.
4. **+ flip**: row 3 with test-time flip averaging, ``dlib-face``'s
   ``flip_average=True`` (the mean of the chip's and its mirror's embeddings),
   through ``encoder.embed``; checked equal to the mirror done here (the chip
   mirrored with Pillow, both embedded, the mean prepared for the encoder's
   metric by :func:`siamkit.geometry.prepare`).
5. **which face**: the yunet pipeline keeping every face of every photo
   (``aligner.find_faces``, ``aligner.chip``, the encoder on the chips; checked
   equal to rows 3 and 4 for the policy of the aligner's ``choose``), scored
   with the face chosen by each policy: largest (what ``align`` does), highest
   detector score, most central (box centre nearest the photo centre), largest
   area x score, each with and without the flip. Photos without a face are
   embedded as ``align`` falls back.

Speed: for rows 1-4, photos per second end to end (read, detect, align, embed)
on ``--timing-photos`` photos (every k-th photo of the set), in a fresh process
pinned to ``--threads`` CPUs with that many torch, OpenCV and BLAS threads,
after a warm-up on 5 photos outside the subset; peak memory is that process's
peak resident memory (``ru_maxrss``) above its level once the models are
loaded: what embedding the photos adds (rows 2-4: one ``encoder.embed`` call on
the subset, in its default batches of 64; row 1: one photo after another, as
face_recognition works). The CPU time other
processes used during each timing is recorded; ``--timing-only`` re-times the
rows and keeps the accuracy figures of the last results file (for a quiet
machine). The policies of row 5 cost what row 3 costs (the choice is free).
The accuracy passes embed one photo at a time (for its faces-found flag) with
``--accuracy-threads`` torch threads (default 1: the numbers do not depend on
it, and two OpenMP threads on two shared cores spin-wait for each other, up to
ten times slower per forward pass than one).

Embeddings are cached in ``--cache`` per row, keyed by the row's procedure, the
aligner's ``describe()``, the encoder's fingerprint, the source files of both
(a template can change under the same description) (or, for row 1, dlib's
version and model files) and the set's listing, so a rerun recomputes only what
changed; the results say which rows came from the cache.

Writes ``benchmarks/results/faces_in_the_wild.json`` and ``.md``.

Usage::

    python benchmarks/faces_in_the_wild.py --data /work/data/celeba-wild-dev
    python benchmarks/faces_in_the_wild.py --data /work/data/celeba-wild-dev --timing-only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
NAME = "faces_in_the_wild"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "siamkit-bench-cache" / NAME
#: The listing sha256 that ``build.py`` prints for the 97 people and 2,144 photos.
EXPECTED_LISTING = "eaf61fd75136f3a5c2fd317ad67f3310751613eadddcd97f823d837ecb83e049"
FOLDS = 4
TARGET_FAR = 1e-3
#: The fold the yunet aligner's settings were not chosen on (another helper chose on 0-2).
HELD_OUT_FOLD = 3
#: face_recognition's users shrink photos to this longer side first (the issue's anchor).
FR_MAX_SIDE = 1024
FR_UPSAMPLE = 1
WARM_UP_PHOTOS = 5
#: Bump when a row's procedure changes, so its cached embeddings are recomputed.
PROCEDURE_VERSION = 1
ROW_LABELS = {
    "face_recognition": (
        "face_recognition's way (dlib HOG, upsample 1, photos shrunk to <= 1024 px)"
    ),
    "face_recognition_found": "the same, scored only on the photos where HOG found a face",
    "siamkit_before": (
        "siamkit before (`dlib-face` behind the `dlib` aligner; its second look now calibrated)"
    ),
    "yunet": "`dlib-face` behind the `yunet` aligner",
    "yunet_flip": "+ test-time flip averaging (`flip_average=True`)",
    "fusion": "+ SFace fused at embedding level (`dlib-sface`, flip-averaged)",
    "sface": "SFace alone (the fusion's SFace part)",
}
POLICIES = ("largest", "highest score", "most central", "largest x score")
#: The policy of each ``FaceAligner.choose`` rule, as this benchmark names them.
ALIGNER_POLICIES = {"largest": "largest", "score": "highest score"}
TIMED_ROWS = ("face_recognition", "siamkit_before", "yunet", "yunet_flip", "fusion")
#: The dlib weights tried for the fusion (``dlib_weight``), to report how the default
#: compares with the weight chosen on the other folds (see :func:`fusion_weights`).
FUSION_WEIGHTS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


# -- the set -------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoSet:
    """The photos, their identities and folds, and the build's listing sha256."""

    paths: list[Path]
    labels: np.ndarray
    folds: np.ndarray
    listing: str

    @property
    def people(self) -> int:
        return len(set(self.labels.tolist()))


def read_set(root: Path) -> PhotoSet:
    """Every photo under ``root/<identity>/``, folds by identity (sorted as strings)."""
    people = sorted(p.name for p in root.iterdir() if p.is_dir())
    paths, labels, folds = [], [], []
    digest = hashlib.sha256()
    for position, person in enumerate(people):
        for name in sorted(f.name for f in (root / person).iterdir() if f.is_file()):
            path = root / person / name
            # build.py's listing: "<identity>/<file> <sha256 of the bytes>\n" per photo.
            digest.update(
                f"{person}/{name} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode()
            )
            paths.append(path)
            labels.append(person)
            folds.append(position % FOLDS)
    if not paths:
        raise SystemExit(f"no photos under {root}: pass --data, the folder build.py wrote")
    return PhotoSet(paths, np.array(labels), np.array(folds), digest.hexdigest())


def timing_subset(photos: PhotoSet, count: int) -> tuple[list[Path], list[Path]]:
    """``count`` photos spread over the set (every k-th), and warm-up photos outside them."""
    step = max(1, len(photos.paths) // count)
    chosen = list(range(0, len(photos.paths), step))[:count]
    taken = set(chosen)
    spare = [i for i in range(len(photos.paths)) if i not in taken][:WARM_UP_PHOTOS]
    return [photos.paths[i] for i in chosen], [photos.paths[i] for i in spare]


# -- threads -------------------------------------------------------------------------
def thread_environment(threads: int) -> dict[str, str]:
    """The environment of a child limited to ``threads`` threads in every library."""
    value = str(threads)
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
    return dict(os.environ, **dict.fromkeys(names, value))


def limit_threads(threads: int) -> None:
    """torch and OpenCV to ``threads`` threads (dlib's HOG is single-threaded)."""
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def progress(items: Sequence[Any], desc: str) -> Iterator[Any]:
    """``items`` with a tqdm bar on a terminal, silently otherwise."""
    from tqdm.auto import tqdm

    return iter(tqdm(items, desc=desc, unit="photo", disable=not sys.stderr.isatty()))


# -- the pipelines -------------------------------------------------------------------
class FaceRecognitionWay:
    """face_recognition's pipeline, through dlib's own API (row 1)."""

    row = "face_recognition"

    def __init__(self) -> None:
        import dlib

        from siamkit._model_files import LANDMARK_MODEL, RECOGNITION_MODEL, face_model_file

        self.dlib = dlib
        self.model_files = [face_model_file(LANDMARK_MODEL), face_model_file(RECOGNITION_MODEL)]
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(self.model_files[0]))
        self.recognizer = dlib.face_recognition_model_v1(str(self.model_files[1]))

    def key(self) -> dict[str, Any]:
        return {
            "dlib": self.dlib.__version__,
            "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.model_files},
            "max_side": FR_MAX_SIDE,
            "upsample": FR_UPSAMPLE,
        }

    def embed_photo(self, path: Path) -> tuple[np.ndarray, bool]:
        """The descriptor of the largest face (or of the whole photo) and whether one was found."""
        from PIL import Image

        with Image.open(path) as image:  # face_recognition.load_image_file: no EXIF turn
            image = image.convert("RGB")
        image.thumbnail((FR_MAX_SIDE, FR_MAX_SIDE))
        pixels = np.asarray(image)
        height, width = pixels.shape[:2]
        boxes = self.detector(pixels, FR_UPSAMPLE)
        if len(boxes):
            # face_locations trims each box to the photo; face_encodings turns it back.
            trimmed = [
                (max(b.left(), 0), max(b.top(), 0), min(b.right(), width), min(b.bottom(), height))
                for b in boxes
            ]
            box = max(trimmed, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        else:
            box = (0, 0, width, height)
        shape = self.predictor(pixels, self.dlib.rectangle(*box))
        descriptor = self.recognizer.compute_face_descriptor(pixels, shape)
        return np.asarray(descriptor, dtype=np.float32), bool(len(boxes))

    def compute(self, paths: Sequence[Path]) -> dict[str, np.ndarray]:
        embeddings, found = [], []
        for path in progress(paths, self.row):
            vector, hit = self.embed_photo(path)
            embeddings.append(vector)
            found.append(hit)
        return {"embeddings": np.stack(embeddings), "found": np.array(found)}

    def time(self, paths: Sequence[Path]) -> None:
        for path in paths:
            self.embed_photo(path)


class LibraryPipeline:
    """A pretrained siamkit face encoder behind an aligner, through ``encoder.embed``."""

    def __init__(self, row: str, aligner: Any, encoder_name: str, **encoder_args: Any) -> None:
        import siamkit

        self.row = row
        self.aligner = aligner
        self.encoder = siamkit.create_encoder(
            encoder_name, trainable_from="none", **encoder_args
        ).eval()
        self.encoder.aligner = aligner

    def key(self) -> dict[str, Any]:
        return {
            "aligner": self.aligner.describe(),
            "encoder": self.encoder.fingerprint(),
            "code": source_digest(self.aligner, self.encoder),
        }

    def compute(self, paths: Sequence[Path]) -> dict[str, np.ndarray]:
        embeddings, found, weak = [], [], []
        self.aligner.reset_stats()
        for path in progress(paths, self.row):
            embeddings.append(self.encoder.embed(str(path))[0])
            stats = self.aligner.reset_stats()  # this photo's alone
            found.append(stats.aligned > 0)
            weak.append(stats.weak > 0)
        return {
            "embeddings": np.stack(embeddings),
            "found": np.array(found),
            "weak": np.array(weak),
        }

    def time(self, paths: Sequence[Path]) -> None:
        self.encoder.embed([str(p) for p in paths])


class EveryFace:
    """The yunet pipeline keeping every face (row 5): boxes, scores, chips' embeddings.

    The chips are embedded by the same encoder without its aligner, each with its
    mirror image, in batches.
    """

    row = "every_face"

    def __init__(self, aligner_name: str = "yunet") -> None:
        import siamkit

        self.aligner = siamkit.create_aligner(aligner_name)
        self.encoder = siamkit.create_encoder(
            "dlib-face", trainable_from="none", flip_average=False
        ).eval()
        self.metric = self.encoder.metric

    def key(self) -> dict[str, Any]:
        return {
            "aligner": self.aligner.describe(),
            "encoder": self.encoder.fingerprint(),
            "code": source_digest(self.aligner, self.encoder),
        }

    def chips(self, path: Path) -> tuple[list[Any], list[Any], tuple[int, int]]:
        """Every face of the photo and its chip; no face: the chip ``align`` falls back to."""
        from siamkit._images import load_image

        image = load_image(path, mode=self.encoder.image_mode)  # as encoder.embed reads it
        faces = self.aligner.find_faces(image)
        if faces:
            return faces, [self.aligner.chip(image, face) for face in faces], image.size
        return [], [self.aligner.align(image, name=str(path))], image.size

    def embed_chips(self, chips: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of ``chips`` and of their mirror images."""
        from PIL import Image

        mirrors = [chip.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for chip in chips]
        both = self.encoder.embed(list(chips) + mirrors)
        return both[: len(chips)], both[len(chips) :]

    def flip_mean(self, plain: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        """The mean of an embedding and its mirror's, in the encoder's geometry."""
        from siamkit.geometry import prepare

        return prepare(((plain + mirrored) / 2).astype(np.float32), self.metric)

    def compute(self, paths: Sequence[Path]) -> dict[str, np.ndarray]:
        photo, boxes, scores, chips_done = [], [], [], []
        plain, mirrored = [], []
        whole_plain = np.full((len(paths), self.encoder.embedding_dim), np.nan, np.float32)
        whole_mirrored = whole_plain.copy()
        sizes = np.zeros((len(paths), 2), np.int64)
        pending: list[tuple[int, bool, Any]] = []

        def flush() -> None:
            if not pending:
                return
            emb, emb_m = self.embed_chips([chip for _, _, chip in pending])
            for (index, is_face, _), e, m in zip(pending, emb, emb_m, strict=True):
                if is_face:
                    plain.append(e)
                    mirrored.append(m)
                else:
                    whole_plain[index], whole_mirrored[index] = e, m
            pending.clear()

        for index, path in enumerate(progress(paths, "every face (yunet)")):
            faces, chips, size = self.chips(path)
            sizes[index] = size
            for face in faces:
                photo.append(index)
                boxes.append(face.box)
                scores.append(face.score)
            pending += [(index, bool(faces), chip) for chip in chips]
            chips_done.append(len(chips))
            if len(pending) >= 32:
                flush()
        flush()
        return {
            "face_photo": np.array(photo, np.int64),
            "face_box": np.array(boxes, np.float64).reshape(-1, 4),
            "face_score": np.array(scores, np.float64),
            "face_embedding": np.array(plain, np.float32).reshape(-1, self.encoder.embedding_dim),
            "face_mirrored": np.array(mirrored, np.float32).reshape(-1, self.encoder.embedding_dim),
            "whole_embedding": whole_plain,
            "whole_mirrored": whole_mirrored,
            "photo_size": sizes,
        }


def pipeline(row: str) -> Any:
    """The pipeline that computes and times ``row`` (``every_face``: computes only)."""
    if row == "face_recognition":
        return FaceRecognitionWay()
    import siamkit
    from siamkit.encoders.face_fusion import fusion_aligner

    if row == "siamkit_before":
        return LibraryPipeline(row, siamkit.create_aligner("dlib"), "dlib-face", flip_average=False)
    if row == "yunet":
        return LibraryPipeline(
            row, siamkit.create_aligner("yunet"), "dlib-face", flip_average=False
        )
    if row == "yunet_flip":
        return LibraryPipeline(row, siamkit.create_aligner("yunet"), "dlib-face", flip_average=True)
    if row == "fusion":
        return LibraryPipeline(row, fusion_aligner("yunet"), "dlib-sface", flip_average=True)
    if row == "every_face":
        return EveryFace("yunet")
    raise ValueError(row)


# -- the cache -----------------------------------------------------------------------
def source_digest(*objects: Any) -> str:
    """A sha256 of the source files defining ``objects``' classes.

    ``describe()`` and the fingerprint cover settings and weights, not code: an
    aligner's template or a detector's second scale can change under the same
    description, and must not be served from the cache.
    """
    import inspect

    from siamkit.alignment import base

    files = {Path(inspect.getfile(base))}
    files |= {Path(inspect.getfile(type(o))) for o in objects}
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def cache_key(row: str, pipe: Any, photos: PhotoSet) -> str:
    """What a row's embeddings depend on, hashed."""
    blob = {
        "row": row,
        "procedure": PROCEDURE_VERSION,
        "listing": photos.listing,
        "photos": len(photos.paths),
        **pipe.key(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def cached(
    row: str, photos: PhotoSet, cache: Path, make: Callable[[], Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The row's arrays from ``cache`` if its key matches, else computed and stored."""
    pipe = make()
    key = cache_key(row, pipe, photos)
    path = cache / f"{row}-{key[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        print(f"{row}: from the cache ({path})", flush=True)
        return arrays, {"from_cache": True, "cache_key": key, "seconds": None, **pipe.key()}
    print(f"{row}: computing {len(photos.paths)} photos", flush=True)
    started = time.perf_counter()
    arrays = pipe.compute(photos.paths)
    seconds = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)
    print(f"{row}: {seconds:.0f} s", flush=True)
    return arrays, {
        "from_cache": False,
        "cache_key": key,
        "seconds": round(seconds, 1),
        **pipe.key(),
    }


# -- the metrics ---------------------------------------------------------------------
def fold_pairs(emb: np.ndarray, photos: PhotoSet, keep: np.ndarray, metric: str) -> list[tuple]:
    """Per fold: ``(distances, same, embeddings, labels)`` of the kept photos."""
    from siamkit.evaluation import all_pairs_distances

    out = []
    for fold in range(FOLDS):
        index = np.flatnonzero((photos.folds == fold) & keep)
        d, same = all_pairs_distances(emb[index], photos.labels[index], metric)
        out.append((d, same, emb[index], photos.labels[index]))
    return out


def scores(
    emb: np.ndarray,
    photos: PhotoSet,
    found: np.ndarray,
    metric: str,
    keep: np.ndarray | None = None,
) -> dict[str, Any]:
    """AUC, EER, TAR at FAR 1e-3 (threshold from the other folds), rank-1, faces found."""
    from siamkit.evaluation import rank1_leave_one_out, tar_at_far, verification_metrics
    from siamkit.thresholds import accepts

    keep = np.ones(len(emb), bool) if keep is None else keep
    parts = fold_pairs(emb, photos, keep, metric)
    folds = []
    for fold, (d, same, fold_emb, fold_labels) in enumerate(parts):
        other_d = np.concatenate([p[0] for k, p in enumerate(parts) if k != fold])
        other_same = np.concatenate([p[1] for k, p in enumerate(parts) if k != fold])
        fit = tar_at_far(other_d, other_same, TARGET_FAR)
        accepted = accepts(d, fit.threshold)
        verification = verification_metrics(d, same)
        in_fold = (photos.folds == fold) & keep
        folds.append(
            {
                "fold": fold,
                "photos": int(in_fold.sum()),
                "auc": verification.auc,
                "eer": verification.eer,
                "tar": float(accepted[same].mean()),
                "far": float(accepted[~same].mean()),
                "threshold": fit.threshold,
                "threshold_reliable": bool(fit.reliable),
                "rank1": rank1_leave_one_out(fold_emb, fold_labels, metric),
                "found": float(found[in_fold].mean()),
                "genuine_pairs": verification.num_genuine,
                "impostor_pairs": verification.num_impostor,
            }
        )
    mean = {
        key: float(np.mean([f[key] for f in folds]))
        for key in ("auc", "eer", "tar", "far", "rank1", "found")
    }
    return {"mean": mean, "folds": folds, "photos": int(keep.sum())}


def choose(policy: str, faces: dict[str, np.ndarray], photo: int) -> int | None:
    """The face (an index into the face arrays) that ``policy`` picks in ``photo``."""
    index = np.flatnonzero(faces["face_photo"] == photo)
    if not index.size:
        return None
    box = faces["face_box"][index]
    area = np.clip(box[:, 2] - box[:, 0], 0, None) * np.clip(box[:, 3] - box[:, 1], 0, None)
    score = faces["face_score"][index]
    if policy == "largest":
        value = area  # argmax keeps the first of equals, as align's max() does
    elif policy == "highest score":
        # align's rule: the highest score, ties to the larger, the first of equals.
        best = max(range(len(index)), key=lambda i: (score[i], area[i]))
        return int(index[best])
    elif policy == "largest x score":
        value = area * score
    elif policy == "most central":
        width, height = faces["photo_size"][photo]
        centre = np.c_[(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2]
        value = -np.hypot(centre[:, 0] - width / 2, centre[:, 1] - height / 2)
    else:
        raise ValueError(policy)
    return int(index[int(np.argmax(value))])


def policy_embeddings(
    faces: dict[str, np.ndarray], policy: str, flip: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per photo under ``policy``: embedding, flip-averaged embedding, found, chosen face."""
    photos = len(faces["photo_size"])
    plain = faces["whole_embedding"].copy()
    mirrored = faces["whole_mirrored"].copy()
    chosen = np.full(photos, -1)
    for photo in range(photos):
        pick = choose(policy, faces, photo)
        if pick is not None:
            chosen[photo] = pick
            plain[photo] = faces["face_embedding"][pick]
            mirrored[photo] = faces["face_mirrored"][pick]
    return plain, flip(plain, mirrored), chosen >= 0, chosen


# -- timing --------------------------------------------------------------------------
def child_timing(args: argparse.Namespace) -> None:
    """One row's timing in this fresh process; prints one JSON line."""
    limit_threads(args.threads)
    photos = read_set(args.data)
    subset, warm = timing_subset(photos, args.timing_photos)
    pipe = pipeline(args.child)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pipe.time(warm)
    started = time.perf_counter()
    cpu_started = time.process_time()
    pipe.time(subset)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "photos": len(subset),
                "seconds": seconds,
                "photos_per_s": len(subset) / seconds,
                "cpu_s": cpu,
                "peak_mb": (peak - baseline) / 1024,  # ru_maxrss is in KiB on Linux
                "process_peak_mb": peak / 1024,
            }
        )
    )


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def time_row(args: argparse.Namespace, row: str) -> dict[str, Any]:
    """Time ``row`` in a fresh process pinned to ``--threads`` CPUs.

    Also measures how many cores other processes kept busy meanwhile: the whole
    machine's busy time (``/proc/stat``) less the child's own CPU time, over the wall.
    """
    command = [sys.executable, __file__, "--child", row, "--data", str(args.data)]
    command += ["--threads", str(args.threads), "--timing-photos", str(args.timing_photos)]
    cpus = sorted(os.sched_getaffinity(0))[: args.threads]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, wall_before = busy_seconds(), time.perf_counter()
    done = subprocess.run(
        command,
        env=thread_environment(args.threads),
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    wall = time.perf_counter() - wall_before
    busy = busy_seconds() - busy_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"timing {row} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["others_busy_cores"] = round(max(0.0, busy - own) / wall, 2)
    return result


def timings(args: argparse.Namespace) -> dict[str, Any]:
    """Every timed row, one fresh process each, ``--timing-repeats`` interleaved rounds.

    Each row keeps its fastest round: on a shared machine the least disturbed
    (other jobs only ever slow a timing down); every round's rate is kept too.
    """
    out: dict[str, Any] = {}
    for round_ in range(args.timing_repeats):
        for row in TIMED_ROWS:
            result = time_row(args, row)
            print(
                f"timing {row} (round {round_ + 1}): {result['photos_per_s']:.1f} photos/s, "
                f"{result['peak_mb']:.0f} MB peak above the loaded models; other processes "
                f"kept {result['others_busy_cores']} cores busy",
                flush=True,
            )
            rates = [*out.get(row, {}).get("rounds_photos_per_s", []), result["photos_per_s"]]
            if row not in out or result["photos_per_s"] > out[row]["photos_per_s"]:
                out[row] = result
            out[row]["rounds_photos_per_s"] = rates
    return out


# -- the run -------------------------------------------------------------------------
@dataclass
class Report:
    """What one run measured, for the JSON and the markdown."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)


def accuracy(photos: PhotoSet, cache: Path) -> Report:
    """Every row's embeddings (cached) and metrics."""
    report = Report()
    metric = "euclidean"  # dlib's descriptors, and dlib-face's metric (checked below)

    fr, report.sources["face_recognition"] = cached(
        "face_recognition", photos, cache, FaceRecognitionWay
    )
    found = fr["found"].astype(bool)
    report.rows.append(
        {"row": "face_recognition", **scores(fr["embeddings"], photos, found, metric)}
    )
    report.rows.append(
        {
            "row": "face_recognition_found",
            **scores(fr["embeddings"], photos, found, metric, keep=found),
        }
    )

    before, report.sources["siamkit_before"] = cached(
        "siamkit_before", photos, cache, lambda: pipeline("siamkit_before")
    )
    row = scores(before["embeddings"], photos, before["found"].astype(bool), metric)
    row["second_look_share"] = float(before["weak"].mean())
    report.rows.append({"row": "siamkit_before", **row})

    library = {}
    for name in ("yunet", "yunet_flip", "fusion"):
        library[name], report.sources[name] = cached(
            name, photos, cache, lambda name=name: pipeline(name)
        )
        hit = library[name]["found"].astype(bool)
        report.rows.append(
            {"row": name, **scores(library[name]["embeddings"], photos, hit, metric)}
        )

    # What SFace alone brings, and the fusion at other dlib weights: from the fusion's
    # own embedding, [w * dlib-face, SFace], so nothing is embedded again.
    fused = library["fusion"]
    hit = fused["found"].astype(bool)
    report.rows.append(
        {"row": "sface", **scores(fused["embeddings"][:, 128:], photos, hit, metric)}
    )
    report.checks["fusion_weights"] = fusion_weights(fused["embeddings"], photos, hit, metric)

    report.checks["recipe_row"] = recipe_row(report.sources)

    every = EveryFace("yunet")
    if every.metric != metric:
        raise SystemExit(f"dlib-face's metric is {every.metric}, this benchmark assumes {metric}")
    # The policy align uses by default: rows 3 and 4 are that sub-row, through encoder.embed.
    own = ALIGNER_POLICIES[getattr(every.aligner, "choose", "largest")]
    report.checks["aligner_policy"] = own
    faces, report.sources["every_face"] = cached("every_face", photos, cache, lambda: every)
    chosen_by: dict[str, np.ndarray] = {}
    for policy in POLICIES:
        plain, flipped, hit, chosen = policy_embeddings(faces, policy, every.flip_mean)
        chosen_by[policy] = chosen
        if policy == own:
            # The pieces must give what encoder.embed gives for the face align picks.
            for name, mine in (("yunet", plain), ("yunet_flip", flipped)):
                difference = np.abs(mine - library[name]["embeddings"]).max(axis=1)
                agrees = bool((hit == library[name]["found"].astype(bool)).all())
                report.checks[f"{name}_vs_embed_max_abs"] = float(difference.max())
                report.checks[f"{name}_found_agrees"] = agrees
                if difference.max() > 1e-4 or not agrees:
                    raise SystemExit(
                        f"find_faces + chip + embed differ from encoder.embed ({name}, {own} "
                        f"face) by up to {difference.max():.2e} on "
                        f"{(difference > 1e-4).sum()} photos (faces found agree: {agrees})"
                    )
            report.checks["compared_photos"] = len(difference)
        report.policies.append(
            {
                "policy": policy,
                "plain": scores(plain, photos, hit, metric),
                "flip": scores(flipped, photos, hit, metric),
            }
        )
    counts = np.bincount(faces["face_photo"], minlength=len(photos.paths))
    largest = chosen_by["largest"]
    report.checks["photos_with_several_faces"] = int((counts > 1).sum())
    report.checks["faces_per_photo_max"] = int(counts.max())
    report.checks["policy_differs_from_largest"] = {  # what each policy changes
        policy: int((chosen_by[policy] != largest).sum()) for policy in POLICIES
    }
    return report


def recipe_row(sources: dict[str, Any]) -> str | None:
    """The row that is the face recipe (``siamkit train``'s frozen model), if one is."""
    from siamkit.training.recipes import face_aligner, face_encoder

    aligner = face_aligner()
    encoder = face_encoder("none", aligner=aligner)
    for row, source in sources.items():
        if source.get("aligner") == aligner.describe() and (
            source.get("encoder") == encoder.fingerprint()
        ):
            return row
    return None


def fusion_weights(
    embeddings: np.ndarray, photos: PhotoSet, found: np.ndarray, metric: str
) -> dict[str, Any]:
    """The fusion's EER at each of :data:`FUSION_WEIGHTS`, and with the weight chosen per fold.

    The weight chosen for a fold is the one with the lowest mean EER on the other three.
    """
    from siamkit.encoders.face_fusion import DEFAULT_DLIB_WEIGHT

    dlib, sface = embeddings[:, :128] / DEFAULT_DLIB_WEIGHT, embeddings[:, 128:]
    eers = {}
    for weight in FUSION_WEIGHTS:
        result = scores(np.hstack([weight * dlib, sface]), photos, found, metric)
        eers[weight] = [fold["eer"] for fold in result["folds"]]
    chosen = [
        min(FUSION_WEIGHTS, key=lambda w: np.mean([e for k, e in enumerate(eers[w]) if k != fold]))
        for fold in range(FOLDS)
    ]
    return {
        "default": DEFAULT_DLIB_WEIGHT,
        "eer_by_weight": {str(w): float(np.mean(e)) for w, e in eers.items()},
        "chosen_per_fold": chosen,
        "eer_chosen_per_fold": float(np.mean([eers[w][k] for k, w in enumerate(chosen)])),
    }


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def markdown_table(report: dict[str, Any]) -> str:
    timing = report.get("timing") or {}
    own = report["checks"]["aligner_policy"]
    lines = [
        "| pipeline | AUC | EER | TAR @ FAR 1e-3 | rank-1 | faces found | photos/s | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cells(mean: dict[str, float]) -> str:
        return (
            f"{mean['auc']:.4f} | {percent(mean['eer'])} | {percent(mean['tar'])} | "
            f"{mean['rank1']:.3f} | {percent(mean['found'])}"
        )

    def speed(row: str) -> str:
        t = timing.get(row)
        return f"{t['photos_per_s']:.1f} | {t['peak_mb']:.0f}" if t else "- | -"

    for row in report["rows"]:
        name = row["row"]
        label = ROW_LABELS[name]
        if name == "face_recognition":
            label = f"**{label}** (anchor)"
        if name == "face_recognition_found":
            mean = row["mean"]
            lines.append(
                f"| {label} ({row['photos']} photos) | {mean['auc']:.4f} | {percent(mean['eer'])} "
                f"| {percent(mean['tar'])} | {mean['rank1']:.3f} | - | - | - |"
            )
            continue
        if name == "siamkit_before":
            label += f" ({percent(row['second_look_share'])} found only by the second look)"
        if name == "yunet":
            label += f" (its defaults: the {own} face)"
        lines.append(f"| {label} | {cells(row['mean'])} | {speed(name)} |")
    for kind, row, same in (("plain", "yunet", "yunet"), ("flip", "yunet_flip", "+ flip")):
        for entry in report["policies"]:
            prefix = "which face (yunet" + (" + flip)" if kind == "flip" else ")")
            cost = speed(row) if entry["policy"] == own else f"as {same} | as {same}"
            lines.append(f"| {prefix}: {entry['policy']} | {cells(entry[kind]['mean'])} | {cost} |")
    return "\n".join(lines)


def held_out_table(report: dict[str, Any], fold: int) -> str:
    """The main rows on one fold alone."""
    lines = [
        f"| pipeline (fold {fold} only) | AUC | EER | TAR @ FAR 1e-3 | rank-1 | faces found |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        f = row["folds"][fold]
        lines.append(
            f"| {ROW_LABELS[row['row']]} | {f['auc']:.4f} | {percent(f['eer'])} | "
            f"{percent(f['tar'])} | {f['rank1']:.3f} | {percent(f['found'])} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    timing = report.get("timing") or {}
    sources = report["sources"]
    from_cache = [row for row, s in sources.items() if s["from_cache"]]
    computed = [row for row, s in sources.items() if not s["from_cache"]]
    checks = report["checks"]
    busy = [t["others_busy_cores"] for t in timing.values()]
    text = [
        "# Faces in the wild",
        "",
        f"Whole web photos (CelebA, in the wild): {meta['people']} people, {meta['photos']:,} "
        f"photos (`celeba-wild-dev`, build listing sha256 `{meta['listing']}`), 4 "
        "subject-disjoint folds (identities sorted as strings, fold = position % 4). "
        "Every figure is the **mean over the 4 folds**: AUC and EER over all pairs within a "
        "fold; TAR at FAR 1e-3 with the threshold fitted on the pairs of the other three folds "
        "(`siamkit.evaluation.tar_at_far`) and applied to the fold; rank-1 leave-one-out "
        "within the fold; faces found = share of photos where the pipeline found a face (the "
        "others are embedded whole). `dlib-face` is frozen (dlib's own weights), euclidean "
        "distance throughout.",
        "",
        markdown_table(report),
        "",
        f"Speed: photos/s end to end (read, detect, align, embed) on {meta['timing_photos']} "
        f"photos (every {meta['timing_step']}th of the set, median "
        f"{meta['timing_median_mp']:.2f} MP), {meta['threads']} CPU threads (torch, OpenCV, BLAS; "
        "process pinned to as many cores), a fresh process per row after a 5-photo warm-up, "
        f"the fastest of {meta['timing_repeats']} interleaved rounds; "
        "peak MB: the process's peak resident memory above its level once the models are "
        "loaded. The which-face policies cost what their pipeline costs.",
    ]
    if timing:
        text.append(
            f"Timings taken on {meta['machine']} with {meta['cpus']} cores"
            + (
                f", **under load**: the machine was shared with other jobs, which kept "
                f"{min(busy):.1f}-{max(busy):.1f} cores busy during the timings; rerun with "
                "`--timing-only` on a quiet machine."
                if meta.get("under_load")
                else " (quiet machine)."
            )
        )
    text += [
        "",
        f"Fold {HELD_OUT_FOLD} alone ({report['rows'][0]['folds'][HELD_OUT_FOLD]['photos']} "
        "photos): the people on whom the `yunet` aligner's score threshold was not chosen "
        "(it is chosen on folds 0-2; its landmark template was measured on the first 48 "
        "people of every fold, against dlib's landmarks, without identities).",
        "",
        held_out_table(report, HELD_OUT_FOLD),
        "",
        f"Checks: the every-face pass (`find_faces` + `chip` + the encoder on the chips, and "
        f"their Pillow mirrors) gives `encoder.embed`'s embedding for the face `align` picks "
        f"({checks['aligner_policy']}) on all "
        f"{checks['compared_photos']} photos, without and with `flip_average` (largest "
        f"differences {checks['yunet_vs_embed_max_abs']:.1e} and "
        f"{checks['yunet_flip_vs_embed_max_abs']:.1e}); {checks['photos_with_several_faces']} "
        f"photos have several faces (at most {checks['faces_per_photo_max']}); photos where a "
        "policy picks another face than the largest: "
        + ", ".join(f"{p} {n}" for p, n in checks["policy_differs_from_largest"].items())
        + ".",
        "",
        f"The face recipe (`siamkit train`'s frozen model) is the row "
        f"`{checks['recipe_row']}`. Fusion weight (`dlib_weight`): the default "
        f"{checks['fusion_weights']['default']} gives EER "
        f"{percent(checks['fusion_weights']['eer_by_weight'][str(checks['fusion_weights']['default'])])}"
        "; each fold with the weight chosen on the other three ("
        + ", ".join(str(w) for w in checks["fusion_weights"]["chosen_per_fold"])
        + f"): {percent(checks['fusion_weights']['eer_chosen_per_fold'])}; by weight: "
        + ", ".join(
            f"{w} {percent(e)}" for w, e in checks["fusion_weights"]["eer_by_weight"].items()
        )
        + ".",
        "",
        "Embeddings of the accuracy run: "
        + (f"computed: {', '.join(computed)}" if computed else "none computed")
        + "; "
        + (f"from the cache: {', '.join(from_cache)}" if from_cache else "none from the cache")
        + " (cache keyed by aligner `describe()`, encoder fingerprint, their source files and "
        f"the set's listing). Accuracy figures: {meta['accuracy_run']}.",
        "",
        "Aligners as measured: "
        + "; ".join(
            f"{row} `{sources[row]['aligner']['name']}` "
            f"{json.dumps(sources[row]['aligner']['config'], sort_keys=True)} (source sha256 "
            f"{sources[row]['code'][:12]})"
            for row in ("siamkit_before", "yunet", "fusion")
        )
        + ".",
        "",
        f"Command: `{meta['command']}`",
        "",
    ]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the folder build.py wrote")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing-photos", type=int, default=200)
    parser.add_argument(
        "--timing-repeats",
        type=int,
        default=2,
        help="interleaved timing rounds; each row keeps its fastest (default 2)",
    )
    parser.add_argument(
        "--accuracy-threads",
        type=int,
        default=1,
        help="torch/OpenCV threads of the accuracy passes (default 1; timing uses --threads)",
    )
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="re-time the rows; keep the accuracy figures of the last results file",
    )
    parser.add_argument("--no-timing", action="store_true", help="accuracy only (development)")
    parser.add_argument("--child", choices=(*TIMED_ROWS, "every_face"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_timing(args)
        return 0
    limit_threads(args.accuracy_threads)
    photos = read_set(args.data)
    if photos.listing != EXPECTED_LISTING:
        print(f"warning: the set's listing is {photos.listing}, not build.py's {EXPECTED_LISTING}")
    json_path, md_path = args.out / f"{NAME}.json", args.out / f"{NAME}.md"
    command = "python benchmarks/faces_in_the_wild.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.timing_only:
        if not json_path.is_file():
            parser.error(f"--timing-only keeps the accuracy of {json_path}: run without it first")
        report = json.loads(json_path.read_text())
        if report["meta"]["listing"] != photos.listing:
            parser.error(f"{json_path} was measured on another set")
        report["meta"]["accuracy_run"] = (
            f"from the last full run, `{report['meta']['accuracy_command']}` (this run re-timed "
            "only)"
        )
    else:
        measured = accuracy(photos, args.cache)
        report = {
            "rows": measured.rows,
            "policies": measured.policies,
            "sources": measured.sources,
            "checks": measured.checks,
            "meta": {"accuracy_run": "this run", "accuracy_command": command},
        }
    subset, _ = timing_subset(photos, args.timing_photos)
    sizes = []
    from PIL import Image

    for path in subset:
        with Image.open(path) as image:
            sizes.append(image.width * image.height / 1e6)
    report["meta"].update(
        {
            "command": command,
            "people": photos.people,
            "photos": len(photos.paths),
            "listing": photos.listing,
            "listing_expected": photos.listing == EXPECTED_LISTING,
            "folds": FOLDS,
            "target_far": TARGET_FAR,
            "threads": args.threads,
            "accuracy_threads": args.accuracy_threads,
            "timing_photos": len(subset),
            "timing_repeats": args.timing_repeats,
            "timing_step": max(1, len(photos.paths) // args.timing_photos),
            "timing_median_mp": float(np.median(sizes)),
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "cpus": os.cpu_count(),
        }
    )
    if not args.no_timing:
        report["timing"] = timings(args)
        others = max(t["others_busy_cores"] for t in report["timing"].values())
        # A quarter of a core of other work is already visible in a 2-thread timing.
        report["meta"]["under_load"] = others > 0.25
    print(markdown_table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
