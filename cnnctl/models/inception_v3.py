"""Inception-v3.

Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. "Rethinking the Inception
Architecture for Computer Vision." CVPR 2016. Table 1 and Figures 5-7, 10:
a 299x299 stem of 3x3 convolutions; three 35x35 modules with 5x5
factorised into two 3x3 (Fig. 5); efficient grid reduction, convolution and
pooling branches in parallel, concatenated (Fig. 10); four 17x17 modules with
n x n factorised into 1 x 7 and 7 x 1 (Fig. 6); reduction; two 8x8 modules with
expanded 1x3 / 3x1 filter banks (Fig. 7); global average pooling and a
linear layer. Batch normalisation after every convolution (no conv biases;
no BN scale, as in the reference TensorFlow implementation). The auxiliary
classifier on the last 17x17 layer (section 4, Fig. 8) has batch-normalised
convolutions; its loss weight is 0.4 (the reference TF-slim value; the paper
gives none). Label smoothing 0.1 (section 7) is in the recipe.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import FusedBatchNormalization
from cnnctl.models.auxiliary import AuxiliaryClassifiers
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register


def conv_bn(x, filters, kernel, name, stride=1, padding="same"):
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(scale=False, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _concat(branches, name):
    return layers.Concatenate(name=name)(branches)


def block_35(x, pool_features, name):
    """Figure 5: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (the reference keeps one 5x5 branch)."""
    b1 = conv_bn(x, 64, 1, f"{name}_b1")
    b5 = conv_bn(conv_bn(x, 48, 1, f"{name}_b5a"), 64, 5, f"{name}_b5b")
    b3 = conv_bn(conv_bn(conv_bn(x, 64, 1, f"{name}_b3a"), 96, 3, f"{name}_b3b"), 96, 3, f"{name}_b3c")
    bp = conv_bn(layers.AveragePooling2D(3, 1, padding="same", name=f"{name}_pool")(x), pool_features, 1,
                 f"{name}_bp")
    return _concat([b1, b5, b3, bp], name)                                   # (35, 35, 224 + pool)


def reduction_35_to_17(x, name):
    """Figure 10: stride-2 convolutions and max pooling in parallel."""
    b3 = conv_bn(x, 384, 3, f"{name}_b3", stride=2, padding="valid")
    bd = conv_bn(conv_bn(conv_bn(x, 64, 1, f"{name}_bda"), 96, 3, f"{name}_bdb"), 96, 3, f"{name}_bdc",
                 stride=2, padding="valid")
    bp = layers.MaxPooling2D(3, 2, name=f"{name}_pool")(x)
    return _concat([b3, bd, bp], name)                                       # (17, 17, 768)


def block_17(x, c7, name):
    """Figure 6: 7x7 factorised into 1x7 and 7x1."""
    b1 = conv_bn(x, 192, 1, f"{name}_b1")
    b7 = conv_bn(conv_bn(conv_bn(x, c7, 1, f"{name}_b7a"), c7, (1, 7), f"{name}_b7b"), 192, (7, 1), f"{name}_b7c")
    bd = conv_bn(x, c7, 1, f"{name}_bda")
    for i, k in enumerate([(7, 1), (1, 7), (7, 1)]):
        bd = conv_bn(bd, c7, k, f"{name}_bd{i + 1}")
    bd = conv_bn(bd, 192, (1, 7), f"{name}_bd4")
    bp = conv_bn(layers.AveragePooling2D(3, 1, padding="same", name=f"{name}_pool")(x), 192, 1, f"{name}_bp")
    return _concat([b1, b7, bd, bp], name)                                   # (17, 17, 768)


def reduction_17_to_8(x, name):
    b3 = conv_bn(conv_bn(x, 192, 1, f"{name}_b3a"), 320, 3, f"{name}_b3b", stride=2, padding="valid")
    b7 = conv_bn(x, 192, 1, f"{name}_b7a")
    b7 = conv_bn(conv_bn(b7, 192, (1, 7), f"{name}_b7b"), 192, (7, 1), f"{name}_b7c")
    b7 = conv_bn(b7, 192, 3, f"{name}_b7d", stride=2, padding="valid")
    bp = layers.MaxPooling2D(3, 2, name=f"{name}_pool")(x)
    return _concat([b3, b7, bp], name)                                       # (8, 8, 1280)


def block_8(x, name):
    """Figure 7: expanded filter bank outputs (1x3 and 3x1 side by side)."""
    b1 = conv_bn(x, 320, 1, f"{name}_b1")
    b3 = conv_bn(x, 384, 1, f"{name}_b3a")
    b3 = _concat([conv_bn(b3, 384, (1, 3), f"{name}_b3b"), conv_bn(b3, 384, (3, 1), f"{name}_b3c")], f"{name}_b3")
    bd = conv_bn(conv_bn(x, 448, 1, f"{name}_bda"), 384, 3, f"{name}_bdb")
    bd = _concat([conv_bn(bd, 384, (1, 3), f"{name}_bdc"), conv_bn(bd, 384, (3, 1), f"{name}_bdd")], f"{name}_bd")
    bp = conv_bn(layers.AveragePooling2D(3, 1, padding="same", name=f"{name}_pool")(x), 192, 1, f"{name}_bp")
    return _concat([b1, b3, bd, bp], name)                                   # (8, 8, 2048)


def auxiliary_head(x, num_classes, name="aux"):
    x = layers.AveragePooling2D(5, 3, name=f"{name}_pool")(x)               # (17, 17, 768) -> (5, 5, 768)
    x = conv_bn(x, 128, 1, f"{name}_1x1")
    x = conv_bn(x, 768, int(x.shape[1]), f"{name}_conv", padding="valid")  # 5x5 at 299: -> (1, 1, 768)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    return layers.Dense(num_classes, dtype="float32", name=f"{name}_logits")(x)


@register("inception_v3", task="classify", input_shape=(299, 299, 3), num_classes=1000, test_input=(139, 139, 3),
          paper="Szegedy et al., Rethinking the Inception Architecture (CVPR 2016), Table 1, Figs. 5-8, 10",
          reported_error="21.2% top-1 / 5.6% top-5 single crop, ILSVRC-2012 val (Table 3)")
def inception_v3(num_classes: int = 1000, input_shape=(299, 299, 3), aux: bool = True, aux_weight: float = 0.4,
                 dropout: float = 0.2):
    """Inception-v3; with ``aux`` the 17x17 auxiliary classifier trains with weight ``aux_weight``."""
    inputs, x = pixel_input(input_shape, 127.5, 127.5)                       # scaled to [-1, 1]
    x = conv_bn(x, 32, 3, "stem1", stride=2, padding="valid")                # (149, 149, 32)
    x = conv_bn(x, 32, 3, "stem2", padding="valid")                          # (147, 147, 32)
    x = conv_bn(x, 64, 3, "stem3")                                           # (147, 147, 64)
    x = layers.MaxPooling2D(3, 2, name="stem_pool1")(x)                      # (73, 73, 64)
    x = conv_bn(x, 80, 1, "stem4", padding="valid")
    x = conv_bn(x, 192, 3, "stem5", padding="valid")                         # (71, 71, 192)
    x = layers.MaxPooling2D(3, 2, name="stem_pool2")(x)                      # (35, 35, 192)
    for i, pool_features in enumerate((32, 64, 64)):
        x = block_35(x, pool_features, f"mixed{i}")
    x = reduction_35_to_17(x, "mixed3")
    for i, c7 in enumerate((128, 160, 160, 192)):
        x = block_17(x, c7, f"mixed{i + 4}")
    aux_logits = auxiliary_head(x, num_classes) if aux else None
    x = reduction_17_to_8(x, "mixed8")
    x = block_8(x, "mixed9")
    x = block_8(x, "mixed10")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    main = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    if not aux:
        return keras.Model(inputs, main, name="inception_v3")
    network = keras.Model(inputs, [main, aux_logits], name="inception_v3_with_aux")
    return AuxiliaryClassifiers(network, aux_weight=aux_weight, name="inception_v3")
