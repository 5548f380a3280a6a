"""Inference speed on one core: cnnctl's inference path against PyTorch 2.13, batch 1 (ms) and batch 32
(images/s), float32 and bfloat16, ResNet-50 and EfficientNet-Lite0 at 224x224.

    pip install torch==2.13.0
    python benchmarks/inference.py [--rounds 2] [--core 0] [--only resnet50]

Every configuration runs in its own process, pinned to one core (``taskset``; TensorFlow's and
PyTorch's thread pools set to 1), and the configurations are interleaved: per model, precision and
batch size, cnnctl, then PyTorch eager (NCHW), channels_last, and ``torch.compile`` (channels_last),
then the next; the whole sweep ``--rounds`` times. The matmul peak (2048x2048, float32 and bfloat16)
is measured on the same core in the same run.

- cnnctl: ``cnnctl.inference.logits_of``, what ``predict``, ``evaluate``, ``segment`` and ``detect``
  call: the model's one traced function, in its steady state: at batch 1, calls are made until they
  have taken ``STEADY_AFTER_S`` and it runs its steady trace (``cnnctl.inference.Forward``: bfloat16
  with its convolution kernels as constants, float32 folded with every weight a constant), and only
  then timed. bfloat16 is the Keras ``mixed_bfloat16`` policy (float32 variables, bf16 compute), as
  ``--precision mixed_bfloat16`` builds it. Batch 1 also shows the path
  used before (one eager call of the model, as ``cnnctl predict`` made for a few images).
- PyTorch: the same networks written out layer for layer (benchmarks/train_throughput_224.py; their
  parameter counts equal cnnctl's, checked in every PyTorch row), ``eval()`` under
  ``torch.inference_mode()``, bf16 through ``torch.autocast("cpu")``.

Times are medians over the timed calls after warm-up (batch 1: 30 calls; batch 32: 4 calls), on
random pixels (speed does not depend on the values). GFLOP/s counts 2 FLOP per multiply-add of the
forward pass (``cnnctl models`` MACs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {"resnet50": "ResNet-50", "efficientnet_lite0": "EfficientNet-Lite0"}
CALLS = {1: (5, 30), 32: (1, 4)}          # batch -> (warm-up calls, timed calls)


def _median_seconds(call, batch: int) -> float:
    warm, timed = CALLS[batch]
    for _ in range(warm):
        call()
    times = []
    for _ in range(timed):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _result(seconds: float, batch: int, **extra) -> dict:
    return {"ms": seconds * 1000, "images_per_s": batch / seconds, **extra}


# --------------------------------------------------------------------------- one configuration each
def run_cnnctl(model: str, precision: str, batch: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.mixed_precision.set_global_policy(precision)
    from cnnctl import models
    from cnnctl.inference import inference_function, logits_of

    net = models.build(model, num_classes=1000)
    x = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
    t = time.perf_counter()
    logits_of(net, x, batch)
    first = time.perf_counter() - t
    forward = inference_function(net)
    switch = 0.0
    while forward.counts(batch):                                  # the steady state of a long process
        t = time.perf_counter()
        logits_of(net, x, batch)
        switch = time.perf_counter() - t                          # the last is the switching call
    out = _result(_median_seconds(lambda: logits_of(net, x, batch), batch), batch, first_call_s=first,
                  switch_call_s=switch)
    if batch == 1:
        eager = keras.models.clone_model(net)     # a fresh model, never traced: the previous path
        eager.set_weights(net.get_weights())
        out["eager_ms"] = 1000 * _median_seconds(lambda: np.asarray(eager(x, training=False)), batch)
    return out


def run_torch(model: str, precision: str, batch: int, mode: str) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from train_throughput_224 import check_parameter_count, torch_lite0, torch_resnet50

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if model == "resnet50":
        net = torch_resnet50(1000)
        check_parameter_count("resnet50")
    else:
        net = torch.nn.Sequential(*torch_lite0(1000))
        check_parameter_count("lite0 none")
    net.eval()
    x = torch.rand(batch, 3, 224, 224) * 255
    if mode != "eager":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    bf16 = precision == "mixed_bfloat16"

    def forward(inp):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return net(inp)

    if mode == "compile":
        forward = torch.compile(forward)
    t = time.perf_counter()
    forward(x)
    first = time.perf_counter() - t
    return _result(_median_seconds(lambda: forward(x), batch), batch, first_call_s=first)


def run_peak() -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.cast(tf.random.normal((2048, 2048)), dtype)
        f = tf.function(lambda m: tf.matmul(m, m))
        f(a).numpy()
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(4):
                r = f(a)
            r.numpy()
            best = max(best, 4 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
        out[dtype.name] = best
    return out


# --------------------------------------------------------------------------- driver
def one(core: int, kind: str, *args) -> dict:
    cmd = ["taskset", "-c", str(core), sys.executable, __file__, "--one", json.dumps([kind, *args])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        return {"error": ((p.stderr.strip().splitlines() or ["failed"])[-1])[:160]}
    return json.loads(line[7:])


def forward_flop(model: str) -> float:
    from cnnctl import model_catalog

    return 2 * next(r["macs"] for r in model_catalog.rows() if r["name"] == model)


def _fmt(r: dict | None, batch: int, key: str = "") -> str:
    if not r:
        return "-"
    if "error" in r:
        return "failed"
    if key:
        return f"{r[key]:.1f}"
    return f"{r['ms']:.1f}" if batch == 1 else f"{r['images_per_s']:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--core", type=int, default=0, help="the core every process is pinned to")
    ap.add_argument("--only", choices=sorted(MODELS), help="one model")
    ap.add_argument("--precision", choices=("float32", "mixed_bfloat16"), help="one precision")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, *rest = json.loads(args.one)
        fn = {"cnnctl": run_cnnctl, "torch": run_torch, "peak": run_peak}[kind]
        print("RESULT " + json.dumps(fn(*rest)), flush=True)
        return

    configs = [(m, p, b) for m in MODELS if args.only in (None, m)
               for p in ("float32", "mixed_bfloat16") if args.precision in (None, p) for b in (1, 32)]
    torch_modes = ("eager", "channels_last", "compile")
    rounds = []
    peaks = []
    for r in range(args.rounds):
        peaks.append(one(args.core, "peak"))
        got = {}
        for m, p, b in configs:
            got[m, p, b, "cnnctl"] = one(args.core, "cnnctl", m, p, b)
            for mode in torch_modes:
                got[m, p, b, mode] = one(args.core, "torch", m, p, b, mode)
            print(f"round {r + 1}: {m} {p} batch {b}: " + ", ".join(
                f"{k[3]} {_fmt(v, b)}" for k, v in got.items() if k[:3] == (m, p, b)), file=sys.stderr, flush=True)
        rounds.append(got)

    import torch

    peak = {k: max(p.get(k, 0) for p in peaks) for k in ("float32", "bfloat16")}
    only = "".join(f" --{k} {v}" for k, v in (("only", args.only), ("precision", args.precision)) if v)
    print(f"`python benchmarks/inference.py --rounds {args.rounds}{only}`: one core (taskset -c {args.core}), "
          f"torch {torch.__version__.split('+')[0]}; matmul peak on that core: float32 {peak['float32']:.0f} "
          f"GFLOP/s, bfloat16 {peak['bfloat16']:.0f} GFLOP/s.\n")
    print("Batch 1 in ms (lower is better), batch 32 in images/s (higher is better); one cell per round.\n")
    print("| model | precision | batch | cnnctl | cnnctl eager call (before) | PyTorch eager | channels_last "
          "| torch.compile | cnnctl / compile | cnnctl GFLOP/s (% of peak) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m, p, b in configs:
        def cells(mode, key="", m=m, p=p, b=b):
            return " / ".join(_fmt(g.get((m, p, b, mode)), b, key) for g in rounds)

        ok = [g for g in rounds if "error" not in g[m, p, b, "cnnctl"] and "error" not in g[m, p, b, "compile"]]
        if ok:
            ours = statistics.median(g[m, p, b, "cnnctl"]["images_per_s"] for g in ok)
            theirs = statistics.median(g[m, p, b, "compile"]["images_per_s"] for g in ok)
            ratio = f"{ours / theirs:.2f}x"
            gflops = ours * forward_flop(m) / 1e9
            top = peak["float32" if p == "float32" else "bfloat16"]
            eff = f"{gflops:.0f} ({100 * gflops / top:.0f}%)"
        else:
            ratio = eff = "-"
        eager = cells("cnnctl", "eager_ms") if b == 1 else "-"
        print(f"| {MODELS[m]} | {'bf16' if p != 'float32' else p} | {b} | {cells('cnnctl')} | {eager} | "
              f"{cells('eager')} | {cells('channels_last')} | {cells('compile')} | {ratio} | {eff} |")


if __name__ == "__main__":
    main()
