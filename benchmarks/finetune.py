"""Transfer learning against training from scratch, in every freeze mode; prints markdown tables.

    python benchmarks/finetune.py fashion     # Fashion-MNIST classes 0-4 -> 5-9 with 100 images per class
    python benchmarks/finetune.py clipart     # EfficientNet-Lite0 (ImageNet) -> openclipart categories
    python benchmarks/finetune.py             # both

fashion: fashion_cnn is trained on all 30,000 training images of classes 0-4 (T-shirt/top,
Trouser, Pullover, Dress, Coat), then fine-tuned on 100 training images per class of classes
5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) and tested on all 5,000 test images of 5-9. The
from-scratch rows train the same network on the same 500 images.

clipart: real public-domain drawings of the Debian package openclipart-svg
(``apt-get install openclipart-svg librsvg2-bin``), rasterised by rsvg-convert to 256 px on
white; categories animals, food, people, plants, tools, transportation; up to 100 drawings per
category (a seeded sample), 70% train / 30% test. EfficientNet-Lite0 with the converted ImageNet
weights against the same network from random initialisation.

Seconds per epoch is the median over epochs after the first (which includes tracing and, for
features mode, nothing else: the extraction is reported in its own column).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLIPART = Path("/usr/share/openclipart/svg")
CATEGORIES = ("animals", "food", "people", "plants", "tools", "transportation")


def cnnctl(*args: str) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "cnnctl", *args], capture_output=True, text=True, check=False)
    if p.returncode:
        sys.exit(f"cnnctl {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t


def row(out: Path, name: str, label: str) -> tuple:
    metrics = json.loads((out / name / "metrics.json").read_text())
    with open(out / name / "history.csv") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    per_epoch = statistics.median(seconds[1:] or seconds)
    extra = metrics.get("feature_extraction_s")
    return (label, f"{100 * metrics['test_accuracy']:.2f}%", f"{per_epoch:.3f}",
            f"{extra:.1f}" if extra is not None else "", metrics["params"], metrics["epochs_trained"])


def table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}\n")
    print("| run | test accuracy | s / epoch | feature extraction s | trained parameters | epochs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    sys.stdout.flush()


def fashion(work: Path, epochs: int = 30) -> None:
    from cnnctl.data.sources import load_source

    _, splits = load_source("fashion_mnist", "")
    train, test = splits["train"], splits["test"]
    names = np.array(train.class_names)
    first, second = np.arange(5), np.arange(5, 10)

    def subset(ex, classes, per_class=None, seed=0):
        rng = np.random.default_rng(seed)
        picked = []
        for c in classes:
            members = np.flatnonzero(ex.labels == c)
            picked.append(rng.choice(members, per_class, replace=False) if per_class else members)
        idx = np.concatenate(picked)
        return ex.images[idx, ..., 0], (ex.labels[idx] - classes[0]).astype(np.int64)

    xa, ya = subset(train, first)
    xta, yta = subset(test, first)
    np.savez(work / "fashion0-4.npz", x_train=xa, y_train=ya, x_test=xta, y_test=yta, class_names=names[first])
    xb, yb = subset(train, second, per_class=100)
    xtb, ytb = subset(test, second)
    np.savez(work / "fashion5-9-100.npz", x_train=xb, y_train=yb, x_test=xtb, y_test=ytb, class_names=names[second])
    out = work / "runs"
    common = ["--out-dir", str(out), "--precision", "float32", "--strategy", "default"]
    pre_s = cnnctl("train", "--data", str(work / "fashion0-4.npz"), "--name", "pretrain", *common)
    pre = json.loads((out / "pretrain" / "metrics.json").read_text())
    print(f"pretrained fashion_cnn on classes 0-4 (30,000 images, 8 epochs, {pre_s:.0f} s): "
          f"{100 * pre['test_accuracy']:.2f}% on their 5,000 test images", file=sys.stderr)
    small = str(work / "fashion5-9-100.npz")
    rows = []
    for lr in ("0.003", "0.001"):
        cnnctl("train", "finetune", "--data", small, "--model", "fashion_cnn", "--epochs", str(epochs),
               "--name", f"scratch-{lr}", "--set", f"optimizer.lr={lr}", "--set", "model.input_shape=[28,28,1]",
               *common)
        rows.append(row(out, f"scratch-{lr}", f"from scratch, lr {lr}"))
    for mode in ("conv", "features", "partial:2", "none"):
        name = mode.replace(":", "-")
        cnnctl("finetune", "--data", small, "--from", str(out / "pretrain"), "--freeze", mode,
               "--epochs", str(epochs), "--name", name, "--precision", "float32", "--out-dir", str(out),
               "--set", "train.strategy=default")
        rows.append(row(out, name, f"--freeze {mode}"))
    table(f"Fashion-MNIST 5-9, 100 training images per class, {epochs} epochs, tested on 5,000 images "
          f"(pretrained on 0-4: {100 * pre['test_accuracy']:.2f}%)", rows)


def rasterize(work: Path, per_class: int = 100, seed: int = 0) -> Path:
    if not CLIPART.is_dir() or not shutil.which("rsvg-convert"):
        sys.exit("clipart needs: apt-get install openclipart-svg librsvg2-bin")
    root = work / "clipart"
    rng = random.Random(seed)
    for cat in CATEGORIES:
        files = sorted(CLIPART.joinpath(cat).rglob("*.svg"))
        rng.shuffle(files)
        made = 0
        for svg in files:
            if made == per_class:
                break
            split = "test" if made % 10 >= 7 else "train"
            dst = root / split / cat / f"{svg.stem[:60]}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            p = subprocess.run(["rsvg-convert", "-w", "256", "-h", "256", "--keep-aspect-ratio", "-b", "white",
                                "-o", str(dst), str(svg)], capture_output=True, check=False, timeout=60)
            if p.returncode == 0 and dst.is_file() and dst.stat().st_size > 0:
                made += 1
            else:
                dst.unlink(missing_ok=True)
    return root


def clipart(work: Path, epochs: int = 15) -> None:
    data = str(rasterize(work))
    counts = {s: sum(1 for _ in (Path(data) / s).rglob("*.png")) for s in ("train", "test")}
    print(f"clip-art: {counts['train']} train / {counts['test']} test images, {len(CATEGORIES)} classes",
          file=sys.stderr)
    out = work / "runs"
    common = ["--out-dir", str(out), "--set", "train.strategy=default"]
    rows = []
    cnnctl("train", "finetune", "--data", data, "--model", "efficientnet_lite0", "--epochs", str(epochs),
           "--name", "scratch", "--set", "model.input_shape=[224,224,3]", "--set", "optimizer.lr=0.003",
           "--set", "model.dropout=0.2", *common)
    rows.append(row(out, "scratch", "from scratch (random init), lr 0.003"))
    for mode in ("conv", "features", "partial:7", "none"):
        name = mode.replace(":", "-")
        cnnctl("finetune", "--data", data, "--backbone", "efficientnet_lite0", "--weights", "imagenet",
               "--freeze", mode, "--epochs", str(epochs), "--name", name, *common)
        rows.append(row(out, name, f"--freeze {mode}"))
    table(f"openclipart, {len(CATEGORIES)} categories, {counts['train']} train / {counts['test']} test images, "
          f"EfficientNet-Lite0 224x224, {epochs} epochs", rows)


def main(which: list[str]) -> None:
    which = which or ["fashion", "clipart"]
    with tempfile.TemporaryDirectory() as tmp:
        for w in which:
            work = Path(tmp) / w
            work.mkdir()
            {"fashion": fashion, "clipart": clipart}[w](work)


if __name__ == "__main__":
    main(sys.argv[1:])
