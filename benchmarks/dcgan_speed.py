"""DCGAN training speed on Fashion-MNIST 28x28 (batch 128): cnnctl vs PyTorch, float32 and bfloat16.

    pip install torch==2.13.0
    python benchmarks/dcgan_speed.py [--seconds 20] [--warmup 3] [--rounds 2]

Each configuration runs in its own process (precision policies are global), and the rounds are
interleaved so that a busy or throttled machine hurts every row alike.

- cnnctl rows use the real pieces of `cnnctl train dcgan-fashion`: ``models.build("dcgan")``,
  the ``GAN`` train step (a D step on real and on generated images, then a G step with fresh noise;
  non-saturating loss), Adam 2e-4 / beta1 0.5 for each network, and ``DataModule.train_dataset``
  on the bundled Fashion-MNIST (real images through the real input pipeline).
- PyTorch rows train the same networks, layer for layer (the parameter counts are printed and must
  match), with the same step on random tensors held in memory: no input pipeline cost at all.
  Eager and ``torch.compile``, channels_last, bf16 through autocast.

Each row times as many steps as fit in about ``--seconds`` (at least 5, at most 60; bf16 steps
here can take seconds each), after ``--warmup`` untimed ones that also give the estimate.
Seconds per epoch = the timed seconds per step x 422 steps (54,000 training images / 128): the
training steps alone, without the per-epoch sample scoring. A matmul microbenchmark in the same
script gives the machine's float32 and bfloat16 peak; the GFLOP/s column counts 2 FLOP per
multiply-add of the step (forward + 2x backward where gradients flow).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

STEPS_PER_EPOCH = 422       # ceil(54,000 / 128)
BATCH = 128


def step_flop(batch: int = BATCH) -> float:
    """FLOP of one DCGAN train step at 28x28 (width 64), from ``cnnctl.models.count_macs`` of G and D.

    D step: G forward (no gradients) + D forward and backward on real and on generated images.
    G step: G forward and backward + D forward and backward. A backward pass is counted as 2x the
    forward (input and weight gradients), so forward + backward = 3x.
    """
    from cnnctl import models

    gan = models.build("dcgan", num_classes=10)
    g, d = models.count_macs(gan.generator), models.count_macs(gan.discriminator)
    macs = g + 2 * 3 * d + 3 * g + 3 * d
    return 2.0 * macs * batch


def timed_steps(per_step_estimate: float, seconds: float) -> int:
    return int(min(60, max(5, round(seconds / max(per_step_estimate, 1e-3)))))


def run_cnnctl(precision: str, seconds: float, warmup: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from cnnctl import models
    from cnnctl.config import DataConfig, OptimizerConfig
    from cnnctl.data.pipeline import DataModule, InputSpec
    from cnnctl.train.optim import make_optimizer
    from cnnctl.train.runtime import configure

    policy = configure(precision, deterministic=False, seed=0, devices=0)
    data = DataModule(DataConfig(augment=[]), InputSpec(28, 28, 1), BATCH, 0, log=lambda m: None)
    model = models.build("dcgan", num_classes=10)
    adam = OptimizerConfig(name="adam", lr=2e-4, beta_1=0.5, weight_decay=0.0)
    model.compile(optimizer=make_optimizer(adam, 2e-4), d_optimizer=make_optimizer(adam, 2e-4))
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter())

    ds = data.train_dataset(0)
    t0 = time.perf_counter()
    model.fit(ds.take(warmup), epochs=1, verbose=0, callbacks=[Timer()], shuffle=False)  # traces the step
    steps = timed_steps((times[-1] - times[0]) / max(1, warmup - 1) if warmup > 1 else times[-1] - t0, seconds)
    times.clear()
    model.fit(ds.take(steps + 1), epochs=1, verbose=0, callbacks=[Timer()], shuffle=False)
    per_step = (times[-1] - times[0]) / steps      # from the end of the first step to the end of the last
    params = model.generator.count_params() + model.discriminator.count_params()
    return {"framework": "cnnctl (Keras 3.15 / TF 2.21)", "precision": policy, "s_per_step": per_step,
            "params": params, "steps": steps}


def torch_dcgan():
    """The cnnctl DCGAN at 28x28, width 64, in PyTorch: same layers, same initialisation."""
    from torch import nn

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.project = nn.Linear(100, 7 * 7 * 128, bias=False)
            self.body = nn.Sequential(
                nn.BatchNorm2d(128), nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())

        def forward(self, z):
            return self.body(self.project(z).view(-1, 128, 7, 7))

    d = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(7 * 7 * 128, 1))
    g = G()
    for m in list(g.modules()) + list(d.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g, d


def run_torch(precision: str, seconds: float, warmup: int, compile_: bool) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    g, d = torch_dcgan()
    g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = (torch.rand(BATCH, 1, 28, 28) * 2 - 1).to(memory_format=torch.channels_last)
    ones, zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)
    bf16 = precision == "bfloat16"

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                fake = g(torch.randn(BATCH, 100))
            d_loss = (F.binary_cross_entropy_with_logits(d(real).float(), ones)
                      + F.binary_cross_entropy_with_logits(d(fake).float(), zeros))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            g_loss = F.binary_cross_entropy_with_logits(d(g(torch.randn(BATCH, 100))).float(), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    if compile_:
        step = torch.compile(step)
    for _ in range(warmup - 1):
        step()
    t = time.perf_counter()
    step()
    steps = timed_steps(time.perf_counter() - t, seconds)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t) / steps
    params = sum(p.numel() for p in g.parameters()) + sum(p.numel() for p in d.parameters())
    params += sum(b.numel() for m in (g, d) for n, b in m.named_buffers() if "running" in n)
    return {"framework": f"PyTorch {torch.__version__}" + (" torch.compile" if compile_ else " eager")
            + ", channels_last", "precision": "bf16 autocast" if bf16 else "float32", "s_per_step": per_step,
            "params": params, "steps": steps}


def matmul_peak() -> dict:
    """GFLOP/s of a 2048^3 matmul in float32 and bfloat16 (TF, the same oneDNN kernels cnnctl uses)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    out = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.random.normal((2048, 2048), dtype=tf.float32)
        a = tf.cast(a, dtype)
        f = tf.function(lambda x: tf.matmul(x, x))
        f(a).numpy()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 3:
            f(a).numpy()
            n += 1
        out[dtype.name] = n * 2 * 2048**3 / (time.perf_counter() - t) / 1e9
    return out


