"""Inception-ResNet-v2.

Szegedy, Ioffe, Vanhoucke, Alemi. "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning." AAAI 2017. Figures 3, 15-19:
the Inception stem, 10 x Inception-ResNet-A (35x35), Reduction-A, 20 x
Inception-ResNet-B (17x17), Reduction-B, 10 x Inception-ResNet-C (8x8),
average pooling, dropout (keep 0.8) and a linear layer. Each residual
branch ends in a linear 1x1 convolution whose output is scaled before the
addition (section 3.3: "scaling down the residuals before adding them ...
scaling factors between 0.1 and 0.3"); ``scales`` sets them per block type
(0.17, 0.10, 0.20 in the reference implementation). Layer widths follow the
reference TensorFlow/Keras implementation, whose stem is Inception-v3's.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.models.common import pixel_input
from cnnctl.models.inception_v3 import conv_bn
from cnnctl.models.registry import register


@keras.saving.register_keras_serializable(package="cnnctl")
class ScaledResidual(keras.layers.Layer):
    """``x + scale * residual`` (a serializable layer instead of a Lambda)."""

    def __init__(self, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        x, residual = inputs
        return x + self.scale * residual

    def compute_output_shape(self, shapes):
        return shapes[0]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _residual(x, branches, scale, name, activation=True):
    mixed = layers.Concatenate(name=f"{name}_mixed")(branches)
    up = layers.Conv2D(x.shape[-1], 1, use_bias=True, name=f"{name}_up")(mixed)  # linear 1x1, back to x's width
    x = ScaledResidual(scale, name=f"{name}_add")([x, up])
    return layers.ReLU(name=f"{name}_relu")(x) if activation else x


def block_a(x, scale, name):  # Fig. 16, 35x35x320
    b0 = conv_bn(x, 32, 1, f"{name}_b0")
    b1 = conv_bn(conv_bn(x, 32, 1, f"{name}_b1a"), 32, 3, f"{name}_b1b")
    b2 = conv_bn(conv_bn(conv_bn(x, 32, 1, f"{name}_b2a"), 48, 3, f"{name}_b2b"), 64, 3, f"{name}_b2c")
    return _residual(x, [b0, b1, b2], scale, name)


def block_b(x, scale, name):  # Fig. 17, 17x17x1088
    b0 = conv_bn(x, 192, 1, f"{name}_b0")
    b1 = conv_bn(conv_bn(conv_bn(x, 128, 1, f"{name}_b1a"), 160, (1, 7), f"{name}_b1b"), 192, (7, 1), f"{name}_b1c")
    return _residual(x, [b0, b1], scale, name)


def block_c(x, scale, name, activation=True):  # Fig. 19, 8x8x2080
    b0 = conv_bn(x, 192, 1, f"{name}_b0")
    b1 = conv_bn(conv_bn(conv_bn(x, 192, 1, f"{name}_b1a"), 224, (1, 3), f"{name}_b1b"), 256, (3, 1), f"{name}_b1c")
    return _residual(x, [b0, b1], scale, name, activation)


@register("inception_resnet_v2", task="classify", input_shape=(299, 299, 3), num_classes=1000,
          test_input=(75, 75, 3),
          paper="Szegedy et al., Inception-v4, Inception-ResNet (AAAI 2017), Figs. 3, 15-19",
          reported_error="19.9% top-1 / 4.9% top-5 single crop, ILSVRC-2012 val (Table 2)")
def inception_resnet_v2(num_classes: int = 1000, input_shape=(299, 299, 3), scales=(0.17, 0.1, 0.2),
                        dropout: float = 0.2):
    """Inception-ResNet-v2 with residual scaling ``scales`` = (A, B, C)."""
    sa, sb, sc = (float(s) for s in scales)
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = conv_bn(x, 32, 3, "stem1", stride=2, padding="valid")                # (149, 149, 32)
    x = conv_bn(x, 32, 3, "stem2", padding="valid")
    x = conv_bn(x, 64, 3, "stem3")
    x = layers.MaxPooling2D(3, 2, name="stem_pool1")(x)                      # (73, 73, 64)
    x = conv_bn(x, 80, 1, "stem4", padding="valid")
    x = conv_bn(x, 192, 3, "stem5", padding="valid")
    x = layers.MaxPooling2D(3, 2, name="stem_pool2")(x)                      # (35, 35, 192)
    b0 = conv_bn(x, 96, 1, "mixed5b_b0")
    b1 = conv_bn(conv_bn(x, 48, 1, "mixed5b_b1a"), 64, 5, "mixed5b_b1b")
    b2 = conv_bn(conv_bn(conv_bn(x, 64, 1, "mixed5b_b2a"), 96, 3, "mixed5b_b2b"), 96, 3, "mixed5b_b2c")
    bp = conv_bn(layers.AveragePooling2D(3, 1, padding="same", name="mixed5b_pool")(x), 64, 1, "mixed5b_bp")
    x = layers.Concatenate(name="mixed5b")([b0, b1, b2, bp])                # (35, 35, 320)
    for i in range(10):
        x = block_a(x, sa, f"block35_{i + 1}")
    # Reduction-A (Fig. 7 with k, l, m, n = 256, 256, 384, 384)
    b0 = conv_bn(x, 384, 3, "mixed6a_b0", stride=2, padding="valid")
    b1 = conv_bn(conv_bn(conv_bn(x, 256, 1, "mixed6a_b1a"), 256, 3, "mixed6a_b1b"), 384, 3, "mixed6a_b1c",
                 stride=2, padding="valid")
    bp = layers.MaxPooling2D(3, 2, name="mixed6a_pool")(x)
    x = layers.Concatenate(name="mixed6a")([b0, b1, bp])                     # (17, 17, 1088)
    for i in range(20):
        x = block_b(x, sb, f"block17_{i + 1}")
    # Reduction-B (Fig. 18)
    b0 = conv_bn(conv_bn(x, 256, 1, "mixed7a_b0a"), 384, 3, "mixed7a_b0b", stride=2, padding="valid")
    b1 = conv_bn(conv_bn(x, 256, 1, "mixed7a_b1a"), 288, 3, "mixed7a_b1b", stride=2, padding="valid")
    b2 = conv_bn(conv_bn(conv_bn(x, 256, 1, "mixed7a_b2a"), 288, 3, "mixed7a_b2b"), 320, 3, "mixed7a_b2c",
                 stride=2, padding="valid")
    bp = layers.MaxPooling2D(3, 2, name="mixed7a_pool")(x)
    x = layers.Concatenate(name="mixed7a")([b0, b1, b2, bp])                 # (8, 8, 2080)
    for i in range(9):
        x = block_c(x, sc, f"block8_{i + 1}")
    x = block_c(x, 1.0, "block8_10", activation=False)
    x = conv_bn(x, 1536, 1, "conv7b")                                        # (8, 8, 1536)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="inception_resnet_v2")


@register("inception_resnet_v1", task="classify", input_shape=(299, 299, 3), num_classes=1000,
          test_input=(75, 75, 3),
          paper="Szegedy et al., Inception-v4, Inception-ResNet (AAAI 2017), Figs. 10-15",
          reported_error="21.3% top-1 / 5.5% top-5 single crop, ILSVRC-2012 val (Table 2)")
def inception_resnet_v1(num_classes: int = 1000, input_shape=(299, 299, 3), scales=(0.17, 0.1, 0.2),
                        dropout: float = 0.2):
    """Inception-ResNet-v1 (the cost of Inception-v3): stem of Fig. 14, blocks of Figs. 10-13, Reduction-A
    with k, l, m, n = 192, 192, 256, 384."""
    sa, sb, sc = (float(s) for s in scales)
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = conv_bn(x, 32, 3, "stem1", stride=2, padding="valid")                # (149, 149, 32)
    x = conv_bn(x, 32, 3, "stem2", padding="valid")
    x = conv_bn(x, 64, 3, "stem3")
    x = layers.MaxPooling2D(3, 2, name="stem_pool")(x)                       # (73, 73, 64)
    x = conv_bn(x, 80, 1, "stem4")
    x = conv_bn(x, 192, 3, "stem5", padding="valid")                         # (71, 71, 192)
    x = conv_bn(x, 256, 3, "stem6", stride=2, padding="valid")               # (35, 35, 256)
    for i in range(5):  # Fig. 10 (the paper's Fig. 15 schema: 5 x A, 10 x B, 5 x C)
        name = f"block35_{i + 1}"
        b0 = conv_bn(x, 32, 1, f"{name}_b0")
        b1 = conv_bn(conv_bn(x, 32, 1, f"{name}_b1a"), 32, 3, f"{name}_b1b")
        b2 = conv_bn(conv_bn(conv_bn(x, 32, 1, f"{name}_b2a"), 32, 3, f"{name}_b2b"), 32, 3, f"{name}_b2c")
        x = _residual(x, [b0, b1, b2], sa, name)
    b0 = conv_bn(x, 384, 3, "mixed6a_b0", stride=2, padding="valid")        # Reduction-A (Fig. 7)
    b1 = conv_bn(conv_bn(conv_bn(x, 192, 1, "mixed6a_b1a"), 192, 3, "mixed6a_b1b"), 256, 3, "mixed6a_b1c",
                 stride=2, padding="valid")
    x = layers.Concatenate(name="mixed6a")([b0, b1, layers.MaxPooling2D(3, 2, name="mixed6a_pool")(x)])  # 896
    for i in range(10):  # Fig. 11
        name = f"block17_{i + 1}"
        b0 = conv_bn(x, 128, 1, f"{name}_b0")
        b1 = conv_bn(conv_bn(conv_bn(x, 128, 1, f"{name}_b1a"), 128, (1, 7), f"{name}_b1b"), 128, (7, 1),
                     f"{name}_b1c")
        x = _residual(x, [b0, b1], sb, name)
    b0 = conv_bn(conv_bn(x, 256, 1, "mixed7a_b0a"), 384, 3, "mixed7a_b0b", stride=2, padding="valid")  # Fig. 12
    b1 = conv_bn(conv_bn(x, 256, 1, "mixed7a_b1a"), 256, 3, "mixed7a_b1b", stride=2, padding="valid")
    b2 = conv_bn(conv_bn(conv_bn(x, 256, 1, "mixed7a_b2a"), 256, 3, "mixed7a_b2b"), 256, 3, "mixed7a_b2c",
                 stride=2, padding="valid")
    x = layers.Concatenate(name="mixed7a")([b0, b1, b2, layers.MaxPooling2D(3, 2, name="mixed7a_pool")(x)])
    for i in range(5):  # Fig. 13, 8x8x1792
        name = f"block8_{i + 1}"
        b0 = conv_bn(x, 192, 1, f"{name}_b0")
        b1 = conv_bn(conv_bn(conv_bn(x, 192, 1, f"{name}_b1a"), 192, (1, 3), f"{name}_b1b"), 192, (3, 1),
                     f"{name}_b1c")
        x = _residual(x, [b0, b1], sc, name)
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="inception_resnet_v1")
