"""Training throughput at 224x224, batch 32: cnnctl against PyTorch on the same machine, same run.

    apt-get install openclipart-svg librsvg2-bin    # the JPEG folder (real drawings, public domain)
    pip install torch==2.13.0
    python benchmarks/train_throughput_224.py [--steps 6] [--lite-steps 20] [--only resnet50]

Rows (each in its own process, interleaved: cnnctl, then PyTorch eager, then torch.compile, per
model and precision):
- ``resnet50``: training from scratch with the real recipe (pipelines/resnet50-imagenet.toml: SGD
  momentum, weight decay, shorter side random in [256, 480], random 224 crop, flip) through
  ``cnnctl.train.engine.train`` — what ``cnnctl train`` runs — on a folder of JPEGs.
- ``lite0 none`` / ``lite0 conv``: ``cnnctl finetune --backbone efficientnet_lite0 --weights imagenet
  --freeze none|conv`` on the same folder (everything trained / the head alone).
- PyTorch 2.13: the same architectures written out layer for layer below (with 1000 classes their
  parameter counts equal cnnctl's, 25,557,032 and 4,652,008: checked in every PyTorch row), channels_last, SGD momentum 0.9 (resnet50) or AdamW (lite0, as
  cnnctl finetune), float32 or bf16 autocast, eager or ``torch.compile``. They train on random
  tensors held in memory: no input pipeline at all, while cnnctl decodes, crops and flips.

cnnctl's images/s is measured between training steps (the progress bar's hook) after ``--warmup``
steps, so tracing and the first steps are not counted, and neither are validation or saving.
GFLOP/s counts 2 FLOP per multiply-add: a trained layer costs 3x its forward pass (forward, and
backward for inputs and weights), a frozen one 1x. The peak is a 2048x2048 ``tf.matmul`` in its own
process, float32 and bfloat16, measured first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH = 32
CLASSES = ("animals", "food", "people", "plants", "tools", "transportation")


# --------------------------------------------------------------------------- the data: a JPEG folder
def jpeg_folder(work: Path, images: int) -> Path:
    """``images`` real drawings of 6 openclipart categories, rasterised to 256 px and saved as JPEG in
    class folders (benchmarks/finetune.py's rasteriser, then PIL)."""
    from PIL import Image

    sys.path.insert(0, str(HERE))
    from finetune import rasterize

    pngs = rasterize(work / "png", per_class=-(-images // len(CLASSES)))
    root = work / "jpeg"
    for png in sorted(pngs.rglob("*.png")):
        dst = root / png.parent.name / f"{png.parent.parent.name}-{png.stem}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(png).convert("RGB").save(dst, quality=90)
    return root


def subset(folder: Path, count: int, out: Path) -> Path:
    """``count`` images of the class folder ``folder``, spread over it, as symbolic links in ``out``: one
    epoch of the run is then ``count / BATCH`` steps."""
    files = sorted(folder.rglob("*.jpg"))
    if len(files) < count:
        raise SystemExit(f"{folder} has {len(files)} JPEGs; {count} are needed")
    for i in range(count):
        f = files[i * len(files) // count]
        (out / f.parent.name).mkdir(exist_ok=True)
        (out / f.parent.name / f.name).symlink_to(f)
    return out


# --------------------------------------------------------------------------- cnnctl rows
class StepClock:
    """Takes the place of the rich progress bar in ``engine.train``: the time each training step ended."""

    def __init__(self, console=None):
        self.times: list[float] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, task, **fields):
        if "ips" in fields:                      # RichProgress.on_train_batch_end
            self.times.append(time.perf_counter())

    def remove_task(self, task):
        pass


def run_cnnctl(model: str, precision: str, data: str, steps: int, warmup: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rich.console import Console

    from cnnctl import config
    from cnnctl.train.engine import train

    images = (warmup + steps) * BATCH
    values = {"data.path": str(subset(Path(data), images, Path(tempfile.mkdtemp()))), "data.val_split": 0.0, "train.epochs": 1, "train.batch_size": BATCH,
              "train.precision": precision, "train.out_dir": tempfile.mkdtemp(), "train.name": "bench",
              "train.strategy": "default"}
    if model == "resnet50":
        cfg = config.load("resnet50-imagenet", [], values)
    else:
        from cnnctl.cli.finetune import _adopt_source
        from cnnctl.train import finetune as ft

        mode = model.split()[1]
        cfg = config.load("finetune", [], {**values, "finetune.backbone": "efficientnet_lite0",
                                           "finetune.weights": "imagenet", "finetune.freeze": mode})
        _adopt_source(cfg, ft.load_source(cfg.finetune, log=lambda m: None))
    clock = StepClock()
    result = train(cfg, console=Console(quiet=True), progress_factory=lambda console: clock)
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    t = clock.times
    if len(t) < warmup + 2:
        raise SystemExit(f"only {len(t)} steps ran; the folder needs {images} training images")
    timed = len(t) - warmup
    return {"framework": "cnnctl (Keras 3.15 / TF 2.21)", "mode": "graph (fit)", "precision": metrics["precision"],
            "images_per_s": timed * BATCH / (t[-1] - t[warmup - 1]), "params": metrics["params"], "steps": timed}


# --------------------------------------------------------------------------- PyTorch rows
def torch_resnet50(num_classes: int):
    """ResNet-50 as cnnctl builds it (He et al. 2016, Table 1; the stride on the first 1x1 of a
    bottleneck, projection shortcuts where the shape changes)."""
    from torch import nn

    def conv_bn(cin, cout, k, s, relu=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
        return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if relu else []))

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, width, 1, stride), conv_bn(width, width, 3, 1),
                                      conv_bn(width, 4 * width, 1, 1, relu=False))
            self.short = (nn.Identity() if stride == 1 and cin == 4 * width
                          else conv_bn(cin, 4 * width, 1, stride, relu=False))

        def forward(self, x):
            return (self.body(x) + self.short(x)).relu_()

    blocks, cin = [], 64
    for stage, (width, repeats) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for b in range(repeats):
            blocks.append(Bottleneck(cin, width, 2 if stage > 0 and b == 0 else 1))
            cin = 4 * width
    return nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), *blocks,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes))


