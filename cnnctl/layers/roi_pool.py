"""Fast R-CNN's RoI max pooling (Girshick 2015, sec. 2.1): each region of interest on the shared
feature map is divided into a fixed H x W grid of sub-windows, and each sub-window is max-pooled.

The arithmetic is the released Caffe layer's: the RoI's corners are rounded to feature cells
(``round(coordinate * spatial_scale)``, far corner inclusive), bin (i, j) covers rows
``floor(i * h / H) .. ceil((i + 1) * h / H)`` (exclusive) of the RoI's h rows, likewise columns. One
deliberate difference: a RoI reaching past the map is clipped to it before it is divided (Caffe
divides the whole RoI and clips the bins, leaving some empty); proposals and ground truth lie inside
the image, so this changes nothing in training or testing, and no bin is ever empty. The backward
pass routes each output's gradient to the cell that was its maximum (sec. 2.3, eq. 4).

Implementation: a bin spans at most ``k = ceil(side / H) + 1`` cells per axis. The map is max-pooled
(stride 1) once for every window of ``2^i x 2^j`` cells up to ``k`` (a sparse table: 4 x 4 maps for
k <= 15); a bin of ``sh x sw`` cells starting at ``(y, x)`` is the max of four such windows that
together cover it exactly (``2^i <= sh < 2^(i + 1)`` placed at ``y`` and at ``y + sh - 2^i``, likewise
across). The layer is a few ``max_pool2d`` calls and four ``gather_nd`` of the output's size; its
gradient is max pooling's (to the cell that was the maximum) through the gathers.
"""

from __future__ import annotations

import math

import keras


def roi_pool(features, rois, image_index, output_size=(7, 7), spatial_scale: float = 1.0 / 16):
    """features (b, fh, fw, c); rois (n, 4) (y0, x0, y1, x1) in image pixels, far edges exclusive;
    image_index (n,) int: which image each RoI is on. -> (n, H, W, c)."""
    import tensorflow as tf

    out_h, out_w = output_size
    fh, fw = features.shape[1], features.shape[2]
    if fh is None or fw is None:
        raise ValueError("roi_pool needs a feature map of static height and width")
    rois = tf.convert_to_tensor(rois, tf.float32)
    image_index = tf.cast(tf.reshape(image_index, (-1,)), tf.int32)

    def bins_along(start, stop, side, bins):
        """start/stop (n,) image pixels, stop exclusive -> first cell (n, bins), cells spanned (n, bins)."""
        # RoIs are clipped to the map first (proposals and ground truth lie inside the image anyway), so a
        # bin never spans more than ceil(side / bins) + 1 cells
        # floor(v + 0.5): C's round() for v >= 0 (tf.round rounds halves to even)
        first = tf.clip_by_value(tf.floor(start * spatial_scale + 0.5), 0.0, side - 1.0)
        last = tf.clip_by_value(tf.floor((stop - 1.0) * spatial_scale + 0.5), 0.0, side - 1.0)  # inclusive, as Caffe's x2
        first, last = tf.cast(first, tf.int32), tf.cast(last, tf.int32)
        length = last - first + 1                                    # (n,) cells the RoI spans, >= 1
        # bin i covers [floor(i * length / bins), ceil((i + 1) * length / bins)), in integers: Caffe's
        # float version of the same rounding can land one cell off when (i + 1) * length / bins is whole
        i = tf.range(bins)[None, :]                                  # (1, bins)
        lo = first[:, None] + (i * length[:, None]) // bins
        hi = first[:, None] - ((-(i + 1) * length[:, None]) // bins)
        return lo, hi - lo

    y, sh = bins_along(rois[:, 0], rois[:, 2], fh, out_h)          # (n, H) each
    x, sw = bins_along(rois[:, 1], rois[:, 3], fw, out_w)          # (n, W) each
    kh, kw = min(math.ceil(fh / out_h) + 1, fh), min(math.ceil(fw / out_w) + 1, fw)
    levels_h, levels_w = kh.bit_length(), kw.bit_length()          # windows 2^0 .. 2^(levels - 1)
    table = []                                                     # (levels_h * levels_w) maps (b, fh, fw, c)
    for i in range(levels_h):
        for j in range(levels_w):
            a, c = 2 ** i, 2 ** j
            m = tf.nn.max_pool2d(features, (a, c), 1, "VALID") if (a, c) != (1, 1) else features
            table.append(tf.pad(m, [[0, 0], [0, a - 1], [0, c - 1], [0, 0]]))   # pad never read
    table = tf.stack(table)                                        # (levels_h * levels_w, b, fh, fw, c)

    def log2_floor(v):
        return tf.cast(tf.floor(tf.math.log(tf.cast(v, tf.float32)) / math.log(2.0) + 1e-4), tf.int32)

    ly, lx = log2_floor(sh), log2_floor(sw)                        # (n, H), (n, W)
    ys = (y, y + sh - tf.bitwise.left_shift(1, ly))                # two windows covering each bin's rows
    xs = (x, x + sw - tf.bitwise.left_shift(1, lx))
    shape = tf.stack([tf.shape(rois)[0], out_h, out_w])
    which = tf.broadcast_to(ly[:, :, None] * levels_w + lx[:, None, :], shape)   # (n, H, W)
    image = tf.broadcast_to(image_index[:, None, None], shape)
    corners = [tf.gather_nd(table, tf.stack([which, image, tf.broadcast_to(yy[:, :, None], shape),
                                             tf.broadcast_to(xx[:, None, :], shape)], axis=-1))
               for yy in ys for xx in xs]                          # 4 x (n, H, W, c)
    return tf.reduce_max(tf.stack(corners), axis=0)                # (n, H, W, c)


@keras.saving.register_keras_serializable(package="cnnctl")
class RoIPool(keras.layers.Layer):
    """[features (b, fh, fw, c), rois (b, r, 4)] -> (b, r, H, W, c): the same number of RoIs per image,
    as Fast R-CNN's minibatches (2 images x 64 RoIs) and the RPN's top-N proposals have. See
    ``roi_pool``; ``spatial_scale`` is 1 / the feature map's stride (1/16 for VGG16's conv5_3)."""

    def __init__(self, output_size=(7, 7), spatial_scale: float = 1.0 / 16, **kwargs):
        # no autocast: under mixed_bfloat16 the RoIs' pixel coordinates must stay float32 (bfloat16's
        # 8-bit mantissa rounds 100.5 to 100); the features keep the dtype the backbone gives them
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.output_size = tuple(int(v) for v in output_size)
        self.spatial_scale = float(spatial_scale)

    def call(self, inputs):
        import tensorflow as tf

        features, rois = inputs
        b, r = tf.shape(rois)[0], tf.shape(rois)[1]
        index = tf.repeat(tf.range(b), r)                                        # (b * r,)
        pooled = roi_pool(features, tf.reshape(rois, (-1, 4)), index, self.output_size, self.spatial_scale)
        return tf.reshape(pooled, tf.concat([[b, r], tf.shape(pooled)[1:]], 0))

    def compute_output_shape(self, input_shapes):
        features, rois = input_shapes
        return (rois[0], rois[1], *self.output_size, features[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size),
                "spatial_scale": self.spatial_scale}
