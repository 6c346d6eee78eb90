"""Speed of ``siamkit.FaceIndex`` against raw FAISS and numpy brute force, in one run.

Data: random clustered unit vectors (``--dim``, 128 by default) standing in for
face embeddings, clustered on two levels: groups of about 1,000 images, people
in a group (1 to 19 images each, 10 on average; a person's centre at norm 1.0
of noise from the group's), images around their person (noise of norm 0.6,
so cosine ~0.75 within a person). Queries are fresh images of enrolled people.
All vectors are unit length and the metric is cosine, so raw FAISS gets the
same inner-product index FaceIndex builds.

For each size and index kind (flat, hnsw, ivf) it measures, for FaceIndex and
for raw FAISS built with the same settings:

* add: seconds to build the index from the vectors;
* batch QPS: queries per second of one ``search`` call on a batch, k = 10
  (FaceIndex three ways: ``search``, whose ``Match`` objects are made as rows
  are read; ``search`` then reading every ``Match``; ``knn`` returning arrays);
  best of ``--repeats`` interleaved runs, all on FaceIndex's own FAISS object
  (two builds of one HNSW graph or IVF index differ in speed by more than the
  overhead measured);
* single-query latency: median over one-at-a-time queries, interleaved with
  raw FAISS, and what FaceIndex adds: the median of its time outside FAISS
  (each call times the FAISS search inside it) less raw FAISS's, and the
  difference of the two latency medians; and the same for the least a
  wrapper can do (the "floor");
* recall@10 against exact search (flat), on ``--recall-queries`` queries;
* bytes per vector: raw FAISS's index file, FaceIndex's saved folder (which
  also keeps every vector, for removal and rebuilds), and FaceIndex's save and
  load times;

and numpy brute force (``queries @ vectors.T`` then ``argpartition``) on a
subsample of queries. HNSW also reports recall and QPS at other efSearch
values, IVF at other nprobe values. Above ``--raw-hnsw-max`` vectors raw FAISS
HNSW is not built a second time (minutes at 1M): its add time is FaceIndex's
time inside FAISS, its recall and size FaceIndex's graph's. Torch runs one thread
(``--torch-threads``): on 2 busy cores its OpenMP pool and FAISS's fight, and
``geometry.prepare`` of a query batch then took 15 ms instead of 0.1 ms.

FaceIndex over Milvus Lite (``--stores``, ``--milvus-sizes``; the ``milvus``
extra) runs on the same vectors and queries: each index kind maps to Milvus
FLAT, HNSW or IVF_FLAT, enrolled ``--milvus-batch`` rows per ``add`` call,
then flushed, and searched once Lite has built every segment's index. It
reports enrolment vectors/s (the ``add`` calls alone, and until indexed),
``knn`` batch QPS, the median latency of one-at-a-time ``search`` (and how much
of it is pymilvus and Lite), and recall@10 against exact search. Lite is an
embedded, in-process stand-in for a Milvus server; its figures are its own
(see the note the report prints).

The ORL faces, when present, give an end-to-end row: encoding and enrolling
400 images, calibrating, and identifying one image.

Targets (issue #3): FaceIndex batch search within 1.1x of raw FAISS, at most
50 us added to a single query, default HNSW recall@10 >= 0.98 at 1M.

Writes ``benchmarks/results/index_bench.json`` and ``.md``.

Usage::

    python benchmarks/index_bench.py [--sizes 100000 1000000] [--quick]
        [--kinds flat hnsw ivf] [--stores faiss milvus] [--milvus-sizes 100000]
        [--threads 2] [--model MODEL_DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

import siamkit
from siamkit.index import FaceIndex
from siamkit.index.stores.faiss.engine import HNSW_EF_CONSTRUCTION, HNSW_M, ivf_lists

ROOT = Path(__file__).resolve().parent
DEFAULT_ORL = ROOT.parent.parent / "shared" / "data" / "att_faces"
K = 10
GROUP_SIZE = 1000  # images per top-level cluster
PERSON_SPREAD = 1.0  # norm of a person's offset from their group's centre
IMAGE_NOISE = 0.6  # norm of an image's offset from its person's centre


# -- data ------------------------------------------------------------------------------
def clustered_unit_vectors(
    n: int, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors, labels, person centres)``, all unit length.

    Two levels of clusters, like face embeddings (which group by age, sex,
    ethnicity...): groups of about 1,000 images, people within a group (1 to
    19 images each, 10 on average), images around their person.
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 20, size=n // 5 + 1)
    labels = np.repeat(np.arange(len(counts)), counts)[:n]
    people = int(labels[-1]) + 1
    groups = _unit(rng.standard_normal((max(1, n // GROUP_SIZE), dim), dtype=np.float32))
    centres = _noisy(groups[rng.integers(0, len(groups), people)], PERSON_SPREAD, rng)
    return _noisy(centres, IMAGE_NOISE, rng, labels), labels, centres


def make_queries(centres: np.ndarray, labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Fresh images of enrolled people."""
    rng = np.random.default_rng(seed + 1)
    return _noisy(centres, IMAGE_NOISE, rng, rng.choice(np.unique(labels), size=count))


