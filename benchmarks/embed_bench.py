"""Embedding speed: PyTorch against ONNX Runtime, batch 1 and 64, in one run.

For the default encoder (CompactCNN, 56x46 greyscale) and the pretrained face
ResNet (dlib-face, 150x150 RGB), each exported with ``Encoder.export_onnx``,
it measures images per second of the network alone on preprocessed input
tensors (the part the two runtimes differ in; reading, alignment and resizing
are the same code on both paths), at batch 1 and batch 64, best of
``--repeats`` interleaved timed runs, with ``--threads`` threads for both
(torch.set_num_threads, ONNX Runtime's intra-op threads). It also checks that
the two runtimes' embeddings agree (largest absolute difference), so a fast
but wrong export cannot pass.

Goal (issue #13): ONNX Runtime at least 1.5x PyTorch at batch 1 on CPU.

Writes ``benchmarks/results/embed_bench.json`` and ``.md``.

Usage::

    python benchmarks/embed_bench.py [--threads 2] [--repeats 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import siamkit
from siamkit.runtime import OnnxEncoder

ROOT = Path(__file__).resolve().parent
ENCODERS = {
    "default (compact)": ("compact", {}),
    "pretrained (dlib-face)": ("dlib-face", {"flip_average": False}),
}
BATCHES = (1, 64)


def images_per_second(run, batch: np.ndarray, seconds: float) -> float:
    """Calls of ``run(batch)`` for about ``seconds``, as images per second."""
    run(batch)  # warm up: first-call allocations and graph optimisation
    calls, started = 0, time.perf_counter()
    while True:
        run(batch)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls * len(batch) / elapsed


def measure(name: str, args: argparse.Namespace, folder: Path) -> list[dict]:
    registered, kwargs = ENCODERS[name]
    encoder = siamkit.create_encoder(registered, **kwargs).eval()
    exported = OnnxEncoder(encoder.export_onnx(folder / f"{registered}.onnx"), args.threads)
    rows = []
    for size in BATCHES:
        inputs = encoder.example_input(size)
        array = inputs.numpy()

        @torch.no_grad()
        def with_torch(_batch, inputs=inputs):
            return encoder(inputs)

        def with_onnx(batch):
            return exported._run(list(batch))

        difference = float(np.abs(with_onnx(array) - with_torch(array).numpy()).max())
        best = {"torch": 0.0, "onnxruntime": 0.0}
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            best["torch"] = max(best["torch"], images_per_second(with_torch, array, args.seconds))
            best["onnxruntime"] = max(
                best["onnxruntime"], images_per_second(with_onnx, array, args.seconds)
            )
        rows.append(
            {
                "encoder": name,
                "batch": size,
                "torch_images_per_second": best["torch"],
                "onnxruntime_images_per_second": best["onnxruntime"],
                "speedup": best["onnxruntime"] / best["torch"],
                "max_abs_difference": difference,
            }
        )
        print(
            f"{name:>24} batch {size:>2}: torch {best['torch']:8.1f} img/s  onnxruntime "
            f"{best['onnxruntime']:8.1f} img/s  x{rows[-1]['speedup']:.2f}  "
            f"(max |diff| {difference:.1e})",
            flush=True,
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| encoder | batch | PyTorch images/s | ONNX Runtime images/s | speed-up | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['encoder']} | {r['batch']} | {r['torch_images_per_second']:.1f} "
        f"| {r['onnxruntime_images_per_second']:.1f} | {r['speedup']:.2f}x "
        f"| {r['max_abs_difference']:.1e} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="per timed run")
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        rows = [row for name in args.encoders for row in measure(name, args, Path(folder))]
    table = markdown_table(rows)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "threads": args.threads,
        "repeats": args.repeats,
        "seconds_per_run": args.seconds,
        "machine": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "onnxruntime": __import__("onnxruntime").__version__,
        "siamkit_version": siamkit.__version__,
        "rows": rows,
    }
    (args.out / "embed_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "embed_bench.md").write_text(
        "# Embedding speed: PyTorch and ONNX Runtime\n\n"
        f"{args.threads} threads for both; the network on preprocessed tensors; best of "
        f"{args.repeats} interleaved runs of {args.seconds:g} s.\n\n" + table + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
