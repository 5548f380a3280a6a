"""Inception-v4.

Szegedy, Ioffe, Vanhoucke, Alemi. "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning." AAAI 2017. Figure 9 with its
parts: the stem (Fig. 3), 4 x Inception-A (Fig. 4, 35x35), Reduction-A
(Fig. 7, k, l, m, n = 192, 224, 256, 384), 7 x Inception-B (Fig. 5, 17x17),
Reduction-B (Fig. 8), 3 x Inception-C (Fig. 6, 8x8), average pooling,
dropout (keep 0.8), a linear layer. "V" convolutions of the figures are
valid-padded, the others same-padded; batch normalisation after each.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.models.common import pixel_input
from cnnctl.models.inception_v3 import conv_bn
from cnnctl.models.registry import register

V = "valid"


def _cat(xs, name):
    return layers.Concatenate(name=name)(xs)


def stem(x):
    x = conv_bn(x, 32, 3, "stem1", stride=2, padding=V)                            # (149, 149, 32)
    x = conv_bn(x, 32, 3, "stem2", padding=V)                                      # (147, 147, 32)
    x = conv_bn(x, 64, 3, "stem3")                                                 # (147, 147, 64)
    x = _cat([layers.MaxPooling2D(3, 2, name="stem4_pool")(x),
              conv_bn(x, 96, 3, "stem4_conv", stride=2, padding=V)], "stem4")      # (73, 73, 160)
    a = conv_bn(conv_bn(x, 64, 1, "stem5_a1"), 96, 3, "stem5_a2", padding=V)
    b = conv_bn(x, 64, 1, "stem5_b1")
    b = conv_bn(conv_bn(b, 64, (7, 1), "stem5_b2"), 64, (1, 7), "stem5_b3")
    b = conv_bn(b, 96, 3, "stem5_b4", padding=V)
    x = _cat([a, b], "stem5")                                                      # (71, 71, 192)
    return _cat([conv_bn(x, 192, 3, "stem6_conv", stride=2, padding=V),
                 layers.MaxPooling2D(3, 2, name="stem6_pool")(x)], "stem6")       # (35, 35, 384)


def inception_a(x, name):
    bp = conv_bn(layers.AveragePooling2D(3, 1, padding="same", name=f"{name}_pool")(x), 96, 1, f"{name}_bp")
    b1 = conv_bn(x, 96, 1, f"{name}_b1")
    b3 = conv_bn(conv_bn(x, 64, 1, f"{name}_b3a"), 96, 3, f"{name}_b3b")
    bd = conv_bn(conv_bn(conv_bn(x, 64, 1, f"{name}_bda"), 96, 3, f"{name}_bdb"), 96, 3, f"{name}_bdc")
    return _cat([bp, b1, b3, bd], name)                                            # (35, 35, 384)


def reduction_a(x, k=192, l=224, m=256, n=384, name="reduction_a"):
    bp = layers.MaxPooling2D(3, 2, name=f"{name}_pool")(x)
    b3 = conv_bn(x, n, 3, f"{name}_b3", stride=2, padding=V)
    bd = conv_bn(conv_bn(conv_bn(x, k, 1, f"{name}_bda"), l, 3, f"{name}_bdb"), m, 3, f"{name}_bdc",
                 stride=2, padding=V)
    return _cat([bp, b3, bd], name)                                                # (17, 17, 1024)


def inception_b(x, name):
    bp = conv_bn(layers.AveragePooling2D(3, 1, padding="same", name=f"{name}_pool")(x), 128, 1, f"{name}_bp")
    b1 = conv_bn(x, 384, 1, f"{name}_b1")
    b7 = conv_bn(conv_bn(conv_bn(x, 192, 1, f"{name}_b7a"), 224, (1, 7), f"{name}_b7b"), 256, (7, 1), f"{name}_b7c")
    bd = conv_bn(x, 192, 1, f"{name}_bda")
    for i, (f, k) in enumerate([(192, (1, 7)), (224, (7, 1)), (224, (1, 7)), (256, (7, 1))]):
        bd = conv_bn(bd, f, k, f"{name}_bd{i + 1}")
    return _cat([bp, b1, b7, bd], name)                                            # (17, 17, 1024)


def reduction_b(x, name="reduction_b"):
    bp = layers.MaxPooling2D(3, 2, name=f"{name}_pool")(x)
    b3 = conv_bn(conv_bn(x, 192, 1, f"{name}_b3a"), 192, 3, f"{name}_b3b", stride=2, padding=V)
    b7 = conv_bn(conv_bn(conv_bn(x, 256, 1, f"{name}_b7a"), 256, (1, 7), f"{name}_b7b"), 320, (7, 1), f"{name}_b7c")
    b7 = conv_bn(b7, 320, 3, f"{name}_b7d", stride=2, padding=V)
    return _cat([bp, b3, b7], name)                                                # (8, 8, 1536)


def inception_c(x, name):
    bp = conv_bn(layers.AveragePooling2D(3, 1, padding="same", name=f"{name}_pool")(x), 256, 1, f"{name}_bp")
    b1 = conv_bn(x, 256, 1, f"{name}_b1")
    b3 = conv_bn(x, 384, 1, f"{name}_b3a")
    b3 = _cat([conv_bn(b3, 256, (1, 3), f"{name}_b3b"), conv_bn(b3, 256, (3, 1), f"{name}_b3c")], f"{name}_b3")
    bd = conv_bn(conv_bn(conv_bn(x, 384, 1, f"{name}_bda"), 448, (1, 3), f"{name}_bdb"), 512, (3, 1), f"{name}_bdc")
    bd = _cat([conv_bn(bd, 256, (1, 3), f"{name}_bdd"), conv_bn(bd, 256, (3, 1), f"{name}_bde")], f"{name}_bd")
    return _cat([bp, b1, b3, bd], name)                                            # (8, 8, 1536)


@register("inception_v4", task="classify", input_shape=(299, 299, 3), num_classes=1000, test_input=(75, 75, 3),
          paper="Szegedy et al., Inception-v4, Inception-ResNet (AAAI 2017), Figs. 3-9",
          reported_error="20.0% top-1 / 5.0% top-5 single crop, ILSVRC-2012 val (Table 2)")
def inception_v4(num_classes: int = 1000, input_shape=(299, 299, 3), dropout: float = 0.2):
    """Inception-v4 (pure Inception, no residual connections)."""
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = stem(x)
    for i in range(4):
        x = inception_a(x, f"inception_a{i + 1}")
    x = reduction_a(x)
    for i in range(7):
        x = inception_b(x, f"inception_b{i + 1}")
    x = reduction_b(x)
    for i in range(3):
        x = inception_c(x, f"inception_c{i + 1}")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="inception_v4")
