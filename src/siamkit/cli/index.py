"""``siamkit index``: build, query and maintain a face index on disk."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from siamkit.exceptions import ConfigError, DataError
from siamkit.index.building import (
    DEFAULT_COLLECTION,
    DEFAULT_FAR,
    DEFAULT_FPIR,
    calibrate_lines,
)
from siamkit.index.stores.faiss.files import LOCK_TIMEOUT


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
        type=Path,
        metavar="INDEX_DIR",
        help="the index folder (written by `siamkit index build`); with --store milvus, "
        "give --uri and --collection instead",
    )
    _store_args(parser)


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        choices=("faiss", "milvus"),
        default="faiss",
        help="where the gallery lives: faiss (an index folder, default) or milvus (a "
        "collection in Milvus Lite or a Milvus server: pip install 'siamkit[milvus]')",
    )
    parser.add_argument(
        "--uri",
        metavar="URI",
        help="Milvus: a Milvus Lite file (faces.db) or a server (http://host:19530)",
    )
    parser.add_argument(
        "--collection",
        metavar="NAME",
        help=f"Milvus: the collection holding the gallery (default: {DEFAULT_COLLECTION})",
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


def _lock_timeout_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=LOCK_TIMEOUT,
        metavar="SECONDS",
        help="faiss store: how long to wait while another command writes the same index "
        "folder, which it locks from load to save (default: %(default)s)",
    )


def _add_build(actions: Any) -> None:
    parser = actions.add_parser(
        "build",
        help="enrol an image folder (one sub-folder per person) into a new index",
        description="Encode every image of GALLERY/<person>/<image> with the model, storing "
        "them in chunks as it goes, calibrate the 1:1 (verify) threshold on the gallery's own "
        "pairs and the 1:N (identify) threshold by searching each person as a stranger "
        "against the others, and save the index (an index folder, or a Milvus collection). "
        "Under torchrun the processes share the images out and merge them.",
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
        "--out", type=Path, metavar="INDEX_DIR", help="index folder to write (the faiss store)"
    )
    _store_args(parser)
    parser.add_argument(
        "--index",
        default="flat",
        metavar="KIND",
        help="flat (exact), hnsw, ivf, or (faiss) an index_factory string (default: %(default)s)",
    )
    _build_run_args(parser)
    _lock_timeout_arg(parser)
    _quiet_arg(parser)
    parser.set_defaults(handler=run_build)


def _build_run_args(parser: argparse.ArgumentParser) -> None:
    """How a build runs: saves, resume, calibration targets, batches, device."""
    parser.add_argument(
        "--save-every",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="faiss store: save the index folder as it grows, at most this often, so an "
        "interrupted build can --resume (default: %(default)s; Milvus stores as it goes)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted build: keep what is stored and enrol only the images "
        "not in it yet",
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
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the model embeds: cpu, cuda, cuda:N or auto (default: %(default)s); "
        "under torchrun, cuda means each process's own GPU (cuda:LOCAL_RANK)",
    )


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
    _lock_timeout_arg(parser)
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
    _lock_timeout_arg(parser)
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
    from siamkit.index.building import BuildSettings, BuildTarget, build_index

    _check_location(args, out=True)
    target = BuildTarget(args.store, args.out, args.uri,
                         args.collection or DEFAULT_COLLECTION, args.index)  # fmt: skip
    settings = BuildSettings(
        resume=args.resume, batch_size=args.batch_size, save_every=args.save_every,
        lock_timeout=args.lock_timeout, device=args.device, calibrate_far=args.calibrate_far,
        calibrate_fpir=args.calibrate_fpir, progress=not args.quiet,
    )  # fmt: skip
    built = build_index(args.model, args.gallery, target, settings)
    if built is None:  # another process of a torchrun group: the main one speaks
        return 0
    index = built.index
    print(
        f"indexed {len(index)} images of {len(index.labels())} people into {built.where} "
        f"({index.index_spec}, {index.metric}, {index.dim}-d); {'; '.join(built.calibration)}"
    )
    _print_alignment(built.alignment, built.enrolled.skipped)
    return 0


def _print_alignment(stats: Any, skipped: Any) -> None:
    """The aligner's counts for this command, and the images it skipped."""
    if stats is not None:
        print(f"alignment: {stats.summary()}")
    for item in skipped:
        print(f"  skipped ({item.reason}): {item.path if item.path is not None else item.position}")


