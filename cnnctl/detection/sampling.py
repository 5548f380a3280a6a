"""Training targets: which anchors (RPN) and which RoIs (Fast R-CNN head) are positive, negative or
ignored, and the minibatch samplers over them.

Random choices are stateless, from a seed pair, so a training batch is a function of (seed, epoch,
step) and an interrupted run resumes bit-identically.
"""

from __future__ import annotations

from cnnctl.detection import boxes as box_ops

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1

# The detector head's regression-target weights (Fast R-CNN's released code, ``BBOX_NORMALIZE_STDS``
# 0.1, 0.1, 0.2, 0.2): the targets get about unit variance, so smooth L1 with lambda = 1 balances
# the classification loss as sec. 2.3 intends.
HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def label_anchors(anchors, gt_boxes, height, width, positive_iou: float = 0.7, negative_iou: float = 0.3):
    """Faster R-CNN sec. 3.1.2: -> (labels (a,) int32 in {1, 0, -1}, matched (a,) int32 gt index).

    Positive: IoU >= ``positive_iou`` with some ground-truth box, or the highest IoU any anchor has
    with a ground-truth box (ties included; only if that IoU is above 0). Negative: IoU below
    ``negative_iou`` with every ground-truth box. Anchors crossing the image boundary are ignored
    (sec. 3.3), and so is everything between the two thresholds. ``gt_boxes`` (g, 4) may be empty:
    every inside anchor is then negative."""
    import tensorflow as tf

    anchors = tf.convert_to_tensor(anchors, tf.float32)
    gt_boxes = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), (-1, 4))
    valid = box_ops.inside(anchors, height, width)                                 # (a,)
    overlaps = box_ops.iou(anchors, gt_boxes) * tf.cast(valid, tf.float32)[:, None]  # (a, g)
    best, matched = _best_match(overlaps)
    # for each gt box, the anchors with its highest IoU (> 0): positive even below the threshold
    gt_best = tf.reduce_max(overlaps, axis=0, keepdims=True)                       # (1, g)
    is_gt_best = tf.reduce_any((overlaps == gt_best) & (gt_best > 0.0), axis=1)    # (a,)
    labels = tf.fill(tf.shape(best), IGNORED)
    labels = tf.where(best < negative_iou, NEGATIVE, labels)
    labels = tf.where((best >= positive_iou) | is_gt_best, POSITIVE, labels)
    labels = tf.where(valid, labels, IGNORED)
    return labels, matched


def _best_match(overlaps):
    """(a, g) IoUs -> (best IoU (a,), matched gt index (a,) int32); with g = 0, IoU 0 and index 0."""
    import tensorflow as tf

    padded = tf.pad(overlaps, [[0, 0], [0, 1]])          # a zero column: defined when there is no gt
    best = tf.reduce_max(padded, axis=1)
    matched = tf.argmax(padded, axis=1, output_type=tf.int32)
    return best, tf.minimum(matched, tf.maximum(tf.shape(overlaps)[1] - 1, 0))


def _pick(mask, count, keys):
    """Indices (count,) of the ``count`` entries of boolean ``mask`` with the smallest random ``keys``."""
    import tensorflow as tf

    order = tf.argsort(tf.where(mask, keys, 2.0), stable=True)   # keys are in [0, 1): unmasked sort last
    return order[:count]


