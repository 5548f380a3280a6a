"""The default job's first epoch on 1 process, 2 local workers and 2 MirroredStrategy replicas.

    python benchmarks/scale_out.py [--out checkpoints/bench-scale-out] [--epochs 1] [--runs one workers2 mirrored2]
    python benchmarks/scale_out.py --plan      # the GPU scaling table for ResNet-50 (no training)

Runs, each at the recipe's global batch (128) and seed 0, into OUT/RUN:

- ``one``:      ``cnnctl train --epochs E --strategy default``
- ``workers2``: ``cnnctl launch --workers 2 -- train --epochs E`` (MultiWorkerMirroredStrategy,
  2 processes on localhost, each 1 replica x 64 with half the cores)
- ``mirrored2``: ``cnnctl train --epochs E --strategy mirrored --devices 2`` (one process, the CPU
  split into 2 logical devices)

The table: seconds per epoch (history.csv, the last epoch), test accuracy (metrics.json), and its
difference from ``one`` in points. These are correctness figures, not speed figures: the two
workers and the two logical devices share the same 2 cores, so neither can be faster than one
process here, and the workers also pay a gRPC all-reduce per step. The default recipe's network has
batch norm, which normalises each replica's half batch alone, so the runs differ by more than float
rounding (tests/test_multiworker.py holds a network without batch norm to 1e-4).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

RUNS = {
    "one": ["train", "--strategy", "default"],
    "workers2": ["launch", "--workers", "2", "--", "train"],
    "mirrored2": ["train", "--strategy", "mirrored", "--devices", "2"],
}


PLAN = [  # (set-up, machines, GPUs per machine, per-replica batch, command)
    ("1 machine, 8 GPUs", 1, 8, 32,
     "cnnctl train resnet50-imagenet --batch-size 256"),
    ("2 machines x 8 GPUs", 2, 8, 32,
     ("srun --nodes 2 --ntasks-per-node 1 cnnctl train resnet50-imagenet --cluster slurm --batch-size 512 "
     "--set optimizer.lr=0.2")),
    ("8 machines x 8 GPUs", 8, 8, 32,
     ("srun --nodes 8 --ntasks-per-node 1 cnnctl train resnet50-imagenet --cluster slurm --batch-size 2048 "
     "--set optimizer.lr=0.8 --set schedule.warmup_epochs=5")),
]


def plan() -> None:
    """Gradient bytes per step from the real ResNet-50's parameter count, and ring all-reduce traffic."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnctl import models

    params = models.trainable_params(models.build("resnet50", num_classes=1000))
    grad_mb = params * 4 / 1e6   # gradients are all-reduced in float32 (the variables' dtype), mixed precision or not
    print(f"\nResNet-50: {params:,} trainable parameters -> {grad_mb:.1f} MB of float32 gradients per step")
    print("| set-up | replicas | per-replica batch | global batch | sent per replica per step | command |")
    print("|---|---:|---:|---:|---:|---|")
    for name, machines, gpus, per_replica, command in PLAN:
        n = machines * gpus
        ring = 2 * (n - 1) / n * grad_mb   # a ring all-reduce sends 2(n-1)/n of the buffer from each replica
        print(f"| {name} | {n} | {per_replica} | {n * per_replica} | {ring:.0f} MB | `{command}` |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("checkpoints/bench-scale-out"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS),
                    help="which runs to train again (the others are read from OUT)")
    ap.add_argument("--plan", action="store_true", help="print the ResNet-50 GPU scaling table and stop")
    args = ap.parse_args()
    if args.plan:
        plan()
        return
    rows = []
    for name, command in RUNS.items():
        run = args.out / name
        if name in args.runs:
            shutil.rmtree(run, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "cnnctl", *command, "--epochs", str(args.epochs), "--seed", "0",
                            "--out-dir", str(args.out), "--name", name], check=True)
        history = list(csv.DictReader((run / "history.csv").open()))
        metrics = json.loads((run / "metrics.json").read_text())
        rows.append((name, float(history[-1]["seconds"]), metrics["test_accuracy"], metrics["replicas"],
                     metrics["precision"]))
    base = rows[0][2]
    print(f"\ndefault recipe (fashion_cnn, global batch 128), {args.epochs} epoch(s), seed 0; correctness, not speed:")
    print("| run | replicas | precision | s / epoch | test accuracy | vs 1 process |")
    print("|---|---:|---|---:|---:|---:|")
    for name, seconds, acc, replicas, precision in rows:
        print(f"| {name} | {replicas} | {precision} | {seconds:.1f} | {100 * acc:.2f}% | {100 * (acc - base):+.2f} |")


if __name__ == "__main__":
    main()
