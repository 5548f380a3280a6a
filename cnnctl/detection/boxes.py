"""Box geometry shared by R-CNN, Fast R-CNN and Faster R-CNN: IoU, the box-regression encoding, clipping
and non-maximum suppression.

Boxes are ``(y0, x0, y1, x1)`` in pixels with the far edges exclusive (height = y1 - y0), the order
``tf.image`` uses and the one ``cnnctl.data.geometry`` moves with the pixels. Users see
``[x_min, y_min, x_max, y_max]`` (SCENES.md, COCO, VOC); ``to_xyxy`` / ``from_xyxy`` convert at the
edges of the package.

Every function takes and returns float32 tensors (numpy arrays are accepted) and works in a graph.
"""

from __future__ import annotations

import math

# Box deltas are clamped at log(1000 / 16) before exp: a delta this large means a box 62x its anchor,
# which no training target produces; unclamped, an early-training delta overflows to inf
# (detectron2's ``scale_clamp`` and torchvision's ``bbox_xform_clip`` are the same number).
SCALE_CLAMP = math.log(1000.0 / 16)


def to_xyxy(boxes):
    """(..., 4) (y0, x0, y1, x1) -> (..., 4) [x_min, y_min, x_max, y_max]."""
    import tensorflow as tf

    y0, x0, y1, x1 = tf.unstack(tf.convert_to_tensor(boxes, tf.float32), axis=-1)
    return tf.stack([x0, y0, x1, y1], axis=-1)


def from_xyxy(boxes):
    """(..., 4) [x_min, y_min, x_max, y_max] -> (..., 4) (y0, x0, y1, x1)."""
    return to_xyxy(boxes)   # the same swap both ways


def area(boxes):
    """(..., 4) -> (...) area; a box with y1 < y0 or x1 < x0 has area 0."""
    import tensorflow as tf

    y0, x0, y1, x1 = tf.unstack(tf.convert_to_tensor(boxes, tf.float32), axis=-1)
    return tf.maximum(y1 - y0, 0.0) * tf.maximum(x1 - x0, 0.0)


def iou(a, b):
    """(n, 4), (m, 4) -> (n, m) intersection over union; 0 where both boxes are empty."""
    import tensorflow as tf

    a = tf.convert_to_tensor(a, tf.float32)
    b = tf.convert_to_tensor(b, tf.float32)
    ay0, ax0, ay1, ax1 = (t[:, None] for t in tf.unstack(a, axis=-1))   # (n, 1) each
    by0, bx0, by1, bx1 = (t[None, :] for t in tf.unstack(b, axis=-1))   # (1, m) each
    inter = (tf.maximum(tf.minimum(ay1, by1) - tf.maximum(ay0, by0), 0.0)
             * tf.maximum(tf.minimum(ax1, bx1) - tf.maximum(ax0, bx0), 0.0))
    union = area(a)[:, None] + area(b)[None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def encode(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets of ``boxes`` relative to ``anchors`` (both (n, 4)) -> (n, 4) (ty, tx, th, tw).

    Faster R-CNN eq. 2 (the same as R-CNN appendix C): ty = (y - ya) / ha, tx = (x - xa) / wa,
    th = log(h / ha), tw = log(w / wa) for the centres (y, x) and sizes (h, w); each multiplied by its
    ``weights`` entry (Fast R-CNN's implementation uses (10, 10, 5, 5) for the detector head, so the
    targets have about unit variance).
    """
    import tensorflow as tf

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ya, xa = anchors[:, 0] + 0.5 * ha, anchors[:, 1] + 0.5 * wa
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    y, x = boxes[:, 0] + 0.5 * h, boxes[:, 1] + 0.5 * w
    wy, wx, wh, ww = weights
    return tf.stack([wy * (y - ya) / ha, wx * (x - xa) / wa,
                     wh * tf.math.log(h / ha), ww * tf.math.log(w / wa)], axis=-1)


def decode(deltas, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """The inverse of ``encode``: (n, 4) deltas on (n, 4) anchors -> (n, 4) boxes. Size deltas are
    clamped at ``SCALE_CLAMP`` so an untrained network cannot produce inf boxes."""
    import tensorflow as tf

    deltas = tf.convert_to_tensor(deltas, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ya, xa = anchors[:, 0] + 0.5 * ha, anchors[:, 1] + 0.5 * wa
    wy, wx, wh, ww = weights
    y = deltas[:, 0] / wy * ha + ya
    x = deltas[:, 1] / wx * wa + xa
    h = tf.exp(tf.minimum(deltas[:, 2] / wh, SCALE_CLAMP)) * ha
    w = tf.exp(tf.minimum(deltas[:, 3] / ww, SCALE_CLAMP)) * wa
    return tf.stack([y - 0.5 * h, x - 0.5 * w, y + 0.5 * h, x + 0.5 * w], axis=-1)


def clip(boxes, height, width):
    """(n, 4) boxes clipped to the image [0, height] x [0, width]."""
    import tensorflow as tf

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    y0, x0, y1, x1 = tf.unstack(boxes, axis=-1)
    return tf.stack([tf.clip_by_value(y0, 0.0, height), tf.clip_by_value(x0, 0.0, width),
                     tf.clip_by_value(y1, 0.0, height), tf.clip_by_value(x1, 0.0, width)], axis=-1)


def inside(boxes, height, width):
    """(n,) bool: the box lies wholly inside the image (Faster R-CNN sec. 3.3 ignores the others in
    training)."""
    import tensorflow as tf

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    return ((boxes[:, 0] >= 0.0) & (boxes[:, 1] >= 0.0)
            & (boxes[:, 2] <= height) & (boxes[:, 3] <= width))


def nms(boxes, scores, iou_threshold: float, max_out: int, min_size: float = 0.0):
    """Greedy non-maximum suppression -> (k,) int32 indices of the kept boxes, best first, k <= max_out.

    Boxes whose height or width is below ``min_size`` are dropped first (Faster R-CNN's proposal layer
    drops those under 16 px at the original scale)."""
    import tensorflow as tf

    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    big = tf.reshape(tf.where((boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)),
                     [-1])
    big = tf.cast(big, tf.int32)
    keep = tf.image.non_max_suppression(tf.gather(boxes, big), tf.gather(scores, big), max_out,
                                        iou_threshold=iou_threshold)
    return tf.gather(big, keep)