def _noisy(
    centres: np.ndarray, noise: float, rng: np.random.Generator, rows: np.ndarray | None = None
) -> np.ndarray:
    rows = np.arange(len(centres)) if rows is None else rows
    out = np.empty((len(rows), centres.shape[1]), dtype=np.float32)
    scale = np.float32(noise / np.sqrt(centres.shape[1]))  # noise of norm ~ `noise`
    for start in range(0, len(rows), 100_000):  # bounded temporaries at 1M
        part = rows[start : start + 100_000]
        shape = (len(part), centres.shape[1])
        out[start : start + len(part)] = _unit(
            centres[part] + scale * rng.standard_normal(shape, dtype=np.float32)
        )
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# -- timing helpers --------------------------------------------------------------------
def best_qps(functions: dict[str, Callable[[], Any]], count: int, repeats: int) -> dict[str, float]:
    """Queries per second of each function, best of ``repeats`` interleaved runs."""
    best = dict.fromkeys(functions, 0.0)
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = max(best[name], count / (time.perf_counter() - start))
    return best


def single_latency(index: FaceIndex, raw: Any, queries: np.ndarray) -> dict[str, float]:
    """Median single-query latencies (ms) of FaceIndex and raw FAISS, and what FaceIndex adds (µs).

    Interleaved, in rotating order, on disjoint thirds of the queries: the
    second search of one query would find the first one's path through the
    index already in the CPU cache. Every call times the FAISS search inside
    it, and the rest is its time outside FAISS; "added" is the median of that
    for FaceIndex less the median for raw FAISS (the timing itself). The
    difference of the two latency medians is kept too, but on a flat index it
    is lost in the noise of the scan. "floor" is the added time of the least
    any wrapper does: check the query with one NumPy call and turn FAISS's
    arrays into Python lists. After a flat scan of a large index has swept the
    CPU caches, that alone costs tens of µs.
    """
    inside: list[float] = []

    def timed(search: Callable[[np.ndarray, int], Any]) -> Callable[[np.ndarray, int], Any]:
        def run(vectors: np.ndarray, k: int) -> Any:
            start = time.perf_counter()
            try:
                return search(vectors, k)
            finally:
                inside.append(time.perf_counter() - start)

        return run

    backend = index.store.backend
    raw_search = timed(raw.search)

    def floor_wrapper(query: np.ndarray) -> list[tuple[int, float]]:
        if not math.isfinite(float(np.dot(query, query))):
            raise ValueError("not finite")
        scores, rows = backend.search(query[None], K)
        return list(zip(rows.tolist()[0], scores.tolist()[0], strict=True))

    calls = {
        "raw": lambda q: raw_search(q[None], K),
        "ours": lambda q: index.search(q, K),
        "floor": floor_wrapper,
    }
    names = list(calls)
    third = len(queries) // 3
    backend.search = timed(backend.search)  # type: ignore[method-assign]
    total: dict[str, list[float]] = {name: [] for name in calls}
    outside: dict[str, list[float]] = {name: [] for name in calls}
    try:
        for q in queries[: min(20, third)]:  # warm code paths
            for call in calls.values():
                call(q)
        for i in range(third):
            for name in names[i % 3 :] + names[: i % 3]:
                query = queries[i + third * names.index(name)]
                inside.clear()
                start = time.perf_counter()
                calls[name](query)
                total[name].append(time.perf_counter() - start)
                outside[name].append(total[name][-1] - sum(inside))
    finally:
        del backend.search
    median = {name: statistics.median(outside[name]) for name in calls}
    ours_ms, raw_ms = (1e3 * statistics.median(total[name]) for name in ("ours", "raw"))
    return {
        "ours_ms": ours_ms,
        "raw_ms": raw_ms,
        "added_us": 1e6 * (median["ours"] - median["raw"]),
        "floor_us": 1e6 * (median["floor"] - median["raw"]),
        "timing_us": 1e6 * median["raw"],
        "median_difference_us": 1e3 * (ours_ms - raw_ms),
    }


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    pairs = zip(found, truth, strict=True)
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in pairs]
    return float(np.sum(hits) / truth.size)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


