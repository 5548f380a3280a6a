"""Test-time augmentation: multi-crop evaluation.

Krizhevsky et al. 2012, sec. 4.1: "the network makes a prediction by
extracting five 224x224 patches (the four corner patches and the center
patch) as well as their horizontal reflections (hence ten patches in all),
and averaging the predictions made by the network's softmax layer on the ten
patches" from the 256x256 image. Here a batch already at the model's input
size (h, w) is first enlarged by 256/224, then cropped back to (h, w).
"""

from __future__ import annotations

RESIZE_RATIO = 256 / 224


def ten_crops(x, ratio: float = RESIZE_RATIO):
    """(b, h, w, c) float images -> (10, b, h, w, c): 4 corners + centre, and their mirror images."""
    import tensorflow as tf

    h, w = int(x.shape[1]), int(x.shape[2])
    big_h, big_w = max(h, round(h * ratio)), max(w, round(w * ratio))
    big = tf.image.resize(x, (big_h, big_w), method="bilinear")
    dy, dx = big_h - h, big_w - w
    offsets = [(0, 0), (0, dx), (dy, 0), (dy, dx), (dy // 2, dx // 2)]
    crops = [big[:, y:y + h, x0:x0 + w, :] for y, x0 in offsets]
    crops += [tf.reverse(c, axis=[2]) for c in crops]
    return tf.stack(crops)


def predict_probs(model, x, tta: str = "none"):
    """Softmax probabilities (b, k) of ``model`` on ``x``, averaged over the views of ``tta``."""
    import tensorflow as tf

    if tta == "none":
        return tf.nn.softmax(tf.cast(model(x, training=False), tf.float32))
    if tta == "10crop":
        views = ten_crops(x)
        probs = [tf.nn.softmax(tf.cast(model(views[i], training=False), tf.float32)) for i in range(10)]
        return tf.add_n(probs) / 10.0
    raise ValueError(f"unknown test-time augmentation {tta!r}")
