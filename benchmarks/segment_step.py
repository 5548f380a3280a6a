"""What a segmentation training step spends on its loss and bar metrics: Keras' own against
cnnctl.tasks.pixel_objectives, on one batch of 32 Fashion-MNIST-scene-sized label maps (128x128,
11 classes), and the whole training step of the segment-scenes U-Net (stem 4, 32 base filters,
depth 3, batch norm, mixed_bfloat16) with each set.

    python benchmarks/segment_step.py [--batch 32] [--repeats 20]

Prints two tables: milliseconds per call of each piece (a compiled tf.function, mean of --repeats
calls after two warm-up calls), and training scenes per second of the whole step (``train_on_batch``
on random pixels and labels, mean over --repeats steps after three warm-up steps; the variants --
Keras' loss and metrics, cnnctl's, cnnctl's loss without bar metrics, and the U-Net with
``stem_skip`` 1 and 4 -- alternate twice and each row gives both measurements, since this
machine's speed drifts).
"""

from __future__ import annotations

import argparse
import time


def per_call_ms(fn, repeats: int) -> float:
    import tensorflow as tf

    g = tf.function(fn)
    g()
    g()
    t0 = time.perf_counter()
    for _ in range(repeats):
        g()
    return (time.perf_counter() - t0) / repeats * 1000


def pieces(batch: int, repeats: int) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from cnnctl.tasks.pixel_objectives import (
        PixelAccuracy,
        PixelCrossEntropy,
        PixelMeanIoU,
    )

    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(batch, 128, 128, 11)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 11, (batch, 128, 128)).astype(np.int32))

    def loss_and_grad(loss):
        def run():
            with tf.GradientTape() as tape:
                tape.watch(logits)
                value = loss(labels, logits)
            return tape.gradient(value, logits)
        return run

    def update(metric):
        return lambda: metric.update_state(labels, logits)

    rows = [
        ("loss, forward and backward", loss_and_grad(keras.losses.SparseCategoricalCrossentropy(from_logits=True)),
         loss_and_grad(PixelCrossEntropy())),
        ("pixel accuracy, one update", update(keras.metrics.SparseCategoricalAccuracy()), update(PixelAccuracy())),
        ("mean IoU, one update", update(keras.metrics.MeanIoU(11, sparse_y_true=True, sparse_y_pred=False)),
         update(PixelMeanIoU(11))),
    ]
    print(f"\n| {batch} x 128 x 128 x 11 logits | Keras ms | cnnctl ms |\n|---|---:|---:|")
    for name, theirs, ours in rows:
        print(f"| {name} | {per_call_ms(theirs, repeats):.1f} | {per_call_ms(ours, repeats):.1f} |")


def steps(batch: int, repeats: int) -> None:
    import keras
    import numpy as np

    from cnnctl.models.unet import unet
    from cnnctl.tasks.pixel_objectives import (
        PixelAccuracy,
        PixelCrossEntropy,
        PixelMeanIoU,
    )

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, 128, 128, 1)).astype(np.uint8)
    y = rng.integers(0, 11, (batch, 128, 128)).astype(np.int32)
    ours = lambda: (PixelCrossEntropy(), [PixelAccuracy(), PixelMeanIoU(11)])
    # (name, model.stem_skip, loss and metrics): the recipe has stem_skip = 4
    variants = [
        ("Keras: SparseCategoricalCrossentropy, SparseCategoricalAccuracy, MeanIoU; stem_skip 0", 0,
         lambda: (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                   keras.metrics.MeanIoU(11, sparse_y_true=True, sparse_y_pred=False)])),
        ("cnnctl: PixelCrossEntropy, PixelAccuracy, PixelMeanIoU; stem_skip 0", 0, ours),
        ("cnnctl, no bar metrics; stem_skip 0", 0, lambda: (PixelCrossEntropy(), [])),
        ("cnnctl; stem_skip 1", 1, ours),
        ("cnnctl; stem_skip 4 (the recipe)", 4, ours),
    ]
    speeds: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(2):
        for name, stem_skip, make in variants:
            keras.utils.set_random_seed(0)
            model = unet(num_classes=11, input_shape=(128, 128, 1), padding="same", stem=4, base_filters=32,
                         depth=3, batch_norm=True, stem_skip=stem_skip)
            loss, metrics = make()
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
            for _ in range(3):
                model.train_on_batch(x, y)
            t0 = time.perf_counter()
            for _ in range(repeats):
                model.train_on_batch(x, y)
            speeds[name].append(batch * repeats / (time.perf_counter() - t0))
    print(f"\n| segment-scenes U-Net, bf16, batch {batch}: loss and metrics; model.stem_skip | "
          "training scenes/s (two runs) | ms a step (mean) |\n|---|---:|---:|")
    for name, got in speeds.items():
        print(f"| {name} | {' / '.join(f'{s:.0f}' for s in got)} | {1000 * batch * 2 / sum(got):.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    pieces(args.batch, args.repeats)
    steps(args.batch, args.repeats)


if __name__ == "__main__":
    main()
