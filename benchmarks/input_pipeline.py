"""Input pipeline alone, images/s: a folder of JPEGs and TFRecords through cnnctl vs Keras' helper.

    python benchmarks/input_pipeline.py [--images 6000] [--size 96]

The folder is made from real Fashion-MNIST test images (bundled), written as
RGB JPEGs of --size pixels into a temporary directory, in 10 class folders.
Every pipeline decodes, resizes to 32x32x3 (ResNet-20's input) and batches
128; each is read twice and the second pass is timed (file cache warm, as in
any epoch after the first). Compare with the model's step rate from
train_throughput.py: the pipeline should be >= 3x faster so the model never waits.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_folder(root: Path, n: int, size: int) -> Path:
    from PIL import Image

    from cnnctl.data.sources import FASHION_CLASSES, fashion_mnist

    test = fashion_mnist()["test"]
    for i in range(n):
        d = root / f"{test.labels[i]}_{FASHION_CLASSES[test.labels[i]].replace('/', '-')}"
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(test.images[i, :, :, 0]).resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
        img.save(d / f"{i:05d}.jpg", quality=90)
    return root


def timed(make_ds, n_expected: int) -> float:
    for _ in make_ds():  # warm the file cache and trace the functions
        pass
    t = time.perf_counter()
    n = 0
    for x, _ in make_ds():
        n += int(x.shape[0])
    dt = time.perf_counter() - t
    assert n == n_expected, (n, n_expected)
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--size", type=int, default=96)
    a = ap.parse_args()
    import keras
    import tensorflow as tf

    from cnnctl.config import DataConfig
    from cnnctl.data.pipeline import DataModule, InputSpec
    from cnnctl.data.tfrecord import convert

    spec = InputSpec(32, 32, 3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "jpegs", a.images, a.size)
        records = Path(tmp) / "records"
        convert(str(folder), str(records))
        stream = DataModule(DataConfig(path=str(folder), val_split=0.0, cache=False), spec, 128, 0, log=lambda m: None)
        rows.append(("cnnctl, JPEG folder, streamed (tf.io.decode_image, parallel)",
                     timed(lambda: stream.train_dataset(0), a.images)))
        t = time.perf_counter()
        cached = DataModule(DataConfig(path=str(folder), val_split=0.0, cache=True), spec, 128, 0, log=lambda m: None)
        first = a.images / (time.perf_counter() - t)
        rows.append(("cnnctl, JPEG folder, decoded once into memory (Pillow, threads): first pass", first))
        rows.append(("cnnctl, JPEG folder, in memory: every later epoch", timed(lambda: cached.train_dataset(0), a.images)))
        rec = DataModule(DataConfig(path=str(records), val_split=0.0), spec, 128, 0, log=lambda m: None)
        rows.append(("cnnctl, TFRecord shards (PNG inside)", timed(lambda: rec.train_dataset(0), a.images)))

        def keras_ds():
            ds = keras.utils.image_dataset_from_directory(str(folder), image_size=(32, 32), batch_size=128,
                                                          shuffle=True, seed=0, verbose=False)
            return ds.prefetch(tf.data.AUTOTUNE)

        rows.append(("keras.utils.image_dataset_from_directory (shuffle, prefetch)", timed(keras_ds, a.images)))
    print(f"\n{a.images} Fashion-MNIST test images as {a.size}x{a.size} RGB JPEGs -> 32x32x3, batch 128, "
          f"{os.cpu_count()} CPU cores\n")
    print("| pipeline | images/s |")
    print("|---|---|")
    for name, ips in rows:
        print(f"| {name} | {ips:,.0f} |")


if __name__ == "__main__":
    main()
