"""Training throughput of CIFAR ResNet-20 (32x32x3, batch 128): cnnctl vs a plain PyTorch loop.

    python benchmarks/train_throughput.py [--steps 60]

Each configuration runs in its own process (precision policies are global).
cnnctl rows use the real pieces of `cnnctl train`: `models.build("resnet20")`,
`tasks.classify.compile_model` (SGD momentum 0.9, weight decay 1e-4, the
engine's loss and metrics) and `DataModule.train_dataset` on the bundled
Fashion-MNIST, converted on the fly to 32x32x3 by the pipeline (real
images). The PyTorch rows train the same architecture (option-A shortcuts,
272k parameters) on random tensors held in memory, so they carry no input
pipeline cost at all. The first `--warmup` steps (tracing/compilation) are
not timed. ResNet-20 training costs about 3 x 40.6 M multiply-adds = 243
MFLOP per image, which gives the GFLOP/s column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

FLOP_PER_IMAGE = 3 * 2 * 40_551_040  # forward MACs x 2 FLOP x (forward + 2x backward)


def run_cnnctl(precision: str, jit: bool, steps: int, warmup: int, batch: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from cnnctl import models
    from cnnctl.config import DataConfig, OptimizerConfig
    from cnnctl.data.pipeline import DataModule, InputSpec
    from cnnctl.tasks import classify
    from cnnctl.train.optim import make_optimizer
    from cnnctl.train.runtime import configure

    policy = configure(precision, deterministic=False, seed=0, devices=0)
    data = DataModule(DataConfig(), InputSpec(32, 32, 3), batch, 0, log=lambda m: None)
    model = models.build("resnet20", num_classes=10)
    opt = make_optimizer(OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4), 0.1)
    classify.compile_model(model, opt, 10, jit=jit)
    ds = data.train_dataset(0).take(warmup + steps)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter())

    model.fit(ds, epochs=1, verbose=0, callbacks=[Timer()], shuffle=False)
    dt = times[-1] - times[warmup - 1]
    return {"framework": "cnnctl (Keras 3 / TF 2.21)", "precision": policy, "xla": jit,
            "images_per_s": steps * batch / dt}


def run_torch(precision: str, compile_: bool, steps: int, warmup: int, batch: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.pad = cout - cin
            self.stride = stride

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            s = x
            if self.stride != 1 or self.pad:
                s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return F.relu(y + s)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            layers, cin = [], 16
            for stage, w in enumerate((16, 32, 64)):
                for b in range(3):
                    layers.append(Block(cin, w, 2 if stage > 0 and b == 0 else 1))
                    cin = w
            self.blocks = nn.Sequential(*layers)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    torch.manual_seed(0)
    model = ResNet20().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    bf16 = precision == "bfloat16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    if compile_:
        step = torch.compile(step)
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t
    return {"framework": f"PyTorch {torch.__version__}" + (" torch.compile" if compile_ else "") + " channels_last",
            "precision": "bf16 autocast" if bf16 else "float32", "xla": compile_, "images_per_s": steps * batch / dt}


CONFIGS = [
    ("cnnctl", "float32", False), ("cnnctl", "mixed_bfloat16", False), ("cnnctl", "float32", True),
    ("torch", "float32", False), ("torch", "float32", True), ("torch", "bfloat16", True),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        kind, precision, flag = json.loads(a.one)
        fn = run_cnnctl if kind == "cnnctl" else run_torch
        print("RESULT " + json.dumps(fn(precision, flag, a.steps, a.warmup, a.batch)))
        return
    rows = []
    for cfg in CONFIGS:
        p = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg), "--steps", str(a.steps),
                            "--warmup", str(a.warmup), "--batch", str(a.batch)],
                           check=False, capture_output=True, text=True)
        line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            why = (p.stderr.strip().splitlines() or ["failed"])[-1][:100]
            rows.append({"framework": f"{cfg[0]} (not run: {why})", "precision": cfg[1], "xla": cfg[2],
                         "images_per_s": float("nan")})
        else:
            rows.append(json.loads(line[7:]))
        print(rows[-1], file=sys.stderr)
    print(f"\nResNet-20, 32x32x3, batch {a.batch}, {a.steps} timed steps after {a.warmup} warm-up, "
          f"{os.cpu_count()} CPU cores\n")
    print("| framework | precision | XLA / compile | images/s | GFLOP/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['framework']} | {r['precision']} | {r['xla']} | {r['images_per_s']:.0f} | "
              f"{r['images_per_s'] * FLOP_PER_IMAGE / 1e9:.0f} |")


if __name__ == "__main__":
    main()
