"""`cnnctl predict` on many images in one call: this checkout against an earlier commit, and against
the model's own batch-32 rate.

    apt-get install openclipart-svg librsvg2-bin        # the JPEG folder (as train_throughput_224.py)
    python benchmarks/predict_many.py [--images 100] [--before e43ad4c] [--rounds 2] [--data DIR]

For each version, `cnnctl predict --model efficientnet_lite0 --weights imagenet --json` runs in a fresh
process on 1 image and on ``--images`` images (JPEGs of about 256x256), interleaved, ``--rounds``
times; the images/s of the many-image call leave out the start-up by taking the difference:
(n - 1) / (t_n - t_1). This checkout runs twice: ``--precision float32`` (what the earlier version
chose for Lite0) and ``--precision auto`` (measured per model: bf16 with folded batch norms where
faster). The earlier version runs from a `git worktree` of ``--before`` (the commit
before the one inference path: one eager call on up to 64 images, then ``predict_on_batch`` per
64, every file decoded before the first forward pass). The batch-32 reference is the traced
inference function on random pixels in one process, after warm-up, in each policy: the most a
command could reach.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BATCH_RATE = r'''
import os, sys, time, statistics
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras, numpy as np
from cnnctl import models
from cnnctl.inference import logits_of
from cnnctl.train.runtime import explain_precision
policy = sys.argv[1] if sys.argv[1] != "auto" else explain_precision("auto", "efficientnet_lite0", "infer")[0]
keras.mixed_precision.set_global_policy(policy)
net = models.build("efficientnet_lite0", num_classes=1000)
x = np.random.default_rng(0).uniform(0, 255, (32, 224, 224, 3)).astype("float32")
logits_of(net, x); logits_of(net, x)
ts = []
for _ in range(5):
    t = time.perf_counter(); logits_of(net, x); ts.append(time.perf_counter() - t)
print(policy, 32 / statistics.median(ts))
'''


def wall(cmd, env, cwd) -> float:
    """Seconds ``cmd`` takes. It runs in ``cwd``, the version's own checkout: ``python -m`` puts the
    working directory first on sys.path, before PYTHONPATH, so run elsewhere it would import the
    checkout it was started from."""
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=cwd)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--before", default="e43ad4c", help="the earlier commit")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--data", default="/work/bench-data/jpeg", help="a folder of JPEGs (searched recursively)")
    args = ap.parse_args()
    files = sorted(Path(args.data).rglob("*.jpg"))
    if len(files) < args.images:
        sys.path.insert(0, str(HERE))
        from train_throughput_224 import jpeg_folder

        files = sorted(jpeg_folder(Path(tempfile.mkdtemp()), args.images).rglob("*.jpg"))
    step = len(files) / args.images
    files = [str(files[int(i * step)]) for i in range(args.images)]

    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
                       check=True, capture_output=True)
        try:
            cmd = [sys.executable, "-m", "cnnctl", "predict", "--model", "efficientnet_lite0", "--weights",
                   "imagenet", "--json"]
            versions = {f"before ({args.before}), auto = float32": (before, []),
                        "now, --precision float32": (ROOT, ["--precision", "float32"]),
                        "now, --precision auto": (ROOT, [])}
            times = {(v, n): [] for v in versions for n in (1, args.images)}
            for v, (src, _) in versions.items():      # each version imports its own checkout
                where = subprocess.run([sys.executable, "-c", "import cnnctl; print(cnnctl.__file__)"], check=True,
                                       capture_output=True, text=True, cwd=src,
                                       env={**os.environ, "PYTHONPATH": str(src)}).stdout.strip()
                if not Path(where).resolve().is_relative_to(Path(src).resolve()):
                    raise SystemExit(f"{v}: imports {where}, not its checkout {src}")
            for v, (src, extra) in versions.items():  # converts the weights / measures auto once
                env = {**os.environ, "PYTHONPATH": str(src)}
                subprocess.run(cmd + extra + files[:1], check=True, capture_output=True, env=env, cwd=src)
            for _ in range(args.rounds):
                for v, (src, extra) in versions.items():
                    env = {**os.environ, "PYTHONPATH": str(src)}
                    for n in (1, args.images):
                        times[v, n].append(wall(cmd + extra + files[:n], env, src))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                           check=False, capture_output=True)
    rates = {}
    for asked in ("float32", "auto"):
        policy, rate = subprocess.run([sys.executable, "-c", BATCH_RATE, asked], check=True, capture_output=True,
                                      text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                      cwd=ROOT).stdout.split()[-2:]
        rates[asked] = (policy, float(rate))

    print(f"`python benchmarks/predict_many.py --images {args.images} --rounds {args.rounds}` "
          f"(EfficientNet-Lite0, {os.cpu_count()} cores; medians of the rounds; auto here is "
          f"{rates['auto'][0]})\n")
    print(f"| version | 1 image, s | {args.images} images, s | images/s beyond the first | of its batch-32 rate |")
    print("|---|---:|---:|---:|---:|")
    for v in versions:
        t1, tn = statistics.median(times[v, 1]), statistics.median(times[v, args.images])
        ips = (args.images - 1) / (tn - t1)
        rate = rates["auto" if v.endswith("auto") else "float32"][1]
        print(f"| {v} | {t1:.2f} | {tn:.2f} | {ips:.1f} | {100 * ips / rate:.0f}% |")
    for asked, (policy, rate) in rates.items():
        print(f"| the traced function alone, batch 32, {policy} | | | {rate:.1f} | 100% |")


if __name__ == "__main__":
    main()
