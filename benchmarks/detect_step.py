"""Where one Faster R-CNN training step goes on this CPU: the `detect-scenes` model (VGG-style backbone
from scratch, 128x128 scenes, batch 8), each part timed on its own as a traced function.

    python benchmarks/detect_step.py [--repeats 10]

Rows: the whole step (``train_on_batch``); the backbone forward and backward; RoI max pooling forward
and backward for 8 x 64 RoIs; the detector's fc layers forward and backward on 512 pooled RoIs; the
RPN's anchor labelling and sampling. Milliseconds per call, and the share of the whole step. The
parts overlap (the whole step includes them), so the shares do not add up to 100%.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    import keras
    import numpy as np
    import tensorflow as tf

    from cnnctl import models
    from cnnctl.data.detection import load_detection

    sp = load_detection("scenes:free", (8, 0, 0)).splits["train"]
    x = np.stack(sp.images)
    boxes, classes = -np.ones((8, 5, 4), np.float32), np.zeros((8, 5), np.int32)
    for j in range(8):
        boxes[j, :len(sp.boxes[j])], classes[j, :len(sp.boxes[j])] = sp.boxes[j], sp.classes[j]
    keras.utils.set_random_seed(0)
    m = models.build("faster_rcnn", num_classes=10, input_shape=(128, 128, 1), anchor_scales=[27, 55, 109],
                     min_size=4, post_nms_train=300, post_nms_test=100)
    m.compile(optimizer=keras.optimizers.Adam(1e-3))

    def ms(f):
        f()
        f()
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            f()
        return (time.perf_counter() - t0) / a.repeats * 1000

    @tf.function
    def backbone(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(m.backbone(images, training=True))
        return tape.gradient(loss, m.backbone.trainable_variables)

    features = m.backbone(x)
    rng = np.random.default_rng(0)
    starts = rng.uniform(0, 80, (8, 64, 2)).astype(np.float32)
    rois = tf.constant(np.concatenate([starts, starts + rng.uniform(16, 48, (8, 64, 2)).astype(np.float32)], -1))

    @tf.function
    def roi_pool(f, r):
        with tf.GradientTape() as tape:
            tape.watch(f)
            loss = tf.reduce_sum(m.roi_pool([f, r]))
        return tape.gradient(loss, f)

    pooled = tf.random.normal((512, 7, 7, int(features.shape[-1])))

    @tf.function
    def head(p):
        with tf.GradientTape() as tape:
            logits, deltas = m.detector(p, training=True)
            loss = tf.reduce_sum(logits) + tf.reduce_sum(deltas)
        return tape.gradient(loss, m.detector.trainable_variables)

    @tf.function
    def anchors(b):
        return m._rpn_targets(b, m._image_seeds(8))

    rows = [("whole training step (train_on_batch)", ms(lambda: m.train_on_batch(x, boxes, classes)))]
    rows += [("backbone forward + backward", ms(lambda: backbone(tf.constant(x)))),
             ("RoI max pooling forward + backward (512 RoIs)", ms(lambda: roi_pool(features, rois))),
             ("detector fc layers forward + backward (512 RoIs)", ms(lambda: head(pooled))),
             ("RPN anchor labels and sampling", ms(lambda: anchors(tf.constant(boxes))))]
    print("\n| part | ms | share of the step |\n|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.1f} | {t / rows[0][1]:.0%} |")


if __name__ == "__main__":
    main()
