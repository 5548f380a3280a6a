"""Inception-style patch sampling (Szegedy et al. 2015, "Going deeper with convolutions", sec. 6):
a patch covering 8%-100% of the image's area, with aspect ratio in [3/4, 4/3], resized to the
model's input. The same sampling trained Inception-v3/v4 and is torchvision's RandomResizedCrop.

The paper gives the ranges, not the draw. Ours, per image: up to ``ATTEMPTS`` candidates, each with
area fraction uniform in ``area`` and log aspect ratio uniform in ``log(ratio)`` (so 3/4 and 4/3 are
equally likely); the first candidate that fits inside the image wins, at a uniform position. If none
fits (a very long image), the centre crop with the nearest allowed aspect ratio is taken.

Every draw is stateless: a function of the seed pair it is given, which the pipeline makes from
(seed, epoch, position), so exact resume sees the same patches.
"""

from __future__ import annotations

import math

ATTEMPTS = 10
INCEPTION_STREAM = 8 << 40   # offset into the stateless seed (the pipeline's other draws use 1-7)


def sample_boxes(heights, widths, seed, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Patches for ``n`` images of sizes ``heights``/``widths`` (int32 (n,)) -> int32 (n, 4) as
    ``(y0, x0, patch_h, patch_w)`` in pixels, every patch inside its image."""
    import tensorflow as tf

    h = tf.cast(heights, tf.float32)[:, None]                                  # (n, 1)
    w = tf.cast(widths, tf.float32)[:, None]
    n = tf.shape(h)[0]
    u = tf.random.stateless_uniform(tf.stack([n, ATTEMPTS, 4]), seed)         # (n, attempts, 4) in [0, 1)
    frac = area[0] + (area[1] - area[0]) * u[..., 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    r = tf.exp(log_r)                                                          # width / height
    target = frac * h * w
    pw = tf.round(tf.sqrt(target * r))                                         # (n, attempts)
    ph = tf.round(tf.sqrt(target / r))
    fits = (pw >= 1) & (ph >= 1) & (pw <= w) & (ph <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)   # first fitting attempt
    any_fit = tf.reduce_any(fits, axis=1)

    def pick(t):
        return tf.gather(t, first, axis=1, batch_dims=1)                       # (n,)

    ph, pw = pick(ph), pick(pw)
    uy, ux = pick(u[..., 2]), pick(u[..., 3])
    h, w = h[:, 0], w[:, 0]
    # Fallback: the whole image trimmed to the nearest allowed aspect ratio, centred.
    image_r = w / h
    fb_w = tf.where(image_r > ratio[1], tf.round(h * ratio[1]), w)
    fb_h = tf.where(image_r < ratio[0], tf.round(w / ratio[0]), h)
    ph = tf.where(any_fit, ph, fb_h)
    pw = tf.where(any_fit, pw, fb_w)
    y0 = tf.where(any_fit, tf.floor(uy * (h - ph + 1)), tf.floor((h - ph) / 2))
    x0 = tf.where(any_fit, tf.floor(ux * (w - pw + 1)), tf.floor((w - pw) / 2))
    return tf.cast(tf.stack([y0, x0, ph, pw], axis=1), tf.int32)


def crop_batch(images, seed, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """float (b, h, w, c) -> float (b, h, w, c): a patch of each image, bilinearly resized back.

    For images already at the model's size (held in memory): patches are never larger than the
    output, so bilinear interpolation needs no anti-aliasing.
    """
    import tensorflow as tf

    h, w = images.shape[1], images.shape[2]
    n = tf.shape(images)[0]
    boxes = sample_boxes(tf.fill([n], h), tf.fill([n], w), seed, area, ratio)
    y0, x0, ph, pw = (tf.cast(boxes[:, i], tf.float32) for i in range(4))
    # crop_and_resize maps normalised y to y * (h - 1): the patch's first and last pixel centres. A
    # patch ending on the last row would have its last sample land a rounding error past it, where
    # crop_and_resize writes 0; ending 1e-6 short of the edge (3e-5 px at 32 px) avoids that.
    last = 1.0 - 1e-6
    norm = tf.stack([y0 / (h - 1), x0 / (w - 1), tf.minimum((y0 + ph - 1) / (h - 1), last),
                     tf.minimum((x0 + pw - 1) / (w - 1), last)], axis=1)
    return tf.image.crop_and_resize(images, norm, tf.range(n), (h, w), method="bilinear")


def crop_one(image, spec, seed, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """uint8 (H, W, c) full-size image -> uint8 (spec.height, spec.width, c): the patch, resized with
    area averaging when it shrinks (ImageNet photos) and bilinearly when it grows."""
    import tensorflow as tf

    from cnnctl.data.pipeline import resize_uint8

    shape = tf.shape(image)
    box = sample_boxes(shape[:1], shape[1:2], seed, area, ratio)[0]
    patch = tf.image.crop_to_bounding_box(image, box[0], box[1], box[2], box[3])
    return resize_uint8(patch, spec)
