"""Freezing the inference graph (variables to constants) in bfloat16, or float32: what it saves per
call and what it costs once, on one core.

    python benchmarks/inference_freeze.py [--model resnet50] [--batch 1] [--core 0]
                                          [--precision float32 [--fold]] [--onednn-log]

Runs in a process pinned to ``--core`` with one TensorFlow thread: cnnctl's first traced inference
function (bf16: batch norms folded; float32: the network as it is, or folded with ``--fold``) against
three ways of giving oneDNN constant weights, which it can keep reordered between calls (with
variables, bf16 casts the float32 weights and reorders them on every call; float32 reads them plain):

- frozen: the traced function through TensorFlow's ``convert_variables_to_constants_v2``;
- constants in the trace: the same network traced with every variable read as a ``tf.constant`` of
  its value (``keras.StatelessScope``), so the graph holds the weights;
- kernels as constants: the same for the convolution kernels (4-d variables) alone; biases and the
  rest stay variables.

Setup is what each costs before its first result (the folded copy is made once, timed on its own):
freezing plus the frozen function's first call, or the trace plus the first call. oneDNN's verbose
log (``ONEDNN_VERBOSE=1``) names what each runs. Medians of 10
calls (3 at batch 32) after 3 warm-up calls, two alternating rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

CHILD = r'''
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
name, batch, precision, fold = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
keras.mixed_precision.set_global_policy(precision)
from cnnctl import models
from cnnctl import bn_folding
from cnnctl.inference import inference_model
model = models.build(name, num_classes=1000)
# the copy cnnctl runs (batch norms folded in half precision); --fold folds them in float32 too
t = time.perf_counter()
net = bn_folding.folded_copy(model, None)[0] if fold else inference_model(model)
copy_s = time.perf_counter() - t                    # making the network (the folded copy, or nothing)
signature = [tf.TensorSpec((None, 224, 224, 3), tf.float32)]
x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32"))
first = lambda out: np.asarray(out[0] if isinstance(out, (list, tuple)) else out, np.float32)
t = time.perf_counter()
fn = tf.function(lambda v: net(v, training=False), input_signature=signature)
first(fn(x))
traced_s = time.perf_counter() - t
t = time.perf_counter()
frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
first(frozen(x))
frozen_s = time.perf_counter() - t
def constants_of(variables):
    """The folded network traced with ``variables`` read as constants of their values."""
    values = [(v, v.numpy()) for v in variables]
    def call(v):
        with keras.StatelessScope(state_mapping=[(var, tf.constant(a)) for var, a in values]):
            return net(v, training=False)
    return tf.function(call, input_signature=signature)
t = time.perf_counter()
constant = constants_of(net.variables)
first(constant(x))
constant_s = time.perf_counter() - t
t = time.perf_counter()
kernels = constants_of([v for v in net.variables if len(v.shape) == 4])
first(kernels(x))
kernels_s = time.perf_counter() - t
def median_ms(f):
    for _ in range(3):
        first(f(x))
    ts = []
    for _ in range(10 if batch == 1 else 3):
        t = time.perf_counter(); first(f(x)); ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))
functions = (fn, frozen, constant, kernels)
rounds = [[median_ms(f) for f in functions] for _ in range(2)]
ref = first(fn(x))
diff = [np.abs(ref - first(f(x))).max() / np.abs(ref).max() for f in functions[1:]]
print("RESULT", traced_s, frozen_s, constant_s, kernels_s, *[v for r in rounds for v in r], *diff, copy_s,
      flush=True)
if os.environ.get("ONEDNN_VERBOSE"):                    # one more call each, between markers, for the log
    for i, f in enumerate(functions):
        print(f"FUNCTION {i}", flush=True)
        first(f(x))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--precision", choices=("mixed_bfloat16", "float32"), default="mixed_bfloat16")
    ap.add_argument("--fold", action="store_true", help="fold the batch norms in float32 too")
    ap.add_argument("--onednn-log", action="store_true",
                    help="also count, from oneDNN's verbose log, the convolutions that fuse a bias and a ReLU, "
                         "and the reorders")
    args = ap.parse_args()
    env = {**os.environ, **({"ONEDNN_VERBOSE": "1"} if args.onednn_log else {})}
    out = subprocess.run(["taskset", "-c", str(args.core), sys.executable, "-c", CHILD, args.model, str(args.batch),
                          args.precision, "1" if args.fold else "0"],
                         check=True, capture_output=True, text=True, env=env).stdout
    values = [float(v) for v in next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]]
    setup, (r1, r2), diff, copy_s = values[:4], (values[4:8], values[8:12]), values[12:15], values[15]
    flags = (f" --precision {args.precision}" if args.precision != "mixed_bfloat16" else "") + \
        (" --fold" if args.fold else "")
    print(f"`python benchmarks/inference_freeze.py --model {args.model} --batch {args.batch}{flags}` "
          f"({'bfloat16' if args.precision == 'mixed_bfloat16' else args.precision}"
          f"{', batch norms folded' if args.fold else ''}, one core, {cpu_name()})\n")
    print("| | setup s | round 1 ms | round 2 ms | largest difference (of the largest output) |")
    print("|---|---:|---:|---:|---:|")
    labels = ("traced function, variables (cnnctl's path)", "the same, frozen",
              "the same, every variable a constant in the trace", "the same, convolution kernels as constants")
    for i, label in enumerate(labels):
        d = "-" if i == 0 else f"{diff[i - 1]:.1e}"
        print(f"| {label} | {setup[i]:.2f} | {r1[i]:.1f} | {r2[i]:.1f} | {d} |")
    if args.fold or args.precision != "float32":
        print(f"\nMaking the folded copy (not in the setup column): {copy_s:.2f} s")
    if args.onednn_log:
        print("\n| | convolutions | with a fused bias | with a fused ReLU | convolution ms | reorders | reorder ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for i, label in enumerate(labels):
            convs = primitive_lines(out, i, "convolution")
            reorders = primitive_lines(out, i, "reorder")
            print(f"| {label} | {len(convs)} | {sum('bia:undef' not in c for c in convs)} | "
                  f"{sum('eltwise_relu' in c for c in convs)} | {total_ms(convs):.1f} | {len(reorders)} | "
                  f"{total_ms(reorders):.1f} |")


def primitive_lines(log: str, function: int, kind: str) -> list[str]:
    """oneDNN's verbose lines of the ``kind`` primitives (convolution, reorder) run by one call of
    function ``function``."""
    part = log.split(f"FUNCTION {function}\n", 1)[1].split("FUNCTION ", 1)[0]
    return [line for line in part.splitlines() if line.startswith("onednn_verbose") and f",exec,cpu,{kind}," in line]


def total_ms(lines: list[str]) -> float:
    """The summed execution time of oneDNN verbose lines (their last field, ms)."""
    return sum(float(line.rsplit(",", 1)[1]) for line in lines)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), and whether it has AMX."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown CPU")
    return f"{name}{', AMX' if ' amx_bf16' in info else ''}"

if __name__ == "__main__":
    main()
