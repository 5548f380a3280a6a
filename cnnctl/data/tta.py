"""Test-time augmentation: multi-crop evaluation.

Krizhevsky et al. 2012, sec. 4.1: "the network makes a prediction by
extracting five 224x224 patches (the four corner patches and the center
patch) as well as their horizontal reflections (hence ten patches in all),
and averaging the predictions made by the network's softmax layer on the ten
patches" from the 256x256 image. Here a batch already at the model's input
size (h, w) is first enlarged by 256/224, then cropped back to (h, w).

Szegedy et al. 2015 (GoogLeNet), sec. 7: 144 crops per image -- 4 scales
(shorter side 256, 288, 320, 352), the left/centre/right (top/centre/bottom
for portraits) squares of each, the 4 corner and the centre 224x224 crops
and the whole square resized to 224 of each square, and their mirror images:
4 x 3 x 6 x 2 = 144. For a model of input h the scales are h x 256/224 ...
h x 352/224; ``googlenet_144_views`` takes the image at the largest scale.
"""

from __future__ import annotations

RESIZE_RATIO = 256 / 224
GOOGLENET_SCALES = (256 / 224, 288 / 224, 320 / 224, 352 / 224)


def googlenet_short_side(height: int) -> int:
    """The shorter side at which ``googlenet_144_views`` wants its image (the largest scale)."""
    return round(height * GOOGLENET_SCALES[-1])


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


def googlenet_144_views(image, size: tuple[int, int]):
    """One float image (H, W, c) with shorter side ``googlenet_short_side(h)`` -> (144, h, w, c) views."""
    import tensorflow as tf

    h, w = size
    big_h, big_w = int(image.shape[0]), int(image.shape[1])
    views = []
    for ratio in GOOGLENET_SCALES:
        s = round(min(h, w) * ratio)
        scale = s / min(big_h, big_w)
        sh, sw = (s, max(s, round(big_w * scale))) if big_h <= big_w else (max(s, round(big_h * scale)), s)
        scaled = tf.image.resize(image, (sh, sw), method="area" if scale < 1 else "bilinear")
        long_side = max(sh, sw)
        for start in (0, (long_side - s) // 2, long_side - s):           # left/centre/right squares
            square = scaled[:, start:start + s] if sw >= sh else scaled[start:start + s, :]
            dy, dx = s - h, s - w
            for y, x in ((0, 0), (0, dx), (dy, 0), (dy, dx), (dy // 2, dx // 2)):
                views.append(square[y:y + h, x:x + w])
            views.append(tf.image.resize(square, (h, w), method="area"))
    views = tf.stack(views)                                               # (72, h, w, c)
    return tf.concat([views, tf.reverse(views, axis=[2])], axis=0)        # (144, h, w, c)


def predict_probs(model, x, tta: str = "none"):
    """Softmax probabilities (b, k) of ``model`` on ``x``, averaged over the views of ``tta``.

    Every view goes through the model's one traced inference function (``cnnctl.inference``).
    """
    import tensorflow as tf

    from cnnctl.inference import inference_function

    forward = inference_function(model)

    def probs_of(views):
        out = forward(tf.cast(views, tf.float32))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return tf.nn.softmax(tf.cast(out, tf.float32))

    if tta == "none":
        return probs_of(x)
    if tta == "10crop":
        views = ten_crops(x)
        return tf.add_n([probs_of(views[i]) for i in range(10)]) / 10.0
    if tta == "144crop":  # x: (b, H, W, c) at googlenet_short_side; usually b = 1
        h, w = (int(d) for d in model.inputs[0].shape[1:3])
        out = []
        for image in tf.unstack(x):
            views = googlenet_144_views(image, (h, w))
            probs = tf.concat([probs_of(views[i:i + 48]) for i in range(0, 144, 48)], axis=0)
            out.append(tf.reduce_mean(probs, axis=0))
        return tf.stack(out)
    raise ValueError(f"unknown test-time augmentation {tta!r}")
