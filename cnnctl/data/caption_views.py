"""Distorted views of the training images, for a captioner over a frozen encoder (``caption.views``).

Show and Tell's own code (im2txt, ``image_processing.py``) distorts each training image every time it
reads it: a random crop, a random left-right flip, and colour distortions -- brightness by up to
+-32/255, saturation and contrast by a factor in [0.5, 1.5], hue by up to +-0.032 -- in one of two
orders. A frozen encoder's features are computed once, so here ``K`` distorted views of every training
image are computed once, cached with the features, and each epoch every (image, caption) pair sees its
image or one of its ``K`` views (drawn from (seed, epoch), so a resumed run sees the same).

The draws, per image:
- a patch of 50-100% of the image's area, aspect ratio in [3/4, 4/3], resized back (im2txt crops a
  fixed 299 of 346, 75% of the area, at a random place);
- left-right flip with probability 1/2;
- im2txt's four colour distortions, each order with probability 1/2, then clipped to [0, 1];
- grey-scale with probability 0.2 (our addition, not im2txt's: clip-art comes in colour and
  black-and-white versions of one drawing).

Every draw is a function of (view, image index) only -- not of the training seed or the batch --
so one cache serves every seed of a recipe.
"""

from __future__ import annotations

import math

import numpy as np

AREA = (0.5, 1.0)
RATIO = (3 / 4, 4 / 3)
BRIGHTNESS = 32 / 255
SATURATION = (0.5, 1.5)
HUE = 0.032
CONTRAST = (0.5, 1.5)
GREY = 0.2
STREAM = 0xC0FFEE            # keeps these draws apart from every other seeded stream
VERSION = "im2txt distortions + grey 0.2, v1"   # in the feature cache key: change it when a draw changes


def _patch(rng: np.random.Generator, side_h: int, side_w: int) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of a patch inside an ``side_h x side_w`` image; the whole image if none fits."""
    for _ in range(10):
        area = rng.uniform(*AREA) * side_h * side_w
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))     # width / height
        w, h = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 1 <= w <= side_w and 1 <= h <= side_h:
            return int(rng.integers(side_h - h + 1)), int(rng.integers(side_w - w + 1)), h, w
    return 0, 0, side_h, side_w


def distort_one(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (S, S, c) -> uint8 (S, S, c): one draw of the distortions above."""
    import tensorflow as tf

    side_h, side_w, channels = image.shape
    y0, x0, h, w = _patch(rng, side_h, side_w)
    x = tf.image.resize(tf.constant(image[y0:y0 + h, x0:x0 + w], tf.float32) / 255.0, (side_h, side_w),
                        method="bilinear", antialias=True)
    if rng.random() < 0.5:
        x = x[:, ::-1]
    if channels == 3:
        brightness = rng.uniform(-BRIGHTNESS, BRIGHTNESS)
        saturation, hue = rng.uniform(*SATURATION), rng.uniform(-HUE, HUE)
        contrast = rng.uniform(*CONTRAST)
        x = tf.image.adjust_brightness(x, brightness)
        if rng.random() < 0.5:       # im2txt's two orders
            x = tf.image.adjust_contrast(tf.image.adjust_hue(tf.image.adjust_saturation(x, saturation), hue), contrast)
        else:
            x = tf.image.adjust_hue(tf.image.adjust_saturation(tf.image.adjust_contrast(x, contrast), saturation), hue)
        if rng.random() < GREY:
            x = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
    else:
        x = tf.image.adjust_contrast(tf.image.adjust_brightness(x, rng.uniform(-BRIGHTNESS, BRIGHTNESS)),
                                     rng.uniform(*CONTRAST))
    return np.asarray(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), np.uint8)


def distorted(view: int):
    """The ``transform`` of ``encoders.encode`` for view ``view`` (1..K): (uint8 batch (b, S, S, c), index of
    its first image) -> the batch distorted, image ``i`` by draws from (view, i)."""
    def transform(batch: np.ndarray, first: int) -> np.ndarray:
        return np.stack([distort_one(img, np.random.default_rng([STREAM, view, first + i]))
                         for i, img in enumerate(batch)])
    return transform