# -- raw FAISS built the way FaceIndex builds it ---------------------------------------
def build_raw(kind: str, x: np.ndarray, index: FaceIndex) -> Any:
    d = x.shape[1]
    if kind == "flat":
        raw = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        raw = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        raw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        raw.hnsw.efSearch = index.ef_search
    else:
        raw = faiss.index_factory(d, f"IVF{ivf_lists(len(x))},Flat", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(raw).cp.min_points_per_centroid = 1
        raw.train(x)
        raw.nprobe = index.nprobe
    raw.add(x)
    return raw


def bench_kind(
    kind: str,
    x: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray | None,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], np.ndarray]:
    n = len(x)
    index = FaceIndex(metric="cosine", index=kind, dim=x.shape[1])
    inside = _time_faiss_work(index)
    start = time.perf_counter()
    index.add(x, labels=labels)
    add_ours = time.perf_counter() - start
    if kind == "hnsw" and n > args.raw_hnsw_max:
        # Building HNSW twice at this size costs minutes: raw FAISS's add time is
        # FaceIndex's time inside FAISS, and its recall and size FaceIndex's graph's.
        raw, add_raw, raw_source = index.store.backend.index, inside[0], "faceindex's graph"
    else:
        start = time.perf_counter()
        raw = build_raw(kind, x, index)
        add_raw, raw_source = time.perf_counter() - start, "built separately"
    # Speed is compared on FaceIndex's own FAISS object: two builds of an HNSW
    # graph or of IVF lists differ in speed by more than the overhead measured.
    same = index.store.backend.index

    batch = queries[: _batch_size(lambda q: same.search(q, K), queries, args)]
    qps = best_qps(
        {
            "raw": lambda: same.search(batch, K),
            "search": lambda: index.search(batch, K),
            "search_read": lambda: index.search(batch, K).to_list(),
            "knn": lambda: index.knn(batch, K),
        },
        len(batch),
        args.repeats,
    )
    singles = queries[: _single_count(kind, n, args)]
    latency = single_latency(index, same, singles)
    probe = queries[: args.recall_queries]
    found = index.knn(probe, K).ids.astype(np.int64)  # automatic ids are the rows
    raw_found = raw.search(probe, K)[1]
    reference = found if truth is None else truth
    sweep = _sweep(kind, index, probe, reference, args)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        raw_path = Path(tmp) / "raw.faiss"
        faiss.write_index(raw, str(raw_path))
        start = time.perf_counter()
        folder = index.save(Path(tmp) / "index")
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        FaceIndex.load(folder)
        load_s = time.perf_counter() - start
        raw_bytes, ours_bytes = raw_path.stat().st_size, folder_bytes(folder)
    row = {
        "size": n,
        "kind": kind,
        "settings": {"ef_search": index.ef_search, "nprobe": index.nprobe},
        "raw_index": raw_source,
        "add_s": {"faceindex": add_ours, "faiss": add_raw, "faceindex_inside_faiss": inside[0]},
        "batch_queries": len(batch),
        "batch_qps": {
            "faceindex_search": qps["search"],
            "faceindex_search_read": qps["search_read"],
            "faceindex_knn": qps["knn"],
            "faiss": qps["raw"],
        },
        "batch_slowdown": {
            "search": qps["raw"] / qps["search"],
            "search_read": qps["raw"] / qps["search_read"],
            "knn": qps["raw"] / qps["knn"],
        },
        "single": {"queries": len(singles), **latency},
        "recall_at_10": {
            "faceindex": recall_at_k(found, reference),
            "faiss": recall_at_k(raw_found, reference),
        },
        "sweep": sweep,
        "bytes_per_vector": {"faceindex_saved": ours_bytes / n, "faiss": raw_bytes / n},
        "save_s": save_s,
        "load_s": load_s,
    }
    return row, found


