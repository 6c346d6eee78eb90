"""``siamkit index``: build, query and maintain a face index on disk."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from siamkit.exceptions import ConfigError, DataError

DEFAULT_FAR = 0.001
DEFAULT_FPIR = 0.01


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "index",
        help="build, query and maintain a face index (a FAISS gallery of embeddings)",
        description="Enrol a gallery of faces with a trained model, search it, add and "
        "remove people, all in an index folder saved atomically.",
    )
    parser.set_defaults(handler=lambda args: parser.print_help() or 1)
    actions = parser.add_subparsers(dest="index_command", metavar="ACTION")
    _add_build(actions)
    _add_query(actions)
    _add_add(actions)
    _add_remove(actions)
    _add_info(actions)


# -- arguments -------------------------------------------------------------------------
def _index_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index",
        required=True,
        type=Path,
        metavar="INDEX_DIR",
        help="the index folder (written by `siamkit index build`)",
    )


def _model_arg(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--model",
        required=required,
        type=Path,
        metavar="MODEL",
        help="model folder (from `siamkit train` or Encoder.save) or ONNX export (a .onnx "
        "file or folder from `siamkit export`)"
        + ("" if required else "; default: the one the index was built with"),
    )


def _far_arg(parser: argparse.ArgumentParser, default: float | None, help_text: str) -> None:
    parser.add_argument(
        "--calibrate-far", type=float, default=default, metavar="FAR", help=help_text
    )


def _fpir_arg(parser: argparse.ArgumentParser, default: float | None, help_text: str) -> None:
    parser.add_argument(
        "--calibrate-fpir", type=float, default=default, metavar="FPIR", help=help_text
    )


def _quiet_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_build(actions: Any) -> None:
    parser = actions.add_parser(
        "build",
        help="enrol an image folder (one sub-folder per person) into a new index",
        description="Encode every image of GALLERY/<person>/<image> with the model, "
        "calibrate the 1:1 (verify) threshold on the gallery's own pairs and the 1:N "
        "(identify) threshold by searching each person as a stranger against the others, "
        "and save the index.",
    )
    _model_arg(parser, required=True)
    parser.add_argument(
        "--gallery",
        required=True,
        type=Path,
        metavar="DIR",
        help="image folder: DIR/<person>/<image>",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="INDEX_DIR", help="index folder to write"
    )
    parser.add_argument(
        "--index",
        default="flat",
        metavar="KIND",
        help="flat (exact), hnsw, ivf, or a faiss index_factory string (default: %(default)s)",
    )
    _far_arg(
        parser,
        DEFAULT_FAR,
        "target false-accept rate of the 1:1 threshold fitted on the gallery's pairs; 0 to "
        "skip (default: %(default)s)",
    )
    _fpir_arg(
        parser,
        DEFAULT_FPIR,
        "target false-positive identification rate (share of strangers matched to someone) "
        "of the 1:N threshold query uses, fitted by leaving each person out; 0 to skip "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images encoded at once (default: %(default)s)"
    )
    _quiet_arg(parser)
    parser.set_defaults(handler=run_build)


def _add_query(actions: Any) -> None:
    parser = actions.add_parser(
        "query",
        help="identify faces: the best match of each image, or unknown",
        description="Print, for each image, the enrolled person it matches (nearest item "
        "within the threshold) or 'unknown', and with --k the k nearest items.",
    )
    _index_arg(parser)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument(
        "--k", type=int, default=5, help="nearest items listed per image (default: %(default)s)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="accept distances up to this (default: the index's 1:N threshold, else its 1:1 "
        "threshold)",
    )
    _model_arg(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list for scripts")
    _quiet_arg(parser)
    parser.set_defaults(handler=run_query)


def _add_add(actions: Any) -> None:
    parser = actions.add_parser(
        "add",
        help="enrol more images: a folder of people, or images of one person",
        description="Add GALLERY/<person>/<image> (--gallery), or IMAGE... of one person "
        "(--label), to an index and save it.",
    )
    _index_arg(parser)
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--gallery", type=Path, metavar="DIR", help="image folder to add")
    parser.add_argument("--label", help="the person shown by IMAGE...")
    parser.add_argument("--ids", nargs="+", metavar="ID", help="ids of IMAGE... (default: numbers)")
    parser.add_argument(
        "--upsert", action="store_true", help="replace items whose id is already in the index"
    )
    _far_arg(parser, None, "recalibrate the 1:1 threshold at this false-accept rate after adding")
    _fpir_arg(parser, None, "recalibrate the 1:N threshold at this FPIR after adding")
    _model_arg(parser)
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images encoded at once (default: %(default)s)"
    )
    _quiet_arg(parser)
    parser.set_defaults(handler=run_add)


def _add_remove(actions: Any) -> None:
    parser = actions.add_parser(
        "remove",
        help="remove items by id, or everyone's images of a person (--label)",
        description="Remove items from an index and save it.",
    )
    _index_arg(parser)
    parser.add_argument("ids", nargs="*", metavar="ID", help="ids to remove")
    parser.add_argument("--label", action="append", default=[], help="remove all of a person")
    _far_arg(parser, None, "recalibrate the 1:1 threshold at this false-accept rate after removing")
    _fpir_arg(parser, None, "recalibrate the 1:N threshold at this FPIR after removing")
    parser.set_defaults(handler=run_remove)


def _add_info(actions: Any) -> None:
    parser = actions.add_parser(
        "info",
        help="describe an index: size, geometry, threshold, model, files",
        description="Print what an index folder holds.",
    )
    _index_arg(parser)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=run_info)


# -- actions ---------------------------------------------------------------------------
def run_build(args: argparse.Namespace) -> int:
    from siamkit.encoders.base import load_encoder
    from siamkit.evaluation._alignment import counts_since, snapshot
    from siamkit.index import FaceIndex

    encoder = load_encoder(args.model)
    index = FaceIndex(encoder, index=args.index)
    index.extra["model"] = str(args.model.resolve())
    before = snapshot(encoder)
    added = index.add_folder(args.gallery, batch_size=args.batch_size, progress=not args.quiet)
    alignment = counts_since(encoder, before)
    note = _calibrate(index, args.calibrate_far, args.calibrate_fpir)
    index.save(args.out)
    print(
        f"indexed {len(index)} images of {len(index.labels())} people into {args.out} "
        f"({index.index_spec}, {index.metric}, {index.dim}-d); {note}"
    )
    _print_alignment(alignment, added.skipped)
    return 0


def _print_alignment(stats: Any, skipped: Any) -> None:
    """The aligner's counts for this command, and the images it skipped."""
    from siamkit.evaluation._alignment import alignment_line

    if stats is not None:
        print(f"alignment: {alignment_line(stats)}")
    for item in skipped:
        print(f"  skipped (no face found): {item.path if item.path is not None else item.position}")


