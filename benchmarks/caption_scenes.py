"""Captioning on Fashion-MNIST grid scenes: the recipe's time and scores, checked from outside.

1. ``cnnctl train caption-scenes`` (wall time, metrics.json);
2. 1,000 test scenes generated HERE from the text of shared/SCENES.md alone (this file's own
   generator: no cnnctl code), written as PNG files;
3. ``cnnctl caption --model RUN *.png --json`` on them, scored with corpus BLEU and exact match
   against the sentences this generator wrote -- it must equal the run's own test scores;
4. speed: ``cnnctl caption image.png`` cold start against ``python -c "import tensorflow"`` (the
   floor) and the same import ended by ``os._exit`` (as the command ends), and captions per second
   over 100 images in one process.

    python benchmarks/caption_scenes.py [--out checkpoints/bench-caption] [--skip-train]

Prints markdown tables (docs/captioning.md carries them).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FASHION = ROOT / "cnnctl" / "data" / "bundled" / "fashion_mnist"
NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")


def read_idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def spec_scene(images, labels, split_id: int, seed: int, index: int):
    """SCENES.md "grid", written from the text: 64x64 canvas, 2 of 4 cells, offsets in [0, 4]."""
    rng = np.random.default_rng([seed, split_id, index])
    cells = sorted(rng.choice(4, size=2, replace=False).tolist())
    picks = rng.integers(0, len(images), size=2)
    offsets = rng.integers(0, 5, size=(2, 2))
    canvas = np.zeros((64, 64), np.uint8)
    for cell, pick, (dx, dy) in zip(cells, picks, offsets):
        r, c = divmod(cell, 2)
        y, x = 32 * r + dy, 32 * c + dx
        canvas[y:y + 28, x:x + 28] = np.maximum(canvas[y:y + 28, x:x + 28], images[pick])
    a, b = NAMES[labels[picks[0]]], NAMES[labels[picks[1]]]
    return canvas, f"a {a} {'left of' if cells[0] // 2 == cells[1] // 2 else 'above'} a {b}"


def cnnctl(*args, capture=True):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cnnctl", *map(str, args)], capture_output=capture, text=True,
                       check=False)
    if r.returncode:
        sys.exit(f"cnnctl {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="checkpoints/bench-caption")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/caption-scenes")
    ap.add_argument("--scenes", type=int, default=1000)
    args = ap.parse_args()
    out = Path(args.out)
    run = out / "caption-scenes"
    if not args.skip_train:
        if run.exists():
            sys.exit(f"{run} exists: remove it or pass --skip-train")
        _, train_s = cnnctl("train", "caption-scenes", "--out-dir", out, "--name", "caption-scenes", capture=False)
    else:
        train_s = float("nan")
    metrics = json.loads((run / "metrics.json").read_text())

    images, labels = read_idx(FASHION / "t10k-images-idx3-ubyte.gz"), read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    folder = out / "spec-scenes"
    folder.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    sentences, paths = [], []
    for i in range(args.scenes):
        canvas, sentence = spec_scene(images, labels, 1, 0, i)
        paths.append(folder / f"{i:04d}.png")
        Image.fromarray(canvas).save(paths[-1])
        sentences.append(sentence)
    # --last: the run's test scores are those of its last model.keras (the command's default is best.keras)
    r, caption_s = cnnctl("caption", "--model", run, *paths, "--json", "--last")
    got = json.loads(r.stdout)
    sys.path.insert(0, str(ROOT))
    from cnnctl.data.text import tokenize
    from cnnctl.metrics.captions import corpus_bleu

    # Both sides through cnnctl's documented text rule (as the COCO evaluation tokenises both):
    # "t-shirt" -> "tshirt", the word the vocabulary holds.
    hyps = [tokenize(g["caption"]) for g in got]
    refs = [[tokenize(s)] for s in sentences]
    bleu4 = corpus_bleu(hyps, refs)[3]
    exact = float(np.mean([h == r[0] for h, r in zip(hyps, refs)]))

    print(f"\n### Grid scenes (`pipelines/caption-scenes.toml`), {metrics['test_images']} test scenes\n")
    print("| | BLEU-1 | BLEU-4 | CIDEr-D | exact sentence |")
    print("|---|---:|---:|---:|---:|")
    for label, prefix in ((f"show_and_tell, beam {metrics['test_beam']}", "test_"),
                          ("show_and_tell, greedy", "test_greedy_"),
                          ("baseline: nearest training scene's sentence", "baseline_nearest_"),
                          ("baseline: most frequent training sentence", "baseline_frequent_")):
        print(f"| {label} | {metrics[prefix + 'bleu1']:.3f} | {metrics[prefix + 'bleu4']:.3f} | "
              f"{metrics[prefix + 'cider_d']:.3f} | {metrics[prefix + 'exact']:.1%} |")
    print(f"| `cnnctl caption` on {len(paths)} PNG scenes made by this script's own generator | | "
          f"{bleu4:.3f} | | {exact:.1%} |")
    print(f"\ntraining wall time (features, 8 epochs, evaluation): {train_s:.0f} s; "
          f"metrics.json wall_time_s {metrics['wall_time_s']:.0f} s")
    same = abs(bleu4 - metrics["test_bleu4"]) < 1e-9 and abs(exact - metrics["test_exact"]) < 1e-9
    print(f"independent scenes score the same as the run's test split: {'yes' if same else 'NO'}")

    # speed: cold start of one caption vs the floor, and throughput in one process
    floor = min(_timed([sys.executable, "-c", "import tensorflow"]) for _ in range(3))
    # `cnnctl caption` ends by os._exit once its output is flushed (cnnctl.cli.FAST_EXIT_COMMANDS):
    # the like-for-like floor skips Python's teardown too
    bare = min(_timed([sys.executable, "-c", "import os, tensorflow; os._exit(0)"]) for _ in range(3))
    cold = min(_timed([sys.executable, "-m", "cnnctl", "caption", "--model", str(run), str(paths[0])])
               for _ in range(3))
    from cnnctl.captioner import Captioner

    captioner = Captioner(run)
    captioner.caption([str(p) for p in paths[:8]])
    t0 = time.perf_counter()
    captioner.caption([str(p) for p in paths[:100]])
    per_s = 100 / (time.perf_counter() - t0)
    print("\n| speed (best of 3) | seconds |")
    print("|---|---:|")
    print(f"| `python -c 'import tensorflow'` (the floor) | {floor:.2f} |")
    print(f"| `python -c 'import os, tensorflow; os._exit(0)'` (the floor without teardown) | {bare:.2f} |")
    print(f"| `cnnctl caption --model RUN scene.png`, cold start | {cold:.2f} |")
    print(f"| captions per second over 100 images (one process, beam {metrics['test_beam']}) | {per_s:.0f} /s |")
    print(f"\n(caption command over {len(paths)} scenes took {caption_s:.1f} s wall)")


def _timed(cmd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