def sample_labels(labels, num: int, positive_fraction: float, seed):
    """Subsample ``labels`` (a,) in {1, 0, -1} to at most ``num`` anchors, at most ``positive_fraction``
    of them positive, padding with negatives (sec. 3.1.3: 256 anchors at up to 1:1). Unsampled
    anchors become -1. ``seed``: a stateless seed pair (2,) int."""
    import tensorflow as tf

    labels = tf.convert_to_tensor(labels, tf.int32)
    keys = tf.random.stateless_uniform(tf.shape(labels), seed)
    pos, neg = labels == POSITIVE, labels == NEGATIVE
    n_pos = tf.minimum(tf.reduce_sum(tf.cast(pos, tf.int32)), int(num * positive_fraction))
    n_neg = tf.minimum(tf.reduce_sum(tf.cast(neg, tf.int32)), num - n_pos)
    out = tf.fill(tf.shape(labels), IGNORED)
    chosen_pos = _pick(pos, n_pos, keys)[:, None]
    chosen_neg = _pick(neg, n_neg, keys)[:, None]
    out = tf.tensor_scatter_nd_update(out, chosen_pos, tf.fill(tf.shape(chosen_pos[:, 0]), POSITIVE))
    return tf.tensor_scatter_nd_update(out, chosen_neg, tf.fill(tf.shape(chosen_neg[:, 0]), NEGATIVE))


def sample_rois(proposals, gt_boxes, gt_classes, num: int, seed, foreground_fraction: float = 0.25,
                foreground_iou: float = 0.5, background_iou=(0.1, 0.5)):
    """Fast R-CNN sec. 2.3's RoI minibatch for one image.

    ``proposals`` (p, 4); ``gt_boxes`` (g, 4) with ``gt_classes`` (g,) in 1..K (0 is background). The
    ground-truth boxes join the candidates, as in the released implementation. Up to
    ``foreground_fraction`` of ``num`` RoIs come from candidates with IoU >= ``foreground_iou``; the
    rest from IoU in [``background_iou``) (the paper's [0.1, 0.5): low-IoU background is a heuristic
    for hard examples). -> (rois (num, 4), classes (num,) int32, targets (num, 4) in ``HEAD_WEIGHTS``
    units, valid (num,) float32): rows past the candidates available have valid 0 and are masked out
    of the losses, so every image gives the same static shapes."""
    import tensorflow as tf

    proposals = tf.reshape(tf.convert_to_tensor(proposals, tf.float32), (-1, 4))
    gt_boxes = tf.reshape(tf.convert_to_tensor(gt_boxes, tf.float32), (-1, 4))
    gt_classes = tf.reshape(tf.convert_to_tensor(gt_classes, tf.int32), (-1,))
    candidates = tf.concat([proposals, gt_boxes], axis=0)                            # (c, 4)
    overlaps = box_ops.iou(candidates, gt_boxes)                                     # (c, g)
    best, matched = _best_match(overlaps)
    fg = best >= foreground_iou
    bg = (best >= background_iou[0]) & (best < background_iou[1])
    keys = tf.random.stateless_uniform(tf.shape(best), seed)
    n_fg = tf.minimum(tf.reduce_sum(tf.cast(fg, tf.int32)), round(num * foreground_fraction))
    n_bg = tf.minimum(tf.reduce_sum(tf.cast(bg, tf.int32)), num - n_fg)
    chosen = tf.concat([_pick(fg, n_fg, keys), _pick(bg, n_bg, keys)], axis=0)       # (n_fg + n_bg,)
    n = tf.shape(chosen)[0]
    pad = num - n
    rois = tf.gather(candidates, chosen)
    gt_of = tf.gather(matched, chosen)
    foreground = tf.range(n) < n_fg
    classes = tf.where(foreground, tf.gather(tf.concat([gt_classes, [0]], 0), gt_of), 0)
    # background rows regress onto themselves: target 0, and no gather from an empty gt list
    matched_boxes = tf.where(foreground[:, None], tf.gather(tf.concat([gt_boxes, tf.zeros((1, 4))], 0), gt_of), rois)
    targets = box_ops.encode(matched_boxes, rois, HEAD_WEIGHTS)
    rois = tf.pad(rois, [[0, pad], [0, 0]])
    return (tf.ensure_shape(rois, (num, 4)), tf.ensure_shape(tf.pad(classes, [[0, pad]]), (num,)),
            tf.ensure_shape(tf.pad(targets, [[0, pad], [0, 0]]), (num, 4)),
            tf.ensure_shape(tf.pad(tf.ones((n,)), [[0, pad]]), (num,)))
