"""YuNet's 5 points in dlib's chip frame: the measured ``YUNET_TEMPLATE`` and its check.

``dlib-face`` was trained on dlib's own chips, which put dlib's 5 landmarks (eye
corners, nose base) on ``DLIB_TEMPLATE``. YuNet finds other points (eye centres,
nose tip, mouth corners), so ``YuNetAligner`` needs their positions in that frame.
On every photo where dlib (HOG, no second look) and YuNet each find exactly one
face and the boxes overlap (intersection at least half the smaller box), dlib's 5
landmarks give the similarity onto ``DLIB_TEMPLATE``; YuNet's 5 points are mapped
through it. The template is the per-point median over the *fit* people: the first
half of the AT&T subjects (s1-s20) and the first half of celeba-wild-dev's people
(sorted by name), pooled. The *check* people (the other halves) then compare, per
face, the YuNet chip (``YuNetAligner.chip`` with that template) with dlib's chip
(``DlibAligner.chip``): mean absolute pixel difference and ``dlib-face`` embedding
distance. Anchors, measured in the same run: each aligner's chip against its chip
of the photo shifted by one pixel (its own jitter), and ``dlib-face`` verification
(AUC, EER over all pairs of the check people's photos) on dlib's chips, on YuNet's,
and across the two (a gallery of dlib chips queried with YuNet chips).

Also: which template (AT&T only, celeba only, pooled) gives the closest chips on
the check people (for comparison only: the pooled one was chosen beforehand);
YuNet's detection rate by face height (why ``YuNetAligner`` adds a coarse scan for
large images); the highest score YuNet gives random noise and the lowest it gives
an AT&T face.

Writes ``benchmarks/results/yunet_template.json`` and ``.md``.

Usage::

    python benchmarks/yunet_template.py [--per-person 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent
ORL = ROOT.parent.parent / "shared" / "data" / "att_faces"
CELEBA = ROOT.parent.parent / "data" / "celeba-wild-dev"
CHIP = 150
PADDING = 0.25
#: Chip pixels per unit of the unpadded template frame at size 150, padding 0.25.
PIXELS_PER_UNIT = CHIP / (1 + 2 * PADDING)
POINTS = ("right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner")
FACE_HEIGHTS = (300, 500, 600, 640, 700, 800, 900, 1000, 1200, 1600)


def photos(per_person: int) -> dict[str, list[tuple[str, str, Path]]]:
    """``{"att": [...], "celeba": [...]}`` of ``(half, person, path)``; half is fit/check."""
    att = []
    for subject in range(1, 41):
        half = "fit" if subject <= 20 else "check"
        att += [(half, f"s{subject}", ORL / f"s{subject}" / f"{i}.pgm") for i in range(1, 11)]
    celeba = []
    if CELEBA.is_dir():
        people = sorted(p for p in CELEBA.iterdir() if p.is_dir())
        for rank, person in enumerate(people):
            half = "fit" if rank < len(people) // 2 else "check"
            files = sorted(f for f in person.iterdir() if f.is_file())[:per_person]
            celeba += [(half, person.name, f) for f in files]
    return {"att": att, "celeba": celeba}


def overlap(a: tuple, b: tuple) -> float:
    """Intersection over the smaller box's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / smaller if smaller > 0 else 0.0


def pairs(items, dlib_aligner, yunet_aligner) -> tuple[list[dict], dict]:
    """The faces both find once, overlapping; with YuNet's points in dlib's frame."""
    from siamkit.alignment import similarity_transform
    from siamkit.alignment.builtin import DLIB_TEMPLATE

    found, counts = [], {"photos": 0, "dlib one": 0, "yunet one": 0, "both, overlapping": 0}
    dlib_s = yunet_s = 0.0
    for half, person, path in items:
        image = ImageOps.exif_transpose(Image.open(path))
        image.load()
        counts["photos"] += 1
        start = time.perf_counter()
        dlib_faces = dlib_aligner.find_faces(image)
        dlib_s += time.perf_counter() - start
        start = time.perf_counter()
        yunet_faces = yunet_aligner.find_faces(image)
        yunet_s += time.perf_counter() - start
        counts["dlib one"] += len(dlib_faces) == 1
        counts["yunet one"] += len(yunet_faces) == 1
        if len(dlib_faces) != 1 or len(yunet_faces) != 1:
            continue
        d, y = dlib_faces[0], yunet_faces[0]
        if overlap(d.box, y.box) < 0.5:
            continue
        counts["both, overlapping"] += 1
        fit = similarity_transform(d.landmarks, DLIB_TEMPLATE)
        mapped = y.landmarks @ fit[:, :2].T + fit[:, 2]
        found.append(
            {"half": half, "person": person, "path": path, "dlib": d, "yunet": y, "mapped": mapped}
        )
    counts["dlib s/photo"] = round(dlib_s / max(1, counts["photos"]), 4)
    counts["yunet s/photo"] = round(yunet_s / max(1, counts["photos"]), 4)
    return found, counts


