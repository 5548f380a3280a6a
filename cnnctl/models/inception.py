"""GoogLeNet (Inception v1).

Szegedy et al. "Going Deeper with Convolutions." CVPR 2015. Table 1 and
Figure 3: a 7x7/2 convolution, 3x3/2 max pooling, local response
normalisation, a 1x1 reduction and 3x3 convolution of 192, nine Inception
modules (3a-5b), each concatenating a 1x1 branch, a 1x1 -> 3x3 branch, a
1x1 -> 5x5 branch and a 3x3 max pooling -> 1x1 projection branch, 7x7
average pooling, 40% dropout and a linear layer. Two auxiliary classifiers
on 4a and 4d (section 5): 5x5/3 average pooling, a 1x1 convolution of 128,
a 1024-unit fully connected layer, 70% dropout, a linear layer; their loss
weight is 0.3 and they are used only in training.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import LocalResponseNormalization
from cnnctl.models.alexnet import IMAGENET_MEAN, IMAGENET_STD
from cnnctl.models.auxiliary import AuxiliaryClassifiers
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _conv(x, filters, kernel, name, stride=1):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu", name=name,
                         kernel_initializer="glorot_uniform")(x)


def inception_module(x, spec, name):
    """Four parallel branches, concatenated on channels: (h, w, c) -> (h, w, b1 + b3 + b5 + proj)."""
    b1, r3, b3, r5, b5, proj = spec
    branch1 = _conv(x, b1, 1, f"{name}_1x1")
    branch3 = _conv(_conv(x, r3, 1, f"{name}_3x3_reduce"), b3, 3, f"{name}_3x3")
    branch5 = _conv(_conv(x, r5, 1, f"{name}_5x5_reduce"), b5, 5, f"{name}_5x5")
    pool = layers.MaxPooling2D(3, 1, padding="same", name=f"{name}_pool")(x)
    branch_pool = _conv(pool, proj, 1, f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([branch1, branch3, branch5, branch_pool])


def auxiliary_head(x, num_classes, name):
    x = layers.AveragePooling2D(5, 3, name=f"{name}_pool")(x)         # (14, 14, c) -> (4, 4, c)
    x = _conv(x, 128, 1, f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_drop")(x)
    return layers.Dense(num_classes, dtype="float32", name=f"{name}_logits")(x)


@register("googlenet", task="classify", input_shape=(224, 224, 3), num_classes=1000, test_input=(80, 80, 3),
          paper="Szegedy et al., Going Deeper with Convolutions (CVPR 2015), Table 1, sec. 5",
          reported_error="6.67% top-5 on ILSVRC-2014 test (7 models, 144 crops); 10.07% top-5 single model, 1 crop (Table 3)")
def googlenet(num_classes: int = 1000, input_shape=(224, 224, 3), aux: bool = True, aux_weight: float = 0.3,
              dropout: float = 0.4):
    """GoogLeNet; with ``aux`` the two auxiliary classifiers train with weight ``aux_weight``."""
    inputs, x = pixel_input(input_shape, IMAGENET_MEAN, IMAGENET_STD)
    x = _conv(x, 64, 7, "conv1_7x7", stride=2)                            # (112, 112, 64)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)       # (56, 56, 64)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = _conv(x, 64, 1, "conv2_3x3_reduce")
    x = _conv(x, 192, 3, "conv2_3x3")
    x = LocalResponseNormalization(name="lrn2")(x)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)       # (28, 28, 192)
    aux_outputs = []
    for name, spec in MODULES.items():
        if name in ("4a", "5a"):
            x = layers.MaxPooling2D(3, 2, padding="same", name=f"pool_before_{name}")(x)  # 28 -> 14 -> 7
        x = inception_module(x, spec, f"inception_{name}")
        if aux and name in ("4a", "4d"):
            aux_outputs.append(auxiliary_head(x, num_classes, f"aux_{name}"))
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)                # 7x7 average pooling at 224
    x = layers.Dropout(dropout, name="drop")(x)
    main = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    if not aux:
        return keras.Model(inputs, main, name="googlenet")
    network = keras.Model(inputs, [main] + aux_outputs, name="googlenet_with_aux")
    return AuxiliaryClassifiers(network, aux_weight=aux_weight, name="googlenet")
