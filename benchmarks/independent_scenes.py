"""Fashion-MNIST ``free`` scenes built from the text of shared/SCENES.md alone, as another tool would.

This file imports nothing from cnnctl. Its random stream (Python's ``random``), its bilinear resize
(numpy, half-pixel centres) and its placement loop are its own, written from the specification, so
the scenes are different draws from the same distribution as cnnctl's ``scenes:free``: a model
trained on cnnctl's scenes must score the same on these (benchmarks/segment.py compares the two;
tests/test_scene_spec.py compares their statistics).

    python benchmarks/independent_scenes.py OUT [--count 500] [--split test] [--seed 0] [--fashion DIR]

writes ``OUT/images/NNNNNN.png`` (8-bit grey canvas) and ``OUT/masks/NNNNNN.png`` (uint8 label image:
0 background, label + 1 on an item's mask), the image/mask folder layout ``--data`` reads, and
``OUT/boxes.csv``, each item's tight box in the CSV box format (benchmarks/detect.py).
"""

from __future__ import annotations

import argparse
import gzip
import random
from pathlib import Path

import numpy as np

SIDE = 128            # canvas side (SCENES.md, free)
THRESHOLD = 32        # an item's mask: its pixels >= 32 after scaling
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
BUNDLED = Path(__file__).resolve().parents[1] / "cnnctl" / "data" / "bundled" / "fashion_mnist"


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip) -> its array (the format's header: magic, then one big-endian int per dim)."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion(split: str, folder: Path = BUNDLED) -> tuple[np.ndarray, np.ndarray]:
    """Train scenes draw from the 60k training images, test scenes from the 10k test images."""
    prefix = "train" if split == "train" else "t10k"
    return (read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz"))


def bilinear(item: np.ndarray, size: int) -> np.ndarray:
    """(28, 28) uint8 -> (size, size) uint8, bilinear with half-pixel centres (the usual convention)."""
    scale = item.shape[0] / size
    src = (np.arange(size) + 0.5) * scale - 0.5
    src = np.clip(src, 0, item.shape[0] - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, item.shape[0] - 1)
    t = src - lo
    a = item.astype(np.float64)
    rows = a[lo] * (1 - t)[:, None] + a[hi] * t[:, None]                 # (size, 28)
    out = rows[:, lo] * (1 - t)[None, :] + rows[:, hi] * t[None, :]      # (size, size)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def scene(images: np.ndarray, labels: np.ndarray, split: str, seed: int, index: int):
    """-> (canvas (128, 128) uint8, label image (128, 128) uint8, [(label, mask)] in paste order)."""
    rng = random.Random(f"independent-free-{split}-{seed}-{index}")
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    label_image = np.zeros((SIDE, SIDE), np.uint8)
    squares, items = [], []
    for _ in range(rng.randint(1, 5)):                       # the number of items: uniform in 1..5
        pick = rng.randrange(len(images))
        size = round(28 * rng.uniform(1.0, 2.0))              # factor s uniform in [1, 2]
        for _attempt in range(100):                           # after 100 failed draws the item is dropped
            x, y = rng.randint(0, SIDE - size), rng.randint(0, SIDE - size)
            if any(x < ox + os and ox < x + size and y < oy + os and oy < y + size for ox, oy, os in squares):
                continue
            squares.append((x, y, size))
            item = bilinear(images[pick], size)
            region = canvas[y:y + size, x:x + size]
            np.maximum(region, item, out=region)
            mask = np.zeros((SIDE, SIDE), bool)
            mask[y:y + size, x:x + size] = item >= THRESHOLD
            label_image[mask] = int(labels[pick]) + 1
            items.append((int(labels[pick]), mask))
            break
    return canvas, label_image, items


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tight box around a mask: (x_min, y_min, x_max, y_max), max exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def write(out: Path, count: int, split: str = "test", seed: int = 0, folder: Path = BUNDLED) -> None:
    """OUT/images/*.png, OUT/masks/*.png and OUT/boxes.csv (image,x_min,y_min,x_max,y_max,label: the
    CSV box format `--data` reads; an image whose items all vanished has one row with empty fields)."""
    import csv

    from PIL import Image

    images, labels = fashion(split, folder)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    with (out / "boxes.csv").open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image", "x_min", "y_min", "x_max", "y_max", "label"])
        for i in range(count):
            canvas, label_image, items = scene(images, labels, split, seed, i)
            name = f"{i:06d}.png"
            Image.fromarray(canvas).save(out / "images" / name)
            Image.fromarray(label_image).save(out / "masks" / name)
            kept = [(label, mask) for label, mask in items if mask.any()]
            for label, mask in kept:
                rows.writerow([f"images/{name}", *tight_box(mask), CLASSES[label]])
            if not kept:
                rows.writerow([f"images/{name}", "", "", "", "", ""])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--split", choices=["train", "test"], default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fashion", default=str(BUNDLED), help="folder of the Fashion-MNIST idx .gz files")
    a = ap.parse_args()
    write(Path(a.out), a.count, a.split, a.seed, Path(a.fashion))


if __name__ == "__main__":
    main()
