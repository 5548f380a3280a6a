"""Cold start of `cnnctl predict --model efficientnet_lite0 --weights imagenet PHOTO` against the floor,
`python -c "import tensorflow"`, and against that import without Python's teardown at exit (which
cnnctl's inference commands skip), each in a fresh process, interleaved; then where the time above the
floor goes, phase by phase, in one process (with the alternatives: an ordinary build and then the
weights, and the first call through the traced function instead of one eager call).

    python benchmarks/cold_start.py [--rounds 5]

The converted ImageNet weights are cached first (a conversion is a one-time cost, not a cold start),
and cnnctl's modules are compiled to bytecode first (``compileall``), as ``pip install`` does: an
editable install run with PYTHONDONTWRITEBYTECODE=1 (this machine's setting) compiles every cnnctl
module again in each process, 0.2 s here, which no installed copy pays.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHOTO = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos" / "chelsea.jpg"
PREDICT = [sys.executable, "-m", "cnnctl", "predict", "--model", "efficientnet_lite0", "--weights", "imagenet",
           str(PHOTO)]
FLOOR = [sys.executable, "-c", "import tensorflow"]
# The same import without Python's teardown at exit (TensorFlow's takes about 1 s), which cnnctl's
# inference commands skip once their output is flushed (cnnctl.cli.FAST_EXIT_COMMANDS): the like-for-like
# floor for what cnnctl itself adds.
FLOOR_NO_TEARDOWN = [sys.executable, "-c", "import os, tensorflow; os._exit(0)"]

# One process, phase by phase (TF's import first, as cnnctl predict does).
PHASES = r'''
import os, sys, time, json
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
t = [time.perf_counter()]
import tensorflow as tf; t.append(time.perf_counter())
from cnnctl import models; t.append(time.perf_counter())
from cnnctl.weights import build_from_cache, cache_dir, load_cached_weights
cached = cache_dir() / "efficientnet_lite0-imagenet.npz"
m = build_from_cache("efficientnet_lite0", 1000, cached, print); t.append(time.perf_counter())
from cnnctl.inference import load_images, imagenet_short_side, input_spec, logits_of
spec = input_spec(m)
x = load_images([sys.argv[1]], spec, imagenet_short_side(spec.height)); t.append(time.perf_counter())
logits_of(m, x, once=True); t.append(time.perf_counter())
other = models.build("efficientnet_lite0", num_classes=1000); t.append(time.perf_counter())
load_cached_weights(other, cached, print); t.append(time.perf_counter())
logits_of(other, x); t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
'''
NAMES = ["import tensorflow", "import cnnctl.models (every family)",
         "build efficientnet_lite0 with the cached weights (build_from_cache)", "read and resize the photo",
         "first inference (one eager call)", "(alternative) build with random initial values",
         "(alternative) then set the cached weights", "(alternative) first inference through the traced function"]


def wall(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(PHOTO.parents[3] / "cnnctl")], check=True)
    subprocess.run(PREDICT, check=True, capture_output=True)           # converts and caches the weights once
    floor, bare, predict = [], [], []
    for _ in range(args.rounds):
        floor.append(wall(FLOOR))
        bare.append(wall(FLOOR_NO_TEARDOWN))
        predict.append(wall(PREDICT))
    print(f"`python benchmarks/cold_start.py --rounds {args.rounds}` (fresh process each, interleaved)\n")
    print("| command | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for name, times in (('python -c "import tensorflow" (floor)', floor),
                        ('python -c "import os, tensorflow; os._exit(0)" (floor without teardown)', bare),
                        ("cnnctl predict --model efficientnet_lite0 --weights imagenet chelsea.jpg", predict)):
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
    med = statistics.median
    print(f"\nabove the floor: {med(predict) - med(floor):.2f} s; above the floor without teardown: "
          f"{med(predict) - med(bare):.2f} s (medians)\n")

    import json
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            p = subprocess.run([sys.executable, "-c", PHASES, str(PHOTO), str(Path(tmp) / "m.keras")],
                               check=True, capture_output=True, text=True)
            runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print("Phases in one process (median of 3):\n")
    print("| phase | s |")
    print("|---|---:|")
    for i, name in enumerate(NAMES):
        if name:
            print(f"| {name} | {statistics.median(r[i] for r in runs):.2f} |")


if __name__ == "__main__":
    main()