def spread(points: np.ndarray, template: np.ndarray) -> list[dict]:
    """Per point: the median and 90th percentile distance from the template, chip pixels."""
    distances = np.linalg.norm(points - template, axis=2) * PIXELS_PER_UNIT
    return [
        {
            "point": name,
            "median_px": round(float(np.median(distances[:, i])), 2),
            "p90_px": round(float(np.percentile(distances[:, i], 90)), 2),
        }
        for i, name in enumerate(POINTS)
    ]


def measured_aligner(template: np.ndarray):
    """A ``YuNetAligner`` whose template is ``template`` (in the unpadded frame)."""
    from siamkit.alignment import YuNetAligner

    class Measured(YuNetAligner):
        @property
        def template(self) -> np.ndarray:
            return (self.padding + template) / (2 * self.padding + 1)

    return Measured(size=CHIP, padding=PADDING)


def chip_check(faces: list[dict], template, dlib_aligner, encoder) -> tuple[dict, tuple]:
    """YuNet chip vs dlib chip on ``faces``: pixel difference and embedding distance;
    with both chips' embeddings."""
    aligner = measured_aligner(template)
    pixel, dlib_chips, yunet_chips = [], [], []
    for face in faces:
        image = ImageOps.exif_transpose(Image.open(face["path"]))
        dlib_chip = dlib_aligner.chip(image, face["dlib"])
        yunet_chip = aligner.chip(image, face["yunet"])
        a, b = np.asarray(dlib_chip, np.float64), np.asarray(yunet_chip, np.float64)
        pixel.append(float(np.abs(a - b).mean()))
        dlib_chips.append(dlib_chip)
        yunet_chips.append(yunet_chip)
    dlib_vectors, yunet_vectors = encoder.embed(dlib_chips), encoder.embed(yunet_chips)
    distance = np.linalg.norm(dlib_vectors - yunet_vectors, axis=1)
    return summary(pixel, distance), (dlib_vectors, yunet_vectors)


def summary(pixel, distance) -> dict:
    return {
        "faces": len(distance),
        "pixel_mad_median": round(float(np.median(pixel)), 2) if len(pixel) else None,
        "pixel_mad_p90": round(float(np.percentile(pixel, 90)), 2) if len(pixel) else None,
        "distance_median": round(float(np.median(distance)), 4),
        "distance_p90": round(float(np.percentile(distance, 90)), 4),
    }


def shift_anchor(faces: list[dict], aligner, key: str, encoder) -> dict:
    """An aligner's chip vs its chip of the photo shifted right and down by one pixel:
    its own jitter (``key``: which face of ``faces`` the aligner found)."""
    pixel, first, second = [], [], []
    for face in faces:
        image = ImageOps.exif_transpose(Image.open(face["path"])).convert("RGB")
        shifted = Image.new("RGB", (image.width + 1, image.height + 1))
        shifted.paste(image, (1, 1))
        again = aligner.find_faces(shifted)
        if len(again) != 1:
            continue
        a = aligner.chip(image, face[key])
        b = aligner.chip(shifted, again[0])
        pixel.append(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean()))
        first.append(a)
        second.append(b)
    distance = np.linalg.norm(encoder.embed(first) - encoder.embed(second), axis=1)
    return summary(pixel, distance)


