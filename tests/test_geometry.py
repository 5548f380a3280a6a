"""Crop and flip move masks and boxes with the pixels (data/geometry.py)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cnnctl.data.geometry import random_flip, random_translate


def _batch(rng, n=16, h=20, w=24, margin=0):
    images = np.zeros((n, h, w, 1), np.float32)
    boxes = np.full((n, 2, 4), -1.0, np.float32)                       # row 1: padding
    for i in range(n):
        y0, x0 = rng.integers(margin, h - 6 - margin), rng.integers(margin, w - 8 - margin)
        y1, x1 = y0 + rng.integers(2, 6), x0 + rng.integers(2, 8)
        images[i, y0:y1, x0:x1] = 100.0
        boxes[i, 0] = (y0, x0, y1, x1)
    return images, (images > 0).astype(np.int32) * 3, boxes


def _bbox(image):
    ys, xs = np.nonzero(image[..., 0])
    return (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) if len(ys) else None


def test_translation_and_flip_move_masks_and_boxes_with_the_pixels():
    rng = np.random.default_rng(0)
    images, masks, boxes = _batch(rng, margin=5)                       # 5 > pad: objects stay inside
    base = tf.constant([7, 3], tf.int64)
    x, m, b = random_translate(tf.constant(images), base, 4, tf.constant(masks), tf.constant(boxes))
    x, m, b = random_flip(x, base, m, b)
    x, m, b = x.numpy(), m.numpy(), b.numpy()
    assert np.array_equal(m, (x > 0).astype(np.int32) * 3)             # the mask is where the pixels went
    moved = flipped = 0
    for i in range(len(x)):
        assert tuple(b[i, 0]) == _bbox(x[i]), i                         # the box is where the pixels went
        assert (b[i, 1] == -1).all()                                    # padding rows untouched
        moved += tuple(b[i, 0]) != tuple(boxes[i, 0])
        flipped += (b[i, 0, 1] + b[i, 0, 3]) / 2 != (boxes[i, 0, 1] + boxes[i, 0, 3]) / 2
    assert moved >= 12 and flipped >= 4                                 # the draws did something
    # the same seed pair gives the same batch; the image path alone gives the same pixels
    again, _, _ = random_flip(random_translate(tf.constant(images), base, 4)[0], base)
    assert np.array_equal(again.numpy(), x)


def test_boxes_pushed_over_the_border_are_clipped_to_what_is_visible():
    rng = np.random.default_rng(1)
    images, masks, boxes = _batch(rng, n=32, margin=0)
    base = tf.constant([1, 2], tf.int64)
    x, m, b = random_translate(tf.constant(images), base, 6, tf.constant(masks), tf.constant(boxes), mask_fill=255)
    x, m, b = x.numpy(), m.numpy(), b.numpy()
    clipped = 0
    for i in range(len(x)):
        seen = _bbox(x[i])
        if seen is None:                                                # pushed fully out: zero area
            y0, x0, y1, x1 = b[i, 0]
            assert y0 == y1 or x0 == x1
            continue
        assert tuple(b[i, 0]) == seen, i
        clipped += seen != tuple(boxes[i, 0]) and (min(seen) == 0 or seen[2] == 20 or seen[3] == 24)
    assert clipped >= 3
    assert (m[x[..., 0] == 0][..., 0] != 3).all() and (m == 255).any()  # padding is the fill value
