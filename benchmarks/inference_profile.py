"""Where inference time goes: oneDNN's own timing of each primitive (``ONEDNN_VERBOSE=1``) for one
forward pass of a traced function of the model, with batch norms folded (``cnnctl.bn_folding``, what
cnnctl's inference runs in bfloat16) and unfolded (the model as built, what it runs in float32),
float32 and mixed_bfloat16, on one core.

    python benchmarks/inference_profile.py [--model efficientnet_lite0] [--batch 32] [--core 0]

Each configuration runs in its own process pinned to ``--core`` with one TensorFlow thread. After
three warm-up calls, one call is timed by the wall clock and by oneDNN's log; "outside oneDNN" is the
difference: TensorFlow's own (Eigen) kernels, such as batch norms and activations that were not
fused into a convolution, casts, and the executor.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

CHILD = r'''
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
name, policy, batch, fold = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "folded"
keras.mixed_precision.set_global_policy(policy)
from cnnctl import models
from cnnctl.bn_folding import folded_copy
model = models.build(name, num_classes=1000)
net = folded_copy(model)[0] if fold else model
fn = tf.function(lambda x: net(x, training=False))
x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32"))
for _ in range(3):
    np.asarray(fn(x))
print("=====START=====", flush=True)
t = time.perf_counter()
np.asarray(fn(x))
print("=====WALL=====", time.perf_counter() - t, flush=True)
'''


def run(model: str, policy: str, batch: int, fold: str, core: int) -> dict:
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["taskset", "-c", str(core), sys.executable, "-c", CHILD, model, policy, str(batch), fold],
                         check=True, capture_output=True, text=True, env=env).stdout
    timed = out.split("=====START=====", 1)[1]
    wall = float(next(line.split()[1] for line in timed.splitlines() if line.startswith("=====WALL=====")))
    kinds: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
    for line in timed.splitlines():
        fields = line.split(",")
        if line.startswith("onednn_verbose") and len(fields) > 6 and fields[3] == "exec":
            kind = fields[5] + (" (depthwise)" if "dw" in fields[6] else "")
            kinds[kind][0] += 1
            kinds[kind][1] += float(fields[-1])
    return {"wall_ms": 1000 * wall, "kinds": {k: v for k, v in kinds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--core", type=int, default=0)
    args = ap.parse_args()
    rows = {}
    for policy in ("float32", "mixed_bfloat16"):
        for fold in ("unfolded", "folded"):
            rows[policy, fold] = run(args.model, policy, args.batch, fold, args.core)
            print(f"{policy} {fold}: {json.dumps(rows[policy, fold])}", file=sys.stderr, flush=True)
    kinds = sorted({k for r in rows.values() for k in r["kinds"]},
                   key=lambda k: -max(r["kinds"].get(k, [0, 0])[1] for r in rows.values()))
    print(f"`python benchmarks/inference_profile.py --model {args.model} --batch {args.batch}` (one core; ms "
          "for one forward pass; oneDNN primitives as count x total ms)\n")
    print("| | " + " | ".join(f"{'bf16' if p != 'float32' else p} {f}" for p, f in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    print("| wall clock | " + " | ".join(f"{r['wall_ms']:.0f}" for r in rows.values()) + " |")
    for k in kinds:
        cells = []
        for r in rows.values():
            n, ms = r["kinds"].get(k, [0, 0.0])
            cells.append(f"{n} x {ms:.0f}" if n else "-")
        print(f"| oneDNN {k} | " + " | ".join(cells) + " |")
    outside = [r["wall_ms"] - sum(v[1] for v in r["kinds"].values()) for r in rows.values()]
    print("| outside oneDNN | " + " | ".join(f"{o:.0f}" for o in outside) + " |")


if __name__ == "__main__":
    main()
