"""Data-parallel scaling of ``siamkit train``: 1 and N processes on the same global batch.

For each process count, trains the from-scratch recipe on the AT&T faces (or
``--data``) with ``siamkit train --nproc-per-node N`` and reads its
``history.json``: seconds per epoch (training only, rank 0's clock), images
per second (global batch images drawn per epoch over those seconds), the final
validation AUC, and the scaling efficiency (speed-up over N). On a CPU every
process takes its share of the cores (``--threads`` per process is the CPUs
divided by N), so a machine with few cores gains little or nothing: the
processes split the same arithmetic and add the gathers on top.

Usage::

    python benchmarks/ddp_scaling.py --procs 1 2 --epochs 5 \\
        --out benchmarks/results/ddp_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORL = REPO.parent / "shared" / "data" / "att_faces"


def run(data: Path, procs: int, epochs: int, batch: int, device: str, cpus: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"ddp{procs}-")) / "model"
    threads = max(1, cpus // procs) if device == "cpu" else 1
    command = [
        sys.executable, "-m", "siamkit", "train", "--data", str(data), "--out", str(out),
        "--preset", "scratch", "--epochs", str(epochs), "--batch-size", str(batch),
        "--device", device, "--threads", str(threads), "--quiet", "--seed", "0",
        "--nproc-per-node", str(procs),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    history = json.loads((out / "history.json").read_text())["history"]
    timed = history[1:] or history  # the first epoch pays for warm-up (allocations, gloo)
    seconds = sum(r["seconds"] for r in timed) / len(timed)
    steps_images = _images_per_epoch(out, batch)
    return {
        "processes": procs,
        "threads_per_process": threads,
        "seconds_per_epoch": seconds,
        "images_per_second": steps_images / seconds,
        "final_val_auc": history[-1].get("val_auc"),
        "final_loss": history[-1]["loss"],
    }


def _images_per_epoch(out: Path, batch: int) -> float:
    split = json.loads((out / "split.json").read_text())
    data = Path(split["data"])
    images = sum(len(list((data / p).iterdir())) for p in split["train_classes"])
    # ClassBalancedBatchSampler: round(images / batch) batches of the global batch.
    return max(1, round(images / batch)) * batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ORL)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=120)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cpus", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [
        run(args.data, n, args.epochs, args.batch_size, args.device, args.cpus) for n in args.procs
    ]
    base = rows[0]["images_per_second"] / rows[0]["processes"]
    print(f"{args.device}, {args.cpus} CPUs, global batch {args.batch_size}, {args.epochs} epochs")
    print("| processes | threads each | s/epoch | images/s | efficiency | final val AUC |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        row["scaling_efficiency"] = row["images_per_second"] / (base * row["processes"])
        print(
            f"| {row['processes']} | {row['threads_per_process']} | "
            f"{row['seconds_per_epoch']:.2f} | {row['images_per_second']:.0f} | "
            f"{row['scaling_efficiency']:.2f} | {row['final_val_auc']:.4f} |"
        )
    if args.out:
        args.out.write_text(
            json.dumps({"device": args.device, "cpus": args.cpus, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