def run_query(args: argparse.Namespace) -> int:
    if args.k <= 0:
        raise ConfigError(f"--k must be positive, got {args.k}")
    index = _load(args.index, args.model)
    from siamkit.index._inputs import embed_items

    # Embedded once for both calls; under on_missing=skip a photo without a face is answered so.
    embedded = embed_items([str(p) for p in args.images], index.encoder, index.dim)
    embeddings = embedded.embeddings
    threshold = args.threshold if args.threshold is not None else index.search_threshold
    if args.threshold is None:
        for warning in index.info()["warnings"]:
            print(f"siamkit: warning: {warning}", file=sys.stderr)
    results = list(index.search(embeddings, k=args.k)) if len(embeddings) else []
    decisions = (
        index.identify(embeddings, threshold=threshold)
        if threshold is not None and len(embeddings)
        else [None] * len(results)
    )
    answers = [_no_face(args.images[i], threshold) for i in range(len(args.images))]
    for position, best, matches in zip(embedded.kept, decisions, results, strict=True):
        answers[position] = {
            "image": str(args.images[position]),
            "match": None if best is None else best.to_dict(),
            "threshold": threshold,
            "matches": [m.to_dict() for m in matches],
            "no_face": False,
        }
    if args.json:
        print(json.dumps(answers, indent=2))
        return 0
    for answer in answers:
        print(_describe(answer))
    if threshold is None:
        print(
            "no threshold: rebuild with --calibrate-fpir, run `siamkit index add "
            "--calibrate-fpir`, or pass --threshold to tell known faces from unknown ones"
        )
    return 0


