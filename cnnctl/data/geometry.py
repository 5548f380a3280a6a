"""Geometric augmentations that move an image's targets with it: masks (segmentation) and boxes
(detection) go through the same random translation and flip as the pixels.

Every draw is stateless, from ``base`` (the batch's seed pair), so a batch is a function of
(seed, epoch, batch index) -- what exact resume needs. With ``masks`` and ``boxes`` None these are
the classification pipeline's crop and flip, draw for draw.

Shapes: images ``(b, h, w, c)`` float; masks ``(b, h, w, k)`` (class ids or instance ids: moved with
nearest-neighbour, i.e. the same integer shift, never interpolated); boxes ``(b, n, 4)`` as
``(y0, x0, y1, x1)`` in pixels of the image, padded rows all -1 (left as they are).
"""

from __future__ import annotations

# Offsets into the stateless seed for each kind of draw (the pipeline's other draws use others).
CROP_STREAM = 1 << 40
FLIP_STREAM = 2 << 40


def random_translate(images, base, pad: int, masks=None, boxes=None, mask_fill: int = 0):
    """Pad by ``pad`` on every side and take a random ``h x w`` window: a shift of up to ``pad`` pixels.

    -> (images, masks, boxes). Masks are padded with ``mask_fill`` (background / ignore); boxes move by
    the same shift and are clipped to the image (a box pushed fully outside keeps zero area).
    """
    import tensorflow as tf

    h, w = images.shape[1], images.shape[2]
    n = tf.shape(images)[0]
    off = tf.random.stateless_uniform((n, 2), base + [0, CROP_STREAM], 0, 2 * pad + 1, dtype=tf.int32)
    rows = off[:, :1] + tf.range(h)[None]                                   # (b, h)
    cols = off[:, 1:] + tf.range(w)[None]                                   # (b, w)

    def window(x, fill):
        xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=fill)
        x = tf.gather(xp, rows, axis=1, batch_dims=1)                      # (b, h, w + 2p, c)
        return tf.gather(x, cols, axis=2, batch_dims=1)                    # (b, h, w, c)

    images = window(images, 0)
    if masks is not None:
        masks = window(masks, tf.cast(mask_fill, masks.dtype))
    if boxes is not None:
        # the window starts at (off - pad) in the original image: content moves by (pad - off)
        shift = tf.cast(pad - off, boxes.dtype)                             # (b, 2): dy, dx
        delta = tf.concat([shift, shift], axis=1)[:, None, :]               # (b, 1, 4)
        limit = tf.constant([h, w, h, w], boxes.dtype)
        moved = tf.clip_by_value(boxes + delta, tf.zeros_like(limit), limit)
        boxes = tf.where(boxes < 0, boxes, moved)                          # padding rows stay -1
    return images, masks, boxes


def random_flip(images, base, masks=None, boxes=None):
    """Mirror left-right with probability 1/2 per example -> (images, masks, boxes)."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    w = images.shape[2]
    flip = tf.random.stateless_uniform((n, 1, 1, 1), base + [0, FLIP_STREAM]) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    if masks is not None:
        masks = tf.where(flip, tf.reverse(masks, axis=[2]), masks)
    if boxes is not None:
        y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)
        wide = tf.cast(w, boxes.dtype)
        mirrored = tf.stack([y0, wide - x1, y1, wide - x0], axis=-1)
        mirrored = tf.where(boxes < 0, boxes, mirrored)
        boxes = tf.where(flip[:, :, 0], mirrored, boxes)                   # flip (b, 1, 1) over (b, n, 4)
    return images, masks, boxes
