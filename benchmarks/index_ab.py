"""A/B of ``siamkit.FaceIndex`` speed: the commit before the index redesign against HEAD.

Issue 20's "done when" asks that FaceIndex search and single-query overhead be
unchanged by the index redesign. This script measures both sides in one run:

* A is the base commit (``--base``, 21f6905 by default: the commit before the
  redesign), whose ``src`` is taken out of git (``git archive``) into a
  temporary folder; B is this checkout's ``src`` (HEAD plus any uncommitted
  changes: the report records both hashes and whether the tree is dirty).
* One data set, made once with ``index_bench``'s generator (clustered unit
  vectors standing in for face embeddings, cosine; queries are fresh images of
  enrolled people) and saved as ``.npy`` files, so both sides index the same
  vectors and search the same queries.
* ``--rounds`` rounds (5 by default); each runs one subprocess per side, in
  the order A, B then B, A then A, B... (so neither side always runs first
  after a pause), with ``PYTHONPATH`` putting that side's ``src`` first (the
  subprocess checks which ``siamkit`` it imported). Each subprocess builds
  every ``--kinds`` index (flat and hnsw by default; FAISS and torch at one
  thread each, so an HNSW graph is built the same on both sides) and measures
  it with ``index_bench``'s own functions:

  - add: seconds of ``FaceIndex.add`` of all vectors;
  - batch QPS of one call on all ``--queries`` queries, k = 10, best of
    ``--repeats`` interleaved runs (``index_bench.best_qps``): ``search``,
    ``search`` then reading every ``Match``, ``knn``, and raw FAISS on
    FaceIndex's own FAISS object (a control: the same on both sides);
  - single query (``index_bench.single_latency``, on the ``--single-queries``
    queries): FaceIndex's median latency, raw FAISS's (control), the time
    FaceIndex adds over raw FAISS (the median of its time outside FAISS less
    raw FAISS's), the difference of the two latency medians, and the "floor"
    (the least a wrapper does; a control);
  - a digest of ``knn``'s ids on the batch, to check both sides find the same
    neighbours.

The report gives, per index kind and metric, each side's median over the
rounds and its spread (min..max over rounds, the noise band), the ratio B/A of
the medians and a verdict. The rule: a metric is "within noise" when
``|median B - median A|`` is at most the larger of the two sides' spreads
(``max - min`` over rounds); otherwise B is "faster" or "slower" (higher QPS,
lower times). With one round there is no spread and no verdict. The "done
when" line sums up the metrics the issue names: the three FaceIndex batch QPS
and the time a single query adds over FAISS.

Writes ``benchmarks/results/index_ab.json`` and ``.md`` (``index_ab-quick.*``
with ``--quick``: 20,000 vectors, 500 batch and 300 single queries, 2 rounds
of 2 repeats, which checks the script, not the speed).

Usage::

    python benchmarks/index_ab.py [--base 21f6905] [--rounds 5] [--size 100000]
        [--dim 128] [--queries 2000] [--single-queries 1000] [--kinds flat hnsw]
        [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
HEAD_SRC = REPO / "src"
BASE = "21f6905"  # the commit before the index redesign
K = 10
SIDES = {"A": "base", "B": "HEAD"}
DATA_FILES = ("vectors", "labels", "queries", "singles")

# (key in a worker's row, label, unit, format, higher is faster, named by issue 20)
METRICS: list[tuple[str, str, str, str, bool, bool]] = [
    ("batch_qps.search", "batch QPS, search", "QPS", ",.0f", True, True),
    ("batch_qps.search_read", "batch QPS, search + read all", "QPS", ",.0f", True, True),
    ("batch_qps.knn", "batch QPS, knn", "QPS", ",.0f", True, True),
    ("batch_qps.faiss", "batch QPS, raw FAISS (control)", "QPS", ",.0f", True, False),
    ("single.ours_ms", "single query ms, FaceIndex", "ms", ".3f", False, False),
    ("single.raw_ms", "single query ms, raw FAISS (control)", "ms", ".3f", False, False),
    ("single.added_us", "single query µs added over FAISS", "µs", ".1f", False, True),
    ("single.median_difference_us", "single query µs, difference of medians", "µs", ".1f", False,
     False),
    ("single.floor_us", "single query µs, floor (control)", "µs", ".1f", False, False),
    ("add_s", "add s (building the index)", "s", ".2f", False, False),
]  # fmt: skip
FORMATS = {key: fmt for key, _, _, fmt, _, _ in METRICS}


# -- the two sides ---------------------------------------------------------------------
def git(*args: str) -> str:
    """Output of a read-only git command in the repository."""
    done = subprocess.run(
        ["git", "--no-optional-locks", *args], cwd=REPO, check=True, capture_output=True,
        text=True,
    )  # fmt: skip
    return done.stdout.strip()


def commits(base: str) -> dict[str, Any]:
    """Both sides' commits, and whether (and where) this checkout differs from HEAD."""
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "base": git("rev-parse", f"{base}^{{commit}}"),
        "base_subject": git("log", "-1", "--format=%s", base),
        "head": git("rev-parse", "HEAD"),
        "head_subject": git("log", "-1", "--format=%s", "HEAD"),
        "dirty": bool(dirty),
        "dirty_paths": dirty,
        "dirty_src": [path for path in dirty if path.startswith("src/")],
    }


