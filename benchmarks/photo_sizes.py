"""Face alignment on large photos: seconds and peak memory per photo size, bound off and on.

One photo, a face composited into a larger scene (an AT&T/ORL face from
``../shared/data/att_faces``, or any face image given by ``--image``), at 0.3,
3, 12 and 24 megapixels (4:3), with the face a third of the photo's height, and
the same scene without the face (the worst case: the detector's second look
runs in full before the whole photo is aligned). For each, ``DlibAligner.align``
runs as it did before the bound (:func:`old_aligner`: HOG at full resolution,
upsampled, a scan per look) and as it does now (the default bound), and the
``yunet`` aligner (``create_aligner("yunet")``, its defaults) on the same photos, each in a fresh
subprocess pinned to ``--threads`` CPUs: the median of ``--repeats`` runs after
one warm-up, and the process's peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``, which counts dlib's C++ allocations that
tracemalloc misses) above its level before the first ``align`` (the photo
itself, Python and the libraries). The old behaviour above ``--old-max-mp``
megapixels is not run: it takes minutes and many gigabytes.

Goal (issue 19): a 12-megapixel photo in under 1 s and 1 GB on 2 CPU threads.

Writes ``benchmarks/results/photo_sizes.json`` and ``.md``.

Usage::

    python benchmarks/photo_sizes.py [--image face.png] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_IMAGE = ROOT.parent.parent / "shared" / "data" / "att_faces" / "s1" / "1.pgm"
SIZES_MP = (0.3, 3.0, 12.0, 24.0)
#: old: the dlib aligner before the bound; new: with it; yunet: the yunet aligner.
MODES = ("old", "new", "yunet")


def scene(image_path: Path, megapixels: float, with_face: bool):
    """A 4:3 greyish scene with some texture; the face a third of its height, off centre."""
    import numpy as np
    from PIL import Image

    width = round((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = round(width * 3 / 4)
    # Smooth low-contrast shading: nothing a face detector should take for a face.
    small = np.random.default_rng(0).integers(80, 140, size=(3, 4, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
    if with_face:
        face = Image.open(image_path).convert("RGB")
        face_height = height // 3
        face = face.resize((face_height * face.width // face.height, face_height))
        photo.paste(face, (width // 2, height // 4))
    return photo


def old_aligner():
    """``DlibAligner`` as it was before the bound: its ``detect`` verbatim (a scan per
    look, at full resolution, dlib upsampling), no bound on the chip either."""
    import numpy as np

    from siamkit.alignment import DlibAligner
    from siamkit.alignment.builtin import SECOND_LOOK, _rgb

    class OldDlibAligner(DlibAligner):
        def detect(self, image):
            _, detector, _ = self._dlib()
            pixels = _rgb(image)
            boxes, scores, _ = detector.run(pixels, self.upsample, 0.0)
            faces = [
                self._old_face(image, b, pixels, s) for b, s in zip(boxes, scores, strict=True)
            ]
            if faces or not self.second_look:
                return faces
            for extra, threshold in SECOND_LOOK:
                boxes, scores, _ = detector.run(pixels, self.upsample + extra, threshold)
                if len(boxes):
                    best = int(np.argmax(scores))
                    return [self._old_face(image, boxes[best], pixels, scores[best], True)]
            return []

        def _old_face(self, image, box, pixels, score, weak=False):
            corners = (box.left(), box.top(), box.right(), box.bottom())
            return self._face(image, corners, pixels, score, weak)

    return OldDlibAligner(max_detect_pixels=None)


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    import resource

    import cv2

    cv2.setNumThreads(args.threads)  # YuNet runs on OpenCV's threads

    from PIL import Image

    from siamkit.alignment import DlibAligner, create_aligner

    photo = scene(args.image, args.megapixels, args.scene == "face")
    if args.mode == "yunet":
        aligner = create_aligner("yunet")
        aligner.detect(Image.new("RGB", (64, 64)))  # load the model before the baseline
    else:
        aligner = old_aligner() if args.mode == "old" else DlibAligner()
        aligner._dlib()  # load the models before the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(args.repeats + 1):  # the first is a warm-up
        started = time.perf_counter()
        aligner.align(photo)
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = aligner.reset_stats()
    print(
        json.dumps(
            {
                "seconds": statistics.median(seconds[1:]),
                "runs": seconds[1:],
                "peak_mb": (peak - baseline) / 1024,  # ru_maxrss is in KiB on Linux
                "process_peak_mb": peak / 1024,
                "found": stats.aligned > 0,
                "size": list(photo.size),
            }
        )
    )


def measure(args: argparse.Namespace, megapixels: float, scene_name: str, mode: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--image",
        str(args.image),
        "--megapixels",
        str(megapixels),
        "--scene",
        scene_name,
        "--mode",
        mode,
        "--repeats",
        str(1 if mode == "old" and megapixels > 3 else args.repeats),
    ]
    command += ["--threads", str(args.threads)]
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cpus = sorted(os.sched_getaffinity(0))[: args.threads]
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"megapixels": megapixels, "scene": scene_name, "mode": mode, **row}


def markdown_table(rows: list[dict], skipped: list[str]) -> str:
    lines = [
        "| photo | scene | old: s | old: peak MB | new: s | new: peak MB | speed-up "
        "| yunet: s | yunet: peak MB | found |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["megapixels"], r["scene"], r["mode"]): r for r in rows}
    for megapixels in sorted({r["megapixels"] for r in rows}):
        for scene_name in ("face", "no face"):
            new = by_key.get((megapixels, scene_name, "new"))
            old = by_key.get((megapixels, scene_name, "old"))
            yunet = by_key.get((megapixels, scene_name, "yunet"))
            present = [r for r in (new, old, yunet) if r]
            if not present:
                continue
            width, height = present[0]["size"]
            new_cells = f"{new['seconds']:.2f} | {new['peak_mb']:.0f}" if new else "- | -"
            old_s = f"{old['seconds']:.2f}" if old else "not run"
            old_mb = f"{old['peak_mb']:.0f}" if old else "-"
            speed = f"{old['seconds'] / new['seconds']:.0f}x" if old and new else "-"
            found = "/".join(
                ("yes" if r["found"] else "no") if r else "-" for r in (old, new, yunet)
            )
            yunet_cells = f"{yunet['seconds']:.2f} | {yunet['peak_mb']:.0f}" if yunet else "- | -"
            lines.append(
                f"| {megapixels:g} MP ({width}x{height}) | {scene_name} | {old_s} | {old_mb} | "
                f"{new_cells} | {speed} | {yunet_cells} | {found} |"
            )
    if skipped:
        lines.append("")
        lines.append("Not run: " + "; ".join(skipped) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-max-mp", type=float, default=12.0)
    parser.add_argument("--sizes", type=float, nargs="+", default=list(SIZES_MP))
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="measure only these; the other modes' rows are kept from the last results file",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--megapixels", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--scene", choices=("face", "no face"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not args.image.is_file():
        parser.error(f"no face image at {args.image}; pass --image PATH")
    rows: list[dict] = []
    json_path = args.out / "photo_sizes.json"
    kept: list[str] = []
    if set(args.modes) != set(MODES) and json_path.is_file():
        earlier = json.loads(json_path.read_text())
        rows = [r for r in earlier["rows"] if r["mode"] not in args.modes]
        kept = sorted({r["mode"] for r in rows})
    skipped = [
        f"old behaviour at {megapixels:g} MP, {scene_name}"
        for megapixels in args.sizes
        if megapixels > args.old_max_mp
        for scene_name in ("face", "no face")
    ]
    for megapixels in args.sizes:
        for scene_name in ("face", "no face"):
            for mode in args.modes:
                if mode == "old" and megapixels > args.old_max_mp:
                    continue
                row = measure(args, megapixels, scene_name, mode)
                rows.append(row)
                print(
                    f"{megapixels:5g} MP  {scene_name:7s}  {mode}: {row['seconds']:7.2f} s  "
                    f"{row['peak_mb']:6.0f} MB  face found: {row['found']}",
                    flush=True,
                )
    table = markdown_table(rows, skipped)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "threads": args.threads,
        "repeats": args.repeats,
        "image": str(args.image),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "skipped": skipped,
        "load_average": os.getloadavg(),
        "kept_from_earlier_run": kept,
    }
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    earlier_note = (
        f" The {'/'.join(kept)} columns are kept from an earlier run (`--modes` measured "
        f"only {'/'.join(args.modes)} this time)."
        if kept
        else ""
    )
    (args.out / "photo_sizes.md").write_text(
        "# Face alignment on large photos\n\n"
        f"`DlibAligner.align` on one scene with and without an ORL face, {args.threads} CPU "
        f"threads, median of {args.repeats} runs after a warm-up (1 run for the old behaviour "
        "above 3 MP); peak memory is the process's peak RSS above its level before the first "
        "align; found: whether a face was found (old/new/yunet). old: the aligner before the "
        "bound (`old_aligner`); new: the default bound "
        '(`max_detect_pixels=4000000`); yunet: `create_aligner("yunet")` with its defaults '
        f"(the same bound), on the same photos.{earlier_note}\n\n" + table + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