def _time_faiss_work(index: FaceIndex) -> list[float]:
    """Seconds FaceIndex spends in FAISS (train + add), accumulated in a one-item list."""
    spent = [0.0]
    backend = index.store.backend
    real_sync = backend.sync

    def timed(vectors: np.ndarray) -> None:
        start = time.perf_counter()
        real_sync(vectors)
        spent[0] += time.perf_counter() - start

    backend.sync = timed  # type: ignore[method-assign]
    return spent


def _batch_size(search: Callable[[np.ndarray], Any], queries: np.ndarray, args) -> int:
    # About --batch-seconds of raw FAISS work per run, so slow indexes stay affordable.
    probe = queries[:200]
    start = time.perf_counter()
    search(probe)
    qps = len(probe) / (time.perf_counter() - start)
    return int(min(len(queries), max(500, qps * args.batch_seconds)))


def _sweep(
    kind: str, index: FaceIndex, probe: np.ndarray, truth: np.ndarray, args
) -> list[dict[str, Any]]:
    """Recall@10 and QPS of FaceIndex at other efSearch / nprobe values."""
    name, values = {"hnsw": ("ef_search", args.ef_sweep), "ivf": ("nprobe", args.nprobe_sweep)}.get(
        kind, (None, [])
    )
    if name is None:
        return []
    default, out = getattr(index, name), []
    for value in values:
        setattr(index, name, value)
        start = time.perf_counter()
        found = index.knn(probe, K).ids.astype(np.int64)
        seconds = time.perf_counter() - start
        out.append({name: value, "recall_at_10": recall_at_k(found, truth),
                    "qps": len(probe) / seconds})  # fmt: skip
    setattr(index, name, default)
    return out