CONFIGS = [("cnnctl", "float32", False), ("cnnctl", "mixed_bfloat16", False),
           ("torch", "float32", False), ("torch", "float32", True),
           ("torch", "bfloat16", False), ("torch", "bfloat16", True)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        kind, precision, flag = json.loads(a.one)
        if kind == "peak":
            result = matmul_peak()
        elif kind == "flop":
            result = {"flop": step_flop()}
        elif kind == "cnnctl":
            result = run_cnnctl(precision, a.seconds, a.warmup)
        else:
            result = run_torch(precision, a.seconds, a.warmup, flag)
        print("RESULT " + json.dumps(result))
        return

    def one(cfg):
        p = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg), "--seconds", str(a.seconds),
                            "--warmup", str(a.warmup)], check=False, capture_output=True, text=True)
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{cfg}: failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:200]}", file=sys.stderr)
            return None
        return json.loads(line[7:])

    peak = one(("peak", "", False))
    results: dict[tuple, list] = {cfg: [] for cfg in CONFIGS}
    for r in range(a.rounds):
        for cfg in CONFIGS:
            res = one(cfg)
            if res is not None:
                results[cfg].append(res)
                print(f"round {r + 1} {cfg}: {res['s_per_step'] * 1000:.0f} ms/step", file=sys.stderr, flush=True)
    flop = float(one(("flop", "", False))["flop"])
    print(f"\nDCGAN 28x28x1 (width 64), batch {BATCH}, about {a.seconds:g} s of timed steps after {a.warmup} warm-up, "
          f"best of {a.rounds} interleaved rounds, {os.cpu_count()} CPU cores; matmul peak here: "
          f"float32 {peak['float32']:.0f} GFLOP/s, bfloat16 {peak['bfloat16']:.0f} GFLOP/s\n")
    print("| framework | precision | parameters | timed steps | ms / step | s / epoch (422 steps) | GFLOP/s | % of peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for cfg, runs in results.items():
        if not runs:
            print(f"| {cfg[0]} | {cfg[1]} | - | - | not run | - | - | - |")
            continue
        best = min(runs, key=lambda x: x["s_per_step"])
        gflops = flop / best["s_per_step"] / 1e9
        top = peak["bfloat16"] if "bf" in best["precision"] else peak["float32"]
        print(f"| {best['framework']} | {best['precision']} | {best['params']:,} | {best['steps']} | "
              f"{best['s_per_step'] * 1000:.0f} | "
              f"{best['s_per_step'] * STEPS_PER_EPOCH:.0f} | {gflops:.0f} | {100 * gflops / top:.0f}% |")


if __name__ == "__main__":
    main()
