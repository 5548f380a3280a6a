"""Freezing the inference graph (variables to constants) in bfloat16: what it saves per call and
what it costs once, on one core.

    python benchmarks/inference_freeze.py [--model resnet50] [--batch 1] [--core 0]

Runs in a process pinned to ``--core`` with one TensorFlow thread: cnnctl's traced inference function
(batch norms folded) against the same function frozen with TensorFlow's
``convert_variables_to_constants_v2``, whose constant weights oneDNN can keep reordered between calls
(with variables, the float32 weights are cast to bf16 and reordered on every call). Medians of 10
calls (3 at batch 32) after 3 warm-up calls, two alternating rounds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = r'''
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
keras.mixed_precision.set_global_policy("mixed_bfloat16")
from cnnctl import models
from cnnctl.inference import inference_function
name, batch = sys.argv[1], int(sys.argv[2])
fn = inference_function(models.build(name, num_classes=1000))
x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32"))
fn(x)
t = time.perf_counter()
frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
freeze_s = time.perf_counter() - t
first = lambda out: np.asarray(out[0] if isinstance(out, (list, tuple)) else out, np.float32)
def median_ms(f):
    for _ in range(3):
        first(f(x))
    ts = []
    for _ in range(10 if batch == 1 else 3):
        t = time.perf_counter(); first(f(x)); ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))
rows = [(median_ms(fn), median_ms(frozen)) for _ in range(2)]
diff = np.abs(first(fn(x)) - first(frozen(x))).max() / np.abs(first(fn(x))).max()
print("RESULT", freeze_s, *[v for r in rows for v in r], diff)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--core", type=int, default=0)
    args = ap.parse_args()
    out = subprocess.run(["taskset", "-c", str(args.core), sys.executable, "-c", CHILD, args.model, str(args.batch)],
                         check=True, capture_output=True, text=True).stdout
    freeze_s, t1, f1, t2, f2, diff = (float(v) for v in next(l for l in out.splitlines()
                                                              if l.startswith("RESULT")).split()[1:])
    print(f"`python benchmarks/inference_freeze.py --model {args.model} --batch {args.batch}` (bfloat16, one core)\n")
    print("| | round 1 ms | round 2 ms |")
    print("|---|---:|---:|")
    print(f"| traced function (cnnctl's path) | {t1:.1f} | {t2:.1f} |")
    print(f"| the same, frozen | {f1:.1f} | {f2:.1f} |")
    print(f"\nfreezing took {freeze_s:.1f} s; largest difference of the outputs: {diff:.1e} of the largest output")


if __name__ == "__main__":
    main()