def verification(people: list[str], first: np.ndarray, second: np.ndarray) -> dict:
    """AUC and EER of dlib-face over all pairs of different photos, one photo's chip
    from ``first`` and the other's from ``second``; and the same person's median distance."""
    i, j = np.triu_indices(len(people), k=1)
    distance = np.linalg.norm(first[i] - second[j], axis=1)
    same = np.array(people)[i] == np.array(people)[j]
    genuine, impostor = distance[same], distance[~same]
    # AUC: the chance a genuine pair is closer than an impostor pair (ties half).
    order = np.concatenate([genuine, impostor]).argsort(kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    auc = 1 - (ranks[: len(genuine)].sum() - len(genuine) * (len(genuine) + 1) / 2) / (
        len(genuine) * len(impostor)
    )
    thresholds = np.unique(distance)
    far = np.searchsorted(np.sort(impostor), thresholds, side="right") / len(impostor)
    frr = 1 - np.searchsorted(np.sort(genuine), thresholds, side="right") / len(genuine)
    best = int(np.argmin(np.abs(far - frr)))
    return {
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "auc": round(float(auc), 4),
        "eer": round(float((far[best] + frr[best]) / 2), 4),
        "same_person_median": round(float(np.median(genuine)), 4),
    }


def size_sweep(yunet_aligner) -> list[dict]:
    """Share of 40 AT&T faces found when the face fills an image of each height."""
    rows = []
    files = [ORL / f"s{s}" / f"{i}.pgm" for s in range(1, 41) for i in (1, 6)][::2]
    for height in FACE_HEIGHTS:
        fine = both = 0
        for path in files:
            small = Image.open(path)
            face = small.resize((round(small.width * height / small.height), height))
            fine += bool(yunet_aligner._scan(face))  # one scan, as the detector alone
            both += bool(yunet_aligner.detect(face))  # with the coarse scan
        rows.append(
            {
                "face_height_px": height,
                "found_one_scan": round(fine / len(files), 3),
                "found_with_coarse_scan": round(both / len(files), 3),
            }
        )
    return rows


def noise_scores() -> dict:
    """The best score YuNet gives images without a face, at any threshold."""
    from siamkit.alignment import YuNetAligner

    permissive = YuNetAligner(score_threshold=0.01)
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(10):
        for width, height in ((92, 112), (320, 240), (640, 480), (1200, 900)):
            uniform = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            gaussian = np.clip(rng.normal(128, 50, (height, width)), 0, 255).astype(np.uint8)
            for image in (Image.fromarray(uniform), Image.fromarray(gaussian)):
                best = max([best] + [face.score for face in permissive.detect(image)])
    return {"noise_images": 80, "best_noise_score": round(best, 4)}


def markdown(report: dict) -> str:
    lines = ["# YuNet's 5 points in dlib's chip frame", ""]
    lines.append(
        "Faces where dlib (HOG, no second look) and YuNet (threshold "
        f"{report['meta']['score_threshold']}) each find exactly one face, boxes overlapping; "
        "YuNet's points mapped through the similarity that puts dlib's landmarks on "
        "`DLIB_TEMPLATE`. Fit people: AT&T s1-s20 and the first half of celeba-wild-dev's "
        "people; check people: the others. Distances in chip pixels at 150 px, padding 0.25 "
        f"({PIXELS_PER_UNIT:g} px per template unit). `python benchmarks/yunet_template.py "
        f"--per-person {report['meta']['per_person']}`, {report['meta']['threads']} threads."
    )
    lines += ["", "## Photos", "", "| set | photos | dlib one face | YuNet one face | both |"]
    lines.append("|---|---|---|---|---|")
    for name, c in report["counts"].items():
        lines.append(
            f"| {name} | {c['photos']} | {c['dlib one']} | {c['yunet one']} "
            f"| {c['both, overlapping']} |"
        )
    fit_faces = ", ".join(f"{n} {c}" for n, c in report["fit_faces"].items())
    lines += ["", f"## The template (pooled fit people: {fit_faces} faces)", ""]
    lines.append("| point | x | y | spread median px | spread p90 px |")
    lines.append("|---|---|---|---|---|")
    for (x, y), s in zip(report["template"], report["template_spread"], strict=True):
        lines.append(f"| {s['point']} | {x:.4f} | {y:.4f} | {s['median_px']} | {s['p90_px']} |")
    lines += ["", "Per-set templates (fit people) against the pooled one, chip pixels:", ""]
    for name, d in report["set_vs_pooled_px"].items():
        lines.append(f"- {name}: " + ", ".join(f"{p} {v}" for p, v in zip(POINTS, d, strict=True)))
    lines.append(f"- AT&T vs celeba, largest point difference: {report['att_vs_celeba_max_px']} px")
    lines += ["", "## YuNet chip vs dlib chip (check people)", ""]
    lines.append(
        "| set | template | faces | pixel diff median | p90 | dlib-face distance median | p90 |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for row in report["chip_check"]:
        lines.append(
            f"| {row['set']} | {row['template']} | {row['faces']} | {row['pixel_mad_median']} "
            f"| {row['pixel_mad_p90']} | {row['distance_median']} | {row['distance_p90']} |"
        )
    for row in report["anchors"]:
        lines.append(
            f"| {row['set']} | anchor: {row['template']} | {row['faces']} "
            f"| {row['pixel_mad_median']} | {row['pixel_mad_p90']} | {row['distance_median']} "
            f"| {row['distance_p90']} |"
        )
    lines += ["", "## dlib-face verification on the check people's photos (all pairs)", ""]
    lines.append(
        "| set | chips | genuine pairs | impostor pairs | AUC | EER | same-person median |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for row in report["verification"]:
        lines.append(
            f"| {row['set']} | {row['chips']} | {row['genuine_pairs']} | {row['impostor_pairs']} "
            f"| {row['auc']} | {row['eer']} | {row['same_person_median']} |"
        )
    lines += ["", "## Detection by face height (40 AT&T faces filling the image)", ""]
    lines.append("| face height px | found, one scan | found, with the coarse scan |")
    lines.append("|---|---|---|")
    for row in report["size_sweep"]:
        lines.append(
            f"| {row['face_height_px']} | {row['found_one_scan']} "
            f"| {row['found_with_coarse_scan']} |"
        )
    n = report["noise"]
    lines += [
        "",
        f"Best YuNet score on {n['noise_images']} noise images: {n['best_noise_score']}; "
        f"lowest on the AT&T faces both detectors found: {report['att_lowest_score']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-person", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    import cv2
    import torch

    import siamkit
    from siamkit.alignment import DlibAligner, YuNetAligner
    from siamkit.alignment.yunet import YUNET_TEMPLATE

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    if not ORL.is_dir():
        parser.error(f"the AT&T faces are not at {ORL}")
    dlib_aligner = DlibAligner(second_look=False)
    yunet_aligner = YuNetAligner()
    encoder = siamkit.create_encoder("dlib-face", flip_average=False)
    sets = photos(args.per_person)
    faces, counts = {}, {}
    for name, items in sets.items():
        if items:
            faces[name], counts[name] = pairs(items, dlib_aligner, yunet_aligner)
            print(name, counts[name], flush=True)

    def points(name: str, half: str) -> np.ndarray:
        return np.array([f["mapped"] for f in faces.get(name, []) if f["half"] == half])

    fit = {name: points(name, "fit") for name in faces}
    pooled_points = np.concatenate(list(fit.values()))
    templates = {name: np.median(p, axis=0) for name, p in fit.items()}
    templates["pooled"] = np.median(pooled_points, axis=0)
    pooled = templates["pooled"]
    print("pooled template", np.round(pooled, 4).tolist())
    set_vs_pooled = {
        name: [round(float(v), 2) for v in np.linalg.norm(t - pooled, axis=1) * PIXELS_PER_UNIT]
        for name, t in templates.items()
        if name != "pooled"
    }
    att_vs_celeba = None
    if "celeba" in templates:
        gap = np.linalg.norm(templates["att"] - templates["celeba"], axis=1) * PIXELS_PER_UNIT
        att_vs_celeba = round(float(gap.max()), 2)
    chip_rows, anchors, verify = [], [], []
    for name in faces:
        check = [f for f in faces[name] if f["half"] == "check"]
        vectors = None
        for label, template in templates.items():
            row, embedded = chip_check(check, template, dlib_aligner, encoder)
            vectors = embedded if label == "pooled" else vectors
            chip_rows.append({"set": name, "template": label, **row})
            print(name, label, row, flush=True)
        row, _ = chip_check(check, YUNET_TEMPLATE, dlib_aligner, encoder)
        chip_rows.append({"set": name, "template": "YUNET_TEMPLATE (the module's)", **row})
        for label, aligner, key in (
            ("dlib", dlib_aligner, "dlib"),
            ("YuNet", yunet_aligner, "yunet"),
        ):
            anchors.append(
                {"set": name, "template": f"{label} vs {label}, 1 px shift"}
                | shift_anchor(check, aligner, key, encoder)
            )
            print(anchors[-1], flush=True)
        people = [f["person"] for f in check]
        dlib_vectors, yunet_vectors = vectors
        for label, first, second in (
            ("dlib chips", dlib_vectors, dlib_vectors),
            ("YuNet chips (pooled template)", yunet_vectors, yunet_vectors),
            ("YuNet chip vs dlib chip", yunet_vectors, dlib_vectors),
        ):
            verify.append({"set": name, "chips": label} | verification(people, first, second))
            print(verify[-1], flush=True)
    att_scores = [f["yunet"].score for f in faces["att"]]
    report = {
        "meta": {
            "per_person": args.per_person,
            "threads": args.threads,
            "score_threshold": yunet_aligner.score_threshold,
            "python": platform.python_version(),
            "opencv": cv2.__version__,
        },
        "counts": counts,
        "fit_faces": {name: len(p) for name, p in fit.items()},
        "template": np.round(pooled, 4).tolist(),
        "templates": {k: np.round(v, 4).tolist() for k, v in templates.items()},
        "module_template_vs_measured_px": round(
            float(np.abs(YUNET_TEMPLATE - pooled).max() * PIXELS_PER_UNIT), 3
        ),
        "template_spread": spread(pooled_points, pooled),
        "set_vs_pooled_px": set_vs_pooled,
        "att_vs_celeba_max_px": att_vs_celeba,
        "chip_check": chip_rows,
        "anchors": anchors,
        "verification": verify,
        "size_sweep": size_sweep(yunet_aligner),
        "noise": noise_scores(),
        "att_lowest_score": round(float(min(att_scores)), 4),
    }
    text = markdown(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "yunet_template.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "yunet_template.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