def _single_count(kind: str, n: int, args: argparse.Namespace) -> int:
    if kind == "flat":
        # A flat query scans everything (ms), so its median needs many of them to
        # resolve tens of µs: about 4 s of queries per wrapper at 1M.
        return int(min(args.single_queries, max(300, 3e8 // n)))
    return args.single_queries


def bench_numpy(x: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    count = max(50, min(len(queries), int(5e7 // len(x))))
    batch = queries[:count]

    def search(q: np.ndarray) -> np.ndarray:
        scores = q @ x.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)

    start = time.perf_counter()
    found = search(batch)
    qps = count / (time.perf_counter() - start)
    singles = [batch[i : i + 1] for i in range(min(20, count))]
    times = []
    for q in singles:
        start = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - start)
    return {
        "size": len(x),
        "kind": "numpy",
        "batch_queries": count,
        "batch_qps": {"numpy": qps},
        "single": {"queries": len(singles), "ms": 1e3 * statistics.median(times)},
        "recall_at_10": recall_at_k(found, truth[:count]) if len(truth) >= count else None,
        "bytes_per_vector": x.shape[1] * 4,
    }


# -- FaceIndex over Milvus Lite --------------------------------------------------------
def bench_milvus(
    kind: str, x: np.ndarray, labels: np.ndarray, queries: np.ndarray, truth: np.ndarray, args
) -> dict[str, Any]:
    """FaceIndex over a Milvus Lite file: enrolment, batch and single search, recall@10.

    Enrols in ``--milvus-batch`` rows per ``add`` call, then flushes and waits
    until Lite has built the index of every flushed segment: before that, a
    search scans unindexed rows (hundreds of ms per query at 100k), which is
    not the steady state. Enrolment is reported both ways: vectors/s of the
    ``add`` calls alone, and until searchable through the index.
    """
    n = len(x)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        db = Path(tmp) / "bench.db"
        index = FaceIndex(metric="cosine", dim=x.shape[1], index=kind, store="milvus",
                          uri=str(db), collection="bench")  # fmt: skip
        store = index.store
        try:
            start = time.perf_counter()
            for first in range(0, n, args.milvus_batch):
                rows = slice(first, first + args.milvus_batch)
                index.add(x[rows], labels=labels[rows], ids=list(range(first, min(n, rows.stop))))
            add_s = time.perf_counter() - start
            start = time.perf_counter()
            store.client.flush(store.collection)
            flush_s = time.perf_counter() - start
            index_s, indexed = _wait_for_lite_index(db, store.collection, args.milvus_index_wait)
            searches = _milvus_searches(index, queries, truth, args)
        finally:
            store.close()
    return {
        "size": n,
        "store": "milvus-lite",
        "kind": kind,
        "milvus_index": _milvus_index_name(kind),
        "enrol": {
            "batch_rows": args.milvus_batch,
            "add_s": add_s,
            "flush_s": flush_s,
            "index_wait_s": index_s,
            "index_complete": indexed,
            "vectors_per_s": n / add_s,
            "vectors_per_s_until_indexed": n / (add_s + flush_s + index_s),
        },
        **searches,
    }


def _milvus_index_name(kind: str) -> str:
    from siamkit.index.stores.milvus import INDEX_KINDS

    name, params = INDEX_KINDS[kind]
    return name + (f" ({', '.join(f'{k} {v}' for k, v in params.items())})" if params else "")


def _milvus_searches(
    index: FaceIndex, queries: np.ndarray, truth: np.ndarray, args
) -> dict[str, Any]:
    """Batch QPS of ``knn``, single-query latency of ``search``, recall@10 of ``knn``."""
    index.knn(queries[:10], K)  # warm: the first search loads what Lite keeps lazily
    batch = queries[: _batch_size(lambda q: index.knn(q, K), queries, args)]
    qps = best_qps({"knn": lambda: index.knn(batch, K)}, len(batch), args.repeats)["knn"]
    singles = queries[: args.milvus_single_queries]
    latency = _milvus_latency(index, singles)
    probe = queries[: args.recall_queries]
    found = index.knn(probe, K).ids
    found = np.array([[-1 if i is None else int(i) for i in row] for row in found], np.int64)
    return {
        "batch_queries": len(batch),
        "batch_qps": qps,
        "single": {"queries": len(singles), **latency},
        "recall_at_10": recall_at_k(found, truth[: len(probe)]),
    }


def _milvus_latency(index: FaceIndex, queries: np.ndarray) -> dict[str, float]:
    """Median and 90th percentile of one-at-a-time ``search`` (ms), and FaceIndex's share.

    Each ``MilvusClient.search`` call is timed (the round trip to Lite's
    in-process gRPC server and its search); "outside" is the rest of
    FaceIndex's call, its own work per query.
    """
    client = index.store.client
    real_search = client.search
    inside: list[float] = []

    def timed(*a: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return real_search(*a, **kw)
        finally:
            inside.append(time.perf_counter() - start)

    client.search = timed
    total, outside = [], []
    try:
        for q in queries:
            inside.clear()
            start = time.perf_counter()
            index.search(q, K)
            total.append(time.perf_counter() - start)
            outside.append(total[-1] - sum(inside))
    finally:
        del client.search
    return {
        "ms": 1e3 * statistics.median(total),
        "p90_ms": 1e3 * float(np.percentile(total, 90)),
        "client_ms": 1e3 * (statistics.median(total) - statistics.median(outside)),
        "faceindex_us": 1e6 * statistics.median(outside),
    }


def _wait_for_lite_index(db: Path, collection: str, limit: float) -> tuple[float, bool]:
    """Seconds until every flushed segment of a Lite collection has its index file.

    Lite builds segment indexes on a background thread after a flush, and
    ``describe_index`` already reports them finished, so the index files
    (``indexes/<segment>.vector.*.idx`` beside ``data/<segment>.parquet``)
    are the signal. Returns the seconds waited and whether they all came.
    """
    partitions = db / "collections" / collection / "partitions"
    start = time.perf_counter()
    while True:
        segments = {p.stem: p.parent.parent for p in partitions.glob("*/data/*.parquet")}
        built = all(any((part / "indexes").glob(f"{stem}.vector.*")) for stem, part in
                    segments.items())  # fmt: skip
        waited = time.perf_counter() - start
        if (segments and built) or waited > limit:
            return waited, bool(segments and built)
        time.sleep(0.2)


def exact_neighbours(x: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Rows of the ``K`` nearest vectors by cosine (exact, raw FAISS flat)."""
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    return flat.search(probe, K)[1]


# -- ORL end to end --------------------------------------------------------------------
def bench_orl(root: Path, model: Path | None, kind: str = "hnsw") -> dict[str, Any]:
    encoder = (siamkit.load_encoder(model) if model else siamkit.create_encoder("compact")).eval()
    start = time.perf_counter()
    index = FaceIndex(encoder, index=kind)
    index.add_folder(root)
    enrol_s = time.perf_counter() - start
    start = time.perf_counter()
    report = index.calibrate(target_far=0.001)
    calibrate_s = time.perf_counter() - start
    probe = sorted((root / "s1").iterdir())[0]
    index.identify(probe)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        index.identify(probe)
        times.append(time.perf_counter() - start)
    return {
        "images": len(index),
        "people": len(index.labels()),
        "model": str(model) if model else "untrained compact (timing only)",
        "index": kind,
        "enrol_s": enrol_s,
        "calibrate_s": calibrate_s,
        "calibration": report.to_dict(),
        "identify_image_ms": 1e3 * statistics.median(times),
    }


# -- report ----------------------------------------------------------------------------
def _slowdowns(slowdown: dict[str, float]) -> str:
    return " / ".join(f"{slowdown[name]:.3f}×" for name in ("search", "search_read", "knn"))


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# FaceIndex benchmark",
        "",
        f"{results['machine']['cpus']} CPUs, FAISS threads {results['machine']['faiss_threads']}, "
        f"torch threads {results['machine']['torch_threads']}, "
        f"faiss {results['machine']['faiss']}, siamkit {results['machine']['siamkit']}; "
        f"dim {results['config']['dim']}, k = {K}, cosine.",
        "",
        "| size | index | add s (FaceIndex / faiss) | batch QPS FaceIndex search / search, "
        "all read / knn / faiss | slowdown search / search, all read / knn "
        "| single ms (FaceIndex / faiss) | added µs (difference) | floor µs | recall@10 "
        "(FaceIndex / faiss) | bytes/vector (FaceIndex saved / faiss) | save / load s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if row["kind"] == "numpy":
            recall = "—" if row["recall_at_10"] is None else f"{row['recall_at_10']:.3f}"
            lines.append(
                f"| {row['size']:,} | numpy brute force | — | {row['batch_qps']['numpy']:,.0f} "
                f"({row['batch_queries']} queries) | — | {row['single']['ms']:.2f} | — | — "
                f"| {recall} "
                f"| {row['bytes_per_vector']} | — |"
            )
            continue
        q, s, a = row["batch_qps"], row["single"], row["add_s"]
        settings = ", ".join(f"{k} {v}" for k, v in row["settings"].items() if v is not None)
        mark = "" if row["raw_index"] == "built separately" else "*"
        lines.append(
            f"| {row['size']:,} | {row['kind']}{f' ({settings})' if settings else ''} "
            f"| {a['faceindex']:.2f} / {a['faiss']:.2f}{mark} "
            f"| {q['faceindex_search']:,.0f} / {q['faceindex_search_read']:,.0f} "
            f"/ {q['faceindex_knn']:,.0f} / {q['faiss']:,.0f} "
            f"| {_slowdowns(row['batch_slowdown'])} "
            f"| {s['ours_ms']:.3f} / {s['raw_ms']:.3f} "
            f"| {s['added_us']:.0f} ({s['median_difference_us']:.0f}) | {s['floor_us']:.0f} "
            f"| {row['recall_at_10']['faceindex']:.4f} / {row['recall_at_10']['faiss']:.4f} "
            f"| {row['bytes_per_vector']['faceindex_saved']:.0f} / "
            f"{row['bytes_per_vector']['faiss']:.0f} | {row['save_s']:.2f} / {row['load_s']:.2f} |"
        )
    lines += [
        "",
        "Speed (batch QPS, single ms) is compared on one FAISS object, FaceIndex's own, "
        "searched through FaceIndex and directly; add time, recall and bytes come from a "
        "raw FAISS index built separately with the same settings, except where marked \\*: "
        "there raw FAISS is FaceIndex's own HNSW graph and its add time the time "
        "FaceIndex.add spent inside FAISS (building HNSW twice at this size costs minutes).",
        "Batch QPS: best of interleaved runs. `search` returns a `SearchResults` whose "
        '`Match` objects are made when read; "search, all read" also reads every one. '
        "Single: medians over one-at-a-time queries (interleaved, disjoint halves of the "
        'queries); "added" is the median of FaceIndex\'s time outside FAISS per query (each '
        "call times its FAISS search) less raw FAISS's (the timing itself), and "
        "in brackets the difference of the two medians, which on flat indexes is mostly the "
        'noise of the scan; "floor" is the time outside FAISS of the least a wrapper does '
        "(one NumPy check of the query, FAISS's arrays to Python lists).",
    ]
    sweeps = [row for row in results["rows"] if row.get("sweep")]
    if sweeps:
        lines += ["", "| size | index | setting | recall@10 | QPS (FaceIndex.knn) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for row in sweeps:
            for point in row["sweep"]:
                name = "ef_search" if "ef_search" in point else "nprobe"
                lines.append(
                    f"| {row['size']:,} | {row['kind']} | {name} {point[name]} "
                    f"| {point['recall_at_10']:.4f} | {point['qps']:,.0f} |"
                )
    if results.get("orl"):
        orl = results["orl"]
        cal = orl["calibration"]
        lines += [
            "",
            f"ORL end to end ({orl['images']} images, {orl['people']} people, {orl['index']}, "
            f"model: {orl['model']}): enrol {orl['enrol_s']:.2f} s, calibrate "
            f"{orl['calibrate_s']:.3f} s (threshold {cal['threshold']:.4f} at FAR "
            f"{cal['far']:.4f}, TAR {cal['tar']:.3f}, {cal['num_genuine']} genuine / "
            f"{cal['num_impostor']} impostor pairs), identify one image "
            f"{orl['identify_image_ms']:.2f} ms.",
        ]
    lines += store_lines(results)
    lines += ["", f"Total run time {results['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def store_lines(results: dict[str, Any]) -> list[str]:
    """The FaceIndex-over-each-store table, its Milvus Lite details and what they mean."""
    faiss_rows = [row for row in results["rows"] if row["kind"] != "numpy"]
    milvus_rows = results.get("milvus_rows", [])
    if not milvus_rows:
        return []
    lines = [
        "",
        "## FaceIndex over each store",
        "",
        f"pymilvus {results['machine'].get('pymilvus')}, milvus-lite "
        f"{results['machine'].get('milvus-lite')}; queries and vectors as above.",
        "",
        "| size | store | index | enrol vectors/s (add calls / until indexed) "
        "| batch QPS (knn) | single query ms (median) | recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(faiss_rows + milvus_rows, key=lambda r: (r["size"], r["kind"])):
        if row.get("store") == "milvus-lite":
            enrol, qps, single = row["enrol"], row["batch_qps"], row["single"]["ms"]
            rate = f"{enrol['vectors_per_s']:,.0f} / {enrol['vectors_per_s_until_indexed']:,.0f}"
            name, recall = f"Milvus Lite {row['milvus_index']}", row["recall_at_10"]
        else:
            rate = f"{row['size'] / row['add_s']['faceindex']:,.0f} (index built in add)"
            qps, single = row["batch_qps"]["faceindex_knn"], row["single"]["ours_ms"]
            settings = ", ".join(f"{k} {v}" for k, v in row["settings"].items() if v is not None)
            name = f"FAISS {row['kind']}" + (f" ({settings})" if settings else "")
            recall = row["recall_at_10"]["faceindex"]
        store = "milvus-lite" if row.get("store") == "milvus-lite" else "faiss"
        lines.append(
            f"| {row['size']:,} | {store} | {name} | {rate} | {qps:,.0f} | {single:.3f} "
            f"| {recall:.4f} |"
        )
    lines += [
        "",
        "| size | Milvus Lite index | add s (rows per add) | flush s | index build wait s "
        "| batch queries | single ms median / p90 | of which pymilvus + Lite ms "
        "| FaceIndex µs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in milvus_rows:
        enrol, single = row["enrol"], row["single"]
        wait = f"{enrol['index_wait_s']:.1f}" + ("" if enrol["index_complete"] else " (gave up)")
        lines.append(
            f"| {row['size']:,} | {row['milvus_index']} | {enrol['add_s']:.1f} "
            f"({enrol['batch_rows']:,}) | {enrol['flush_s']:.1f} | {wait} "
            f"| {row['batch_queries']:,} | {single['ms']:.1f} / {single['p90_ms']:.1f} "
            f"| {single['client_ms']:.1f} | {single['faceindex_us']:.0f} |"
        )
    return [*lines, "", MILVUS_NOTE]


MILVUS_NOTE = (
    "Milvus Lite is an embedded stand-in for a Milvus server, and its figures are Lite's, "
    "not Milvus's. Lite (the `milvus-lite` package) runs in this Python process behind a "
    "local gRPC server: rows go through pymilvus as Python lists, are kept as Parquet "
    "segments, and each flushed segment gets a FAISS index (HNSW, IVF_FLAT or brute force) "
    "built on a background thread after the flush; enrolment 'until indexed' includes the "
    "flush and that build. Searches before the build scan unindexed rows and are several "
    "times slower, so the searches here start once every segment has its index file. Each "
    "search call then also makes a pass in Python over every row of the segment (which "
    "rows are live) before FAISS runs, so a single query costs tens of ms at 100k and grows "
    "with the gallery, while the FAISS search inside takes well under a millisecond; batch "
    "QPS pays that pass once per call. The search breadth is Lite's default (HNSW ef 64, "
    "IVF nprobe 10 of 1,024 lists): siamkit passes none. Recall@10 is against exact "
    "search (FAISS flat) on the same queries."
)


def _milvus_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("pymilvus", "milvus-lite"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"])
    parser.add_argument("--queries", type=int, default=10_000, help="batch queries")
    parser.add_argument("--single-queries", type=int, default=1000)
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch-seconds", type=float, default=2.0, help="raw FAISS seconds per batch run"
    )
    parser.add_argument("--ef-sweep", type=int, nargs="*", default=[32, 64, 96, 128, 192, 256])
    parser.add_argument("--nprobe-sweep", type=int, nargs="*", default=[4, 8, 16, 32, 64])
    parser.add_argument(
        "--raw-hnsw-max",
        type=int,
        default=300_000,
        help="above this size raw FAISS HNSW is not built again (timed on FaceIndex's graph)",
    )
    parser.add_argument("--threads", type=int, default=None, help="FAISS threads")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on 2 busy cores, torch's and FAISS's OpenMP "
        "pools fight, and normalising a query batch with 2 torch threads took 15 ms, not 0.1)",
    )
    parser.add_argument(
        "--stores", nargs="+", choices=["faiss", "milvus"], default=["faiss", "milvus"]
    )
    parser.add_argument(
        "--milvus-sizes", type=int, nargs="*", default=[100_000], help="sizes on Milvus Lite"
    )
    parser.add_argument("--milvus-batch", type=int, default=10_000, help="rows per add call")
    parser.add_argument("--milvus-single-queries", type=int, default=200)
    parser.add_argument(
        "--milvus-index-wait", type=float, default=600.0, help="most seconds to wait for Lite"
    )
    parser.add_argument("--quick", action="store_true", help="sizes 20000, fewer queries")
    parser.add_argument("--orl", type=Path, default=DEFAULT_ORL)
    parser.add_argument("--model", type=Path, default=None, help="trained model for ORL")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--tmp", default=None, help="folder for temporary saves")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries, args.single_queries = [20_000], 2000, 200
        args.recall_queries, args.repeats = 500, 2
        args.milvus_sizes, args.milvus_single_queries = [20_000], 50
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    began = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "torch_threads": torch.get_num_threads(),
            "faiss": faiss.__version__,
            "numpy": np.__version__,
            "siamkit": siamkit.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            **_milvus_versions(),
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [],
        "milvus_rows": [],
    }
    faiss_sizes = args.sizes if "faiss" in args.stores else []
    milvus_sizes = args.milvus_sizes if "milvus" in args.stores else []
    for n in sorted(set(faiss_sizes) | set(milvus_sizes)):
        x, labels, centres = clustered_unit_vectors(n, args.dim, args.seed)
        queries = make_queries(centres, labels, args.queries, args.seed)
        truth = None
        for kind in sorted(args.kinds, key=lambda k: k != "flat") if n in faiss_sizes else []:
            print(f"[{time.perf_counter() - began:6.0f} s] n={n:,} faiss {kind}", flush=True)
            row, found = bench_kind(kind, x, labels, queries, truth, args)  # flat first: truth
            truth = found if kind == "flat" else truth
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
        if n in faiss_sizes:
            no_truth = np.zeros((0, K), dtype=np.int64)
            results["rows"].append(bench_numpy(x, queries, no_truth if truth is None else truth))
        if n in milvus_sizes:
            if truth is None:
                truth = exact_neighbours(x, queries[: args.recall_queries])
            for kind in args.kinds:
                print(f"[{time.perf_counter() - began:6.0f} s] n={n:,} milvus {kind}", flush=True)
                row = bench_milvus(kind, x, labels, queries, truth, args)
                results["milvus_rows"].append(row)
                print(json.dumps(row), flush=True)
        del x, labels, centres, queries
        gc.collect()
    if args.orl.is_dir():
        print(f"[{time.perf_counter() - began:6.0f} s] ORL", flush=True)
        results["orl"] = bench_orl(args.orl, args.model)
    results["seconds"] = time.perf_counter() - began
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "index_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "index_bench.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