def run_query(args: argparse.Namespace) -> int:
    if args.k <= 0:
        raise ConfigError(f"--k must be positive, got {args.k}")
    index = _open(args, args.model)
    from siamkit._embedding import embed_items

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
    from siamkit.alignment.counts import counts_since, snapshot

    if bool(args.gallery) == bool(args.images):
        raise ConfigError("pass either --gallery DIR or IMAGE... with --label, not both")
    if args.images and args.label is None:
        raise ConfigError("IMAGE... need --label: the person they show")
    if args.images and args.upsert and not args.ids:
        raise ConfigError("--upsert needs --ids: the ids to replace")
    where = _check_location(args)
    # The model loads before the lock is taken: other writers wait only for the change.
    encoder = _faiss_encoder(args, args.model) if args.store == "faiss" else None
    with _writing(args):
        index = _open(args, args.model, encoder=encoder)
        before, counts = len(index), snapshot(index.encoder)
        added = _add_items(index, args)
        alignment = counts_since(index.encoder, counts)
        note = "; ".join(calibrate_lines(index, args.calibrate_far, args.calibrate_fpir))
        _persist(index, args)
    print(
        f"added {len(index) - before} items; {where} now holds {len(index)} images of "
        f"{len(index.labels())} people; {note}"
    )
    _print_alignment(alignment, added.skipped)
    return 0


def _add_items(index: Any, args: argparse.Namespace) -> Any:
    progress = not args.quiet
    if args.gallery:
        return index.add_folder(
            args.gallery, upsert=args.upsert, batch_size=args.batch_size, progress=progress
        )
    adding = index.upsert if args.upsert else index.add
    return adding([str(p) for p in args.images], labels=args.label, ids=args.ids,
                  batch_size=args.batch_size, progress=progress)  # fmt: skip


def run_remove(args: argparse.Namespace) -> int:
    if not args.ids and not args.label:
        raise ConfigError("name the ids to remove, or --label PERSON")
    where = _check_location(args)
    with _writing(args):
        index = _open(args, None, with_model=False)
        ids = [_parse_key(text, set(index.ids())) for text in args.ids]
        labels = set(index.labels())
        for text in args.label:
            label = _parse_key(text, labels)
            if label not in labels:
                raise DataError(f"no person labelled {text!r} in {where}")
            ids += index.ids(label=label)
        removed = index.remove(ids)
        note = "; ".join(calibrate_lines(index, args.calibrate_far, args.calibrate_fpir))
        _persist(index, args)
    print(f"removed {removed} items; {where} now holds {len(index)} images; {note}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    where = _check_location(args)
    index = _open(args, None, with_model=False)
    info = {**index.info(), "folder": where}
    if args.store == "faiss":
        from siamkit.index.stores.faiss.files import read_manifest

        manifest = read_manifest(args.index)
        info["siamkit_version"] = manifest.get("siamkit_version")
        info["faiss_version"] = manifest.get("faiss_version")
        info["files"] = manifest["files"]
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
            f"{_caveat(cal, '1:1')})"
            if cal
            else " (set by hand)"
        )
    )
    settings = ", ".join(
        f"{key} {info[key]}" for key in ("ef_search", "nprobe") if info[key] is not None
    )
    print(f"index:     {info['folder']}")
    print(f"items:     {info['count']} images of {info['people']} people")
    print(f"geometry:  {info['metric']}, {info['dim']}-d")
    print(f"{info['store'] + ':':<10} {info['index']}{f' ({settings})' if settings else ''}")
    print(f"threshold: {threshold}")
    print(f"identify:  {_identify_line(info)}")
    print(f"model:     {info['extra'].get('model', 'not recorded')}")
    fingerprint = info["encoder_fingerprint"]
    print(f"encoder:   {fingerprint[:16] + '...' if fingerprint else 'none (embeddings only)'}")
    if "files" in info:
        size = sum(entry["bytes"] for entry in info["files"].values())
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
        f"{fit['gallery_size']} items{_caveat(fit, '1:N')})"
    )