# EfficientNet-Lite0 (Tan & Le 2019; the Lite form: no squeeze-excite, ReLU6, stem 32 and head 1280
# kept at every width): (repeats, kernel, stride, expansion, output channels) per stage
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


def torch_lite0(num_classes: int):
    """-> (backbone, head): the head is dropout + the new classifier, as cnnctl finetune makes it."""
    from torch import nn

    def conv_bn(cin, cout, k, s, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)]
        return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if act else []))

    class MBConv(nn.Module):
        def __init__(self, cin, cout, k, s, e):
            super().__init__()
            mid = cin * e
            self.body = nn.Sequential(*([conv_bn(cin, mid, 1, 1)] if e != 1 else []),
                                      conv_bn(mid, mid, k, s, groups=mid), conv_bn(mid, cout, 1, 1, act=False))
            self.skip = s == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.skip else self.body(x)

    blocks, cin = [conv_bn(3, 32, 3, 2)], 32
    for repeats, k, s, e, cout in LITE0_STAGES:
        for r in range(repeats):
            blocks.append(MBConv(cin, cout, k, s if r == 0 else 1, e))
            cin = cout
    backbone = nn.Sequential(*blocks, conv_bn(cin, 1280, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return backbone, nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))


def check_parameter_count(model: str) -> None:
    """The hand-written network with 1000 classes has the parameter count of cnnctl's (its catalog)."""
    from cnnctl import model_catalog

    name = "resnet50" if model == "resnet50" else "efficientnet_lite0"
    ours = next(r["params"] for r in model_catalog.rows() if r["name"] == name)
    parts = [torch_resnet50(1000)] if model == "resnet50" else list(torch_lite0(1000))
    theirs = sum(p.numel() for part in parts for p in part.parameters())
    if theirs != ours:
        raise SystemExit(f"the PyTorch {name} has {theirs:,} parameters, cnnctl's {ours:,}")


def run_torch(model: str, precision: str, compile_: bool, steps: int, warmup: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    classes = len(CLASSES)
    frozen = None
    if model == "resnet50":
        net = torch_resnet50(classes)
        opt_for = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4)
    else:
        frozen, head = torch_lite0(classes)
        net = nn.Sequential(frozen, head)
        opt_for = lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-4)
        if model == "lite0 conv":          # the backbone frozen: no gradients, batch norm in inference mode
            frozen.requires_grad_(False)
        else:
            frozen = None
    check_parameter_count(model)
    net = net.to(memory_format=torch.channels_last).train()
    if frozen is not None:
        frozen.eval()
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    opt = opt_for([p for p in net.parameters() if p.requires_grad])
    x = torch.randn(BATCH, 3, 224, 224).to(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (BATCH,))
    bf16 = precision == "bfloat16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
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
    return {"framework": f"PyTorch {torch.__version__.split('+')[0]} channels_last",
            "mode": "torch.compile" if compile_ else "eager", "precision": "bf16 autocast" if bf16 else "float32",
            "images_per_s": steps * BATCH / dt, "params": params, "steps": steps}