def materialise(commit: str, folder: Path) -> Path:
    """The commit's ``src`` extracted into ``folder`` (the checkout is not touched)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "src"], cwd=REPO, check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def make_data(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One seeded data set, saved once for both sides: vectors, labels and two query sets."""
    import index_bench as bench  # this folder's; it imports HEAD's siamkit (unused here)

    x, labels, centres = bench.clustered_unit_vectors(args.size, args.dim, args.seed)
    queries = bench.make_queries(centres, labels, args.queries + args.single_queries, args.seed)
    data = {
        "vectors": x,
        "labels": labels,
        "queries": queries[: args.queries],
        "singles": queries[args.queries :],
    }
    for name, array in data.items():
        np.save(folder / f"{name}.npy", array)
    return {name: list(array.shape) for name, array in data.items()}


def run_side(side: str, src: Path, data: Path, result: Path, args: argparse.Namespace) -> dict:
    """One side's measurements, in a subprocess importing that side's siamkit."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", "--side", side,
        "--src", str(src), "--data", str(data), "--result", str(result),
        "--kinds", *args.kinds, "--repeats", str(args.repeats),
        "--faiss-threads", str(args.faiss_threads), "--torch-threads", str(args.torch_threads),
    ]  # fmt: skip
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), *([path] if path else [])])}
    subprocess.run(command, check=True, env=env, cwd=REPO)
    return json.loads(result.read_text())


# -- one side, in its own process ------------------------------------------------------
def _old_module_paths() -> None:
    """Let ``index_bench`` import on the base commit.

    The only difference between the base's ``index_bench`` and HEAD's is where
    the FAISS build constants live (``siamkit.index.backends`` before the
    redesign); HEAD's is used on both sides, so the measuring code is the same.
    """
    try:
        importlib.import_module("siamkit.index.stores.faiss.engine")
    except ModuleNotFoundError:
        old = importlib.import_module("siamkit.index.backends")
        sys.modules["siamkit.index.stores.faiss.engine"] = old


def worker(args: argparse.Namespace) -> None:
    import faiss
    import torch

    import siamkit

    where = Path(siamkit.__file__).resolve()
    if not where.is_relative_to(args.src.resolve()):
        raise SystemExit(f"side {args.side}: imported siamkit from {where}, not {args.src}")
    _old_module_paths()
    import index_bench as bench

    faiss.omp_set_num_threads(args.faiss_threads)
    torch.set_num_threads(args.torch_threads)
    data = {name: np.load(args.data / f"{name}.npy") for name in DATA_FILES}
    rows = {
        kind: measure(bench, siamkit.FaceIndex, kind, data, args.repeats) for kind in args.kinds
    }
    engine = sys.modules["siamkit.index.stores.faiss.engine"]
    payload = {
        "side": args.side,
        "siamkit_file": str(where),
        "siamkit": siamkit.__version__,
        "faiss": faiss.__version__,
        "torch": torch.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "torch_threads": torch.get_num_threads(),
        "faiss_module": engine.__name__,
        "hnsw": {"m": engine.HNSW_M, "ef_construction": engine.HNSW_EF_CONSTRUCTION},
        "rows": rows,
    }
    args.result.write_text(json.dumps(payload, indent=2) + "\n")


def measure(bench: Any, face_index: type, kind: str, data: dict, repeats: int) -> dict[str, Any]:
    """One index kind on one side: add time, batch QPS, single-query latency and overhead."""
    x, queries, singles = data["vectors"], data["queries"], data["singles"]
    index = face_index(metric="cosine", dim=x.shape[1], index=kind)
    start = time.perf_counter()
    index.add(x, labels=data["labels"])
    add_s = time.perf_counter() - start
    same = index.store.backend.index  # FaceIndex's own FAISS object, as index_bench times it
    qps = bench.best_qps(
        {
            "faiss": lambda: same.search(queries, K),
            "search": lambda: index.search(queries, K),
            "search_read": lambda: index.search(queries, K).to_list(),
            "knn": lambda: index.knn(queries, K),
        },
        len(queries),
        repeats,
    )
    single = bench.single_latency(index, same, singles)
    ids = np.ascontiguousarray(np.asarray(index.knn(queries, K).ids).astype(np.int64))
    return {
        "kind": kind,
        "settings": {"ef_search": index.ef_search, "nprobe": index.nprobe},
        "add_s": add_s,
        "batch_queries": len(queries),
        "batch_qps": qps,
        "single": {"queries": len(singles), **single},
        "knn_ids_sha1": hashlib.sha1(ids.tobytes()).hexdigest(),
    }


# -- comparison ------------------------------------------------------------------------
def value(row: dict[str, Any], key: str) -> float:
    for part in key.split("."):
        row = row[part]
    return float(row)  # type: ignore[arg-type]


def compare(runs: list[dict[str, Any]], kinds: list[str]) -> list[dict[str, Any]]:
    """Per kind and metric: medians, spreads, B/A and the verdict (rule in the docstring)."""
    out = []
    for kind in kinds:
        for key, label, unit, _, higher_faster, named in METRICS:
            values = {
                side: [
                    value(run["result"]["rows"][kind], key) for run in runs if run["side"] == side
                ]
                for side in SIDES
            }
            median = {side: statistics.median(v) for side, v in values.items()}
            spread = {side: max(v) - min(v) for side, v in values.items()}
            difference = median["B"] - median["A"]
            noise = max(spread.values())
            if min(len(v) for v in values.values()) < 2:
                verdict = "n/a (one round)"
            elif abs(difference) <= noise:
                verdict = "within noise"
            else:
                verdict = "B faster" if (difference > 0) == higher_faster else "B slower"
            out.append({
                "kind": kind, "metric": key, "label": label, "unit": unit,
                "named_by_issue": named, "values": values, "median": median,
                "min": {side: min(v) for side, v in values.items()},
                "max": {side: max(v) for side, v in values.items()},
                "spread": spread, "difference": difference, "noise": noise,
                "ratio": median["B"] / median["A"] if median["A"] else None,
                "verdict": verdict,
            })  # fmt: skip
    return out


def same_neighbours(runs: list[dict[str, Any]], kinds: list[str]) -> dict[str, bool]:
    """Whether every run of both sides found the same ids for the batch, per kind."""
    return {kind: len({run["result"]["rows"][kind]["knn_ids_sha1"] for run in runs}) == 1
            for kind in kinds}  # fmt: skip


def done_when(summary: list[dict[str, Any]]) -> str:
    named = [row for row in summary if row["named_by_issue"]]
    if any(row["verdict"].startswith("n/a") for row in named):
        return "no verdict: one round gives no noise band (use --rounds 2 or more)"
    outside = [row for row in named if row["verdict"] != "within noise"]
    if not outside:
        return "FaceIndex batch search and single-query overhead unchanged within noise"
    return "outside noise: " + "; ".join(
        f"{row['kind']} {row['label']} ({row['verdict']}, B/A {_ratio(row)})" for row in outside
    )


# -- report ----------------------------------------------------------------------------
def _ratio(row: dict[str, Any]) -> str:
    return "—" if row["ratio"] is None else f"{row['ratio']:.3f}"


def markdown(results: dict[str, Any]) -> str:
    c, m, cfg = results["commits"], results["machine"], results["config"]
    head = c["head"][:7] + (" + uncommitted changes" if c["dirty"] else "")
    src_note = f" (uncommitted under src/: {', '.join(c['dirty_src'])})" if c["dirty_src"] else ""
    lines = [
        "# FaceIndex A/B: before the index redesign against HEAD",
        "",
        f"A = base {c['base'][:7]} ({c['base_subject'][:70]}), B = HEAD {head}{src_note}.",
        f"{m['cpus']} CPUs, FAISS threads {m['faiss_threads']}, torch threads "
        f"{m['torch_threads']}, faiss {m['faiss']}, torch {m['torch']}, numpy {m['numpy']}, "
        f"python {m['python']}; {cfg['size']:,} vectors, dim {cfg['dim']}, k = {K}, cosine; "
        f"{cfg['queries']:,} batch queries (best of {cfg['repeats']}), "
        f"{cfg['single_queries']:,} single queries; {cfg['rounds']} rounds, one process per "
        "side per round (A B, B A, ...).",
        "",
        "| index | metric | A: base median (min..max) | B: HEAD median (min..max) | B/A "
        "| B − A | noise | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    settings = results["settings"]
    for row in results["summary"]:
        fmt = FORMATS[row["metric"]]
        kind = row["kind"] + "".join(
            f" ({name} {v})" for name, v in settings[row["kind"]].items() if v is not None
        )
        cells = [
            f"{row['median'][s]:{fmt}} ({row['min'][s]:{fmt}}..{row['max'][s]:{fmt}})"
            for s in SIDES
        ]
        verdict = f"**{row['verdict']}**" if row["verdict"].startswith("B ") else row["verdict"]
        lines.append(
            f"| {kind} | {row['label']} | {cells[0]} | {cells[1]} | {_ratio(row)} "
            f"| {row['difference']:+{fmt}} | {row['noise']:{fmt}} | {verdict} |"
        )
    same = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results["same_neighbours"].items())
    lines += [
        "",
        f"Done when (issue 20): {results['done_when']}.",
        f"Same knn neighbours in every run of both sides: {same}.",
        "",
        "Each metric is the median over rounds; min..max over rounds is its noise band. "
        "Verdict: within noise when |median B − median A| is at most the larger of the two "
        "sides' spreads (max − min over rounds), else B faster or slower. Batch QPS: one call "
        "on all batch queries, best of interleaved runs (index_bench.best_qps); search "
        "makes its Match objects as rows are read, 'search + read all' reads every one. "
        "Single query: index_bench.single_latency (medians over one-at-a-time queries, "
        "interleaved with raw FAISS on FaceIndex's own FAISS object); 'added' is the median "
        "of FaceIndex's time outside FAISS less raw FAISS's. Raw FAISS and the floor are "
        "controls: the same code on both sides, so their B/A shows the machine's drift.",
        "",
        f"Total run time {results['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=BASE, help="commit for side A (before the redesign)")
    parser.add_argument("--rounds", type=int, default=5, help="processes per side")
    parser.add_argument("--size", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000, help="batch queries")
    parser.add_argument("--single-queries", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", choices=["flat", "hnsw", "ivf"],
                        default=["flat", "hnsw"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="batch runs per round (best)")
    parser.add_argument("--faiss-threads", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny run: checks the script")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--tmp", default=None, help="folder for the temporary data and sources")
    # One side's measurements (what the main process runs in each subprocess).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.size, args.queries, args.single_queries = 20_000, 500, 300
        args.rounds, args.repeats = 2, 2
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    began = time.perf_counter()
    results: dict[str, Any] = {
        "commits": commits(args.base),
        "config": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("worker", "side", "src", "data", "result")
        },
    }
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="siamkit-ab-", dir=args.tmp) as tmp:
        folder = Path(tmp)
        sources = {"A": materialise(results["commits"]["base"], folder), "B": HEAD_SRC}
        (folder / "data").mkdir()
        results["data_shapes"] = make_data(args, folder / "data")
        print(f"[{time.perf_counter() - began:6.0f} s] data {results['data_shapes']}", flush=True)
        for number in range(args.rounds):
            for side in ("A", "B") if number % 2 == 0 else ("B", "A"):
                print(f"[{time.perf_counter() - began:6.0f} s] round {number + 1}/{args.rounds} "
                      f"{side} ({SIDES[side]})", flush=True)  # fmt: skip
                start = time.perf_counter()
                result = run_side(side, sources[side], folder / "data", folder / "r.json", args)
                seconds = time.perf_counter() - start
                runs.append({"round": number, "side": side, "seconds": seconds, "result": result})
    first = runs[0]["result"]
    results["machine"] = {
        "cpus": os.cpu_count(),
        "faiss_threads": first["faiss_threads"],
        "torch_threads": first["torch_threads"],
        "faiss": first["faiss"],
        "torch": first["torch"],
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    results["settings"] = {kind: first["rows"][kind]["settings"] for kind in args.kinds}
    for run in runs:  # both sides must build the same indexes for the comparison to hold
        built = {kind: run["result"]["rows"][kind]["settings"] for kind in args.kinds}
        if built != results["settings"] or run["result"]["hnsw"] != first["hnsw"]:
            print(f"warning: side {run['side']} built other settings: {built}, "
                  f"{run['result']['hnsw']}", flush=True)  # fmt: skip
    results["summary"] = compare(runs, args.kinds)
    results["same_neighbours"] = same_neighbours(runs, args.kinds)
    results["done_when"] = done_when(results["summary"])
    results["runs"] = runs
    results["seconds"] = time.perf_counter() - began
    name = "index_ab-quick" if args.quick else "index_ab"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / f"{name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