# -- helpers ---------------------------------------------------------------------------


def _caveat(saved: dict[str, Any], kind: str) -> str:
    """``info``'s note on a saved calibration that cannot be trusted (empty when it can)."""
    from siamkit.thresholds import FarCalibration, FpirCalibration, unreliable_reason

    reason = unreliable_reason((FarCalibration if kind == "1:1" else FpirCalibration)(**saved))
    return "" if reason is None else f", not to trust: {reason}"


def _check_location(args: argparse.Namespace, out: bool = False) -> str:
    """Where the gallery is, checked: the index folder, or the Milvus collection."""
    folder = args.out if out else args.index
    flag = "--out" if out else "--index"
    if args.store == "faiss":
        milvus = [name for name, value in (("--uri", args.uri), ("--collection", args.collection))
                  if value is not None]  # fmt: skip
        if milvus:  # ignoring them would put the gallery in a folder, not where they say
            raise ConfigError(
                f"{' and '.join(milvus)} name a Milvus collection: add --store milvus (the "
                f"default faiss store keeps the gallery in the folder {flag} INDEX_DIR)"
            )
        if folder is None:
            raise ConfigError(f"give {flag} INDEX_DIR (or --store milvus --uri URI)")
        return str(folder)
    if args.uri is None:
        raise ConfigError("--store milvus needs --uri: a Milvus Lite file or http://host:19530")
    if folder is not None:
        raise ConfigError(f"{flag} is the faiss store's folder; with --store milvus give --uri")
    from siamkit.index.stores.milvus import check_collection_name

    check_collection_name(_milvus_options(args)["collection"])  # before a Lite file is made
    return f"the collection {_milvus_options(args)['collection']!r} at {args.uri}"


def _milvus_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"uri": args.uri, "collection": args.collection or DEFAULT_COLLECTION}


def _open(
    args: argparse.Namespace, model: Path | None, with_model: bool = True, encoder: Any = None
) -> Any:
    """The gallery named on the command line, with its model (``--model`` or the recorded one,
    or ``encoder`` when the caller loaded it already)."""
    from siamkit.index import FaceIndex

    _check_location(args)
    if args.store == "faiss":
        if not with_model:
            return FaceIndex.load(args.index)
        if encoder is None:
            encoder = _faiss_encoder(args, model)
        return FaceIndex.load(args.index, encoder=encoder)
    options = _milvus_options(args)
    bare = FaceIndex.connect(**options)
    if not with_model:
        return bare
    model_path = _model(model, bare.extra.get("model"), f"the collection {options['collection']!r}")
    return FaceIndex.connect(_load_model(model_path), store=bare.store)  # one connection


def _faiss_encoder(args: argparse.Namespace, model: Path | None) -> Any:
    """The model of the index folder ``--index``: ``--model``, else the one it records."""
    from siamkit.index.stores.faiss.files import read_manifest

    recorded = (read_manifest(args.index).get("extra") or {}).get("model")
    return _load_model(_model(model, recorded, args.index))


def _writing(args: argparse.Namespace) -> Any:
    """The index folder's write lock (the faiss store; Milvus needs none)."""
    from siamkit.index.building import gallery_writing

    return gallery_writing(args.index if args.store == "faiss" else None, args.lock_timeout)


def _model(given: Path | None, recorded: Any, where: Any) -> Path:
    if given is not None:
        return given
    if not recorded:
        raise ConfigError(
            f"{where} does not record its model: pass --model MODEL_DIR (the model the index "
            "was built with)"
        )
    return Path(recorded)


def _load_model(path: Path) -> Any:
    from siamkit import load_encoder  # the ONNX Runtime one where torch is missing

    return load_encoder(path)


def _persist(index: Any, args: argparse.Namespace) -> None:
    """Save the gallery: its folder (faiss), or its record in the collection (milvus)."""
    index.save(args.index if args.store == "faiss" else None)


def _parse_key(text: str, known: set[Any]) -> Any:
    # Ids and labels may be ints; the command line gives strings.
    if text in known:
        return text
    try:
        number = int(text)
    except ValueError:
        return text
    return number if number in known else text