# --------------------------------------------------------------------------- peak and FLOP counts
def run_peak() -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    out = {}
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.random.normal((2048, 2048), dtype=tf.float32)
        a = tf.cast(a, dtype)
        f = tf.function(lambda m: tf.matmul(m, m))
        f(a).numpy()
        best = 0.0
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(10):
                r = f(a)
            r.numpy()
            best = max(best, 10 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
        out[dtype.name] = best
    return out


def flop_per_image(model: str) -> float:
    """Training FLOP per image: 2 x MACs x (3 for trained layers, 1 for frozen ones)."""
    from cnnctl import model_catalog

    macs = {r["name"]: r["macs"] for r in model_catalog.rows()}
    if model == "resnet50":
        return 2 * 3 * macs["resnet50"]
    backbone = macs["efficientnet_lite0"] - 1280 * 1000          # the ImageNet classifier is replaced
    head = 1280 * len(CLASSES)
    return 2 * ((3 * backbone if model == "lite0 none" else backbone) + 3 * head)


# --------------------------------------------------------------------------- driver
def one(kind: str, *args) -> dict:
    cmd = [sys.executable, __file__, "--one", json.dumps([kind, *args])]
    p = subprocess.run(cmd, check=False, capture_output=True, text=True)
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        why = (p.stderr.strip().splitlines() or ["failed"])[-1][:160]
        return {"error": why}
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6, help="timed steps for resnet50")
    ap.add_argument("--lite-steps", type=int, default=20, help="timed steps for lite0")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", choices=("resnet50", "lite0 none", "lite0 conv"), action="append")
    ap.add_argument("--data", help="a JPEG class folder (default: made from openclipart)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        kind, *args = json.loads(a.one)
        fn = {"cnnctl": run_cnnctl, "torch": run_torch, "peak": run_peak}[kind]
        print("RESULT " + json.dumps(fn(*args)))
        return
    models = a.only or ["resnet50", "lite0 none", "lite0 conv"]
    need = (a.warmup + max(a.steps, a.lite_steps)) * BATCH
    with tempfile.TemporaryDirectory() as tmp:
        data = a.data or str(jpeg_folder(Path(tmp), need + 10 * len(CLASSES)))
        count = sum(1 for _ in Path(data).rglob("*.jpg"))
        print(f"{count} JPEGs in {data}", file=sys.stderr)
        peak = one("peak")
        print(peak, file=sys.stderr)
        rows = []
        for model in models:
            steps = a.steps if model == "resnet50" else a.lite_steps
            for ours, theirs in (("float32", "float32"), ("mixed_bfloat16", "bfloat16")):
                for kind, args in (("cnnctl", (model, ours, data, steps, a.warmup)),
                                   ("torch", (model, theirs, False, steps, a.warmup)),
                                   ("torch", (model, theirs, True, steps, a.warmup))):
                    r = {"model": model, **one(kind, *args)}
                    rows.append(r)
                    print(r, file=sys.stderr)
    print(f"\n224x224x3, batch {BATCH}, {os.cpu_count()} CPU cores; matmul peak (2048x2048): float32 "
          f"{peak.get('float32', float('nan')):.0f} GFLOP/s, bfloat16 {peak.get('bfloat16', float('nan')):.0f} GFLOP/s\n")
    print("| model | framework | mode | precision | trained params | images/s | GFLOP/s | % of peak | vs PyTorch best |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | not run: {r['error']} | | | | | | | |")
            continue
        gflops = r["images_per_s"] * flop_per_image(r["model"]) / 1e9
        bf16 = "bf" in r["precision"]
        pk = peak.get("bfloat16" if bf16 else "float32", float("nan"))
        rivals = [q["images_per_s"] for q in rows if q["model"] == r["model"] and "error" not in q
                  and q["framework"].startswith("PyTorch") and ("bf" in q["precision"]) == bf16]
        ratio = f"{r['images_per_s'] / max(rivals):.2f}x" if rivals and r["framework"].startswith("cnnctl") else ""
        print(f"| {r['model']} | {r['framework']} | {r['mode']} | {r['precision']} | {r['params']:,} | "
              f"{r['images_per_s']:.1f} | {gflops:.0f} | {100 * gflops / pk:.0f}% | {ratio} |")


if __name__ == "__main__":
    main()