def _no_face(image: Path, threshold: float | None) -> dict[str, Any]:
    return {"image": str(image), "match": None, "threshold": threshold, "matches": [],
            "no_face": True}  # fmt: skip


def _describe(answer: dict[str, Any]) -> str:
    best, matches, threshold = answer["match"], answer["matches"], answer["threshold"]
    if answer.get("no_face"):
        return f"{answer['image']} -> no face found (skipped: the aligner's on_missing=skip)"
    if best is not None:
        found = f"{best['label']} (id {best['id']}, distance {best['distance']:.4f})"
        head = f"{answer['image']} -> {found}"
    elif threshold is not None:
        nearest = matches[0] if matches else None
        detail = (
            f" (nearest {nearest['label']} at {nearest['distance']:.4f} > {threshold:.4f})"
            if nearest
            else ""
        )
        head = f"{answer['image']} -> unknown{detail}"
    else:
        head = f"{answer['image']} -> ?"
    lines = [head]
    if len(matches) > 1 or threshold is None:
        lines += [
            f"  {rank}. {m['label']} (id {m['id']}, distance {m['distance']:.4f})"
            for rank, m in enumerate(matches, 1)
        ]
    return "\n".join(lines)


def run_add(args: argparse.Namespace) -> int:
    from siamkit.evaluation._alignment import counts_since, snapshot

    if bool(args.gallery) == bool(args.images):
        raise ConfigError("pass either --gallery DIR or IMAGE... with --label, not both")
    index = _load(args.index, args.model)
    before, counts = len(index), snapshot(index.encoder)
    progress = not args.quiet
    if args.gallery:
        added = index.add_folder(
            args.gallery, upsert=args.upsert, batch_size=args.batch_size, progress=progress
        )
    else:
        if args.label is None:
            raise ConfigError("IMAGE... need --label: the person they show")
        items = [str(p) for p in args.images]
        adding = index.upsert if args.upsert else index.add
        if args.upsert and not args.ids:
            raise ConfigError("--upsert needs --ids: the ids to replace")
        added = adding(
            items, labels=args.label, ids=args.ids, batch_size=args.batch_size, progress=progress
        )
    alignment = counts_since(index.encoder, counts)
    note = _calibrate(index, args.calibrate_far, args.calibrate_fpir)
    index.save(args.index)
    print(
        f"added {len(index) - before} items; {args.index} now holds {len(index)} images of "
        f"{len(index.labels())} people; {note}"
    )
    _print_alignment(alignment, added.skipped)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from siamkit.index import FaceIndex

    if not args.ids and not args.label:
        raise ConfigError("name the ids to remove, or --label PERSON")
    index = FaceIndex.load(args.index)
    ids = [_parse_key(text, set(index.ids())) for text in args.ids]
    labels = set(index.labels())
    for text in args.label:
        label = _parse_key(text, labels)
        if label not in labels:
            raise DataError(f"no person labelled {text!r} in {args.index}")
        ids += index.ids(label=label)
    removed = index.remove(ids)
    note = _calibrate(index, args.calibrate_far, args.calibrate_fpir)
    index.save(args.index)
    print(f"removed {removed} items; {args.index} now holds {len(index)} images; {note}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from siamkit.index import FaceIndex
    from siamkit.index.storage import read_manifest

    index = FaceIndex.load(args.index)
    manifest = read_manifest(args.index)
    info = {
        **index.info(),
        "folder": str(args.index),
        "siamkit_version": manifest.get("siamkit_version"),
        "faiss_version": manifest.get("faiss_version"),
        "files": manifest["files"],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cal = info["calibration"]
    threshold = (
        "none (not calibrated)"
        if info["threshold"] is None
        else f"{info['threshold']:.4f}"
        + (
            f" (FAR {cal['far']:.4g} for target {cal['target_far']:g}, TAR {cal['tar']:.3f}, "
            f"{cal['num_genuine']} genuine / {cal['num_impostor']} impostor pairs"
            f"{'' if cal['reliable'] else ', too few impostor pairs to trust'})"
            if cal
            else " (set by hand)"
        )
    )
    settings = ", ".join(
        f"{key} {info[key]}" for key in ("ef_search", "nprobe") if info[key] is not None
    )
    size = sum(entry["bytes"] for entry in info["files"].values())
    print(f"index:     {info['folder']}")
    print(f"items:     {info['count']} images of {info['people']} people")
    print(f"geometry:  {info['metric']}, {info['dim']}-d")
    print(f"faiss:     {info['index']}{f' ({settings})' if settings else ''}")
    print(f"threshold: {threshold}")
    print(f"identify:  {_identify_line(info)}")
    print(f"model:     {info['extra'].get('model', 'not recorded')}")
    fingerprint = info["encoder_fingerprint"]
    print(f"encoder:   {fingerprint[:16] + '...' if fingerprint else 'none (embeddings only)'}")
    print(f"files:     {len(info['files']) + 1}, {size / 1e6:.1f} MB")
    for warning in info["warnings"]:
        print(f"warning:   {warning}")
    return 0


def _identify_line(info: dict[str, Any]) -> str:
    fit, threshold = info["fpir_calibration"], info["identify_threshold"]
    if threshold is None:
        return "no 1:N threshold (identify falls back to the 1:1 one)"
    if fit is None:
        return f"{threshold:.4f} (set by hand)"
    fnir = "n/a" if fit["fnir"] is None else f"{fit['fnir']:.3f}"
    return (
        f"{threshold:.4f} (FPIR {fit['fpir']:.4g} for target {fit['target_fpir']:g}, expected "
        f"FNIR {fnir}, {fit['source']}, {fit['num_non_mated']} stranger searches at "
        f"{fit['gallery_size']} items{'' if fit['reliable'] else ', too few to trust'})"
    )


# -- helpers ---------------------------------------------------------------------------
def _load(folder: Path, model: Path | None) -> Any:
    from siamkit.encoders.base import load_encoder
    from siamkit.index import FaceIndex
    from siamkit.index.storage import read_manifest

    if model is None:
        recorded = (read_manifest(folder).get("extra") or {}).get("model")
        if not recorded:
            raise ConfigError(
                f"{folder} does not record its model: pass --model MODEL_DIR (the model the "
                "index was built with)"
            )
        model = Path(recorded)
    return FaceIndex.load(folder, encoder=load_encoder(model))


def _calibrate(index: Any, target_far: float | None, target_fpir: float | None) -> str:
    notes = [_calibrate_far(index, target_far), _calibrate_fpir(index, target_fpir)]
    return "; ".join(note for note in notes if note)


def _calibrate_far(index: Any, target_far: float | None) -> str:
    if not target_far:
        if index.threshold is None:
            return "no 1:1 threshold (calibrate with --calibrate-far)"
        return f"1:1 threshold {index.threshold:.4f} kept (recalibrate with --calibrate-far)"
    try:
        report = index.calibrate(target_far=target_far)
    except DataError as err:
        return f"1:1 not calibrated ({err})"
    warning = "" if report.reliable else "; too few impostor pairs for that rate, use with care"
    return (
        f"threshold {report.threshold:.4f} at FAR {report.far:.4g} (target {target_far:g}), "
        f"TAR {report.tar:.3f} on {report.num_genuine} genuine / {report.num_impostor} "
        f"impostor pairs{warning}"
    )


def _calibrate_fpir(index: Any, target_fpir: float | None) -> str:
    if not target_fpir:
        if index.identify_threshold is None:
            return "no 1:N threshold (calibrate with --calibrate-fpir)"
        return (
            f"1:N threshold {index.identify_threshold:.4f} kept (recalibrate with --calibrate-fpir)"
        )
    try:
        report = index.calibrate(target_fpir=target_fpir)
    except DataError as err:
        return f"1:N not calibrated ({err})"
    warning = "" if report.reliable else "; too few stranger searches for that rate, use with care"
    fnir = "n/a" if report.fnir is None else f"{report.fnir:.3f}"
    return (
        f"identify threshold {report.threshold:.4f} at FPIR {report.fpir:.4g} (target "
        f"{target_fpir:g}), expected FNIR {fnir} on {report.num_non_mated} stranger / "
        f"{report.num_mated} known searches{warning}"
    )


def _parse_key(text: str, known: set[Any]) -> Any:
    # Ids and labels may be ints; the command line gives strings.
    if text in known:
        return text
    try:
        number = int(text)
    except ValueError:
        return text
    return number if number in known else text
