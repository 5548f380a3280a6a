"""BN-Inception (Inception v2).

Ioffe & Szegedy. "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift." ICML 2015, section 4.2.1 and Figure 5:
GoogLeNet with batch normalisation after every convolution, the 5x5
convolutions replaced by two consecutive 3x3 (the "double 3x3" branch), a
third 28x28 module, average or max pooling inside the modules as in the
table, and stride-2 modules (3c, 4e) that concatenate a stride-2 max-pooling
pass-through instead of using separate pooling layers.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import FusedBatchNormalization
from cnnctl.models.alexnet import IMAGENET_MEAN, IMAGENET_STD
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

# Figure 5: #1x1, #3x3 reduce, #3x3, #double 3x3 reduce, #double 3x3, pool type, pool projection, stride.
MODULES = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1), "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1), "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", 128, 1), "4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1), "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


def conv_bn(x, filters, kernel, name, stride=1):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def bn_inception_module(x, spec, name):
    b1, r3, b3, rd, bd, pool, proj, stride = spec
    branches = []
    if b1:
        branches.append(conv_bn(x, b1, 1, f"{name}_1x1"))
    branches.append(conv_bn(conv_bn(x, r3, 1, f"{name}_3x3_reduce"), b3, 3, f"{name}_3x3", stride))
    d = conv_bn(conv_bn(x, rd, 1, f"{name}_d3x3_reduce"), bd, 3, f"{name}_d3x3a")
    branches.append(conv_bn(d, bd, 3, f"{name}_d3x3b", stride))
    pool_layer = layers.AveragePooling2D if pool == "avg" else layers.MaxPooling2D
    p = pool_layer(3, stride, padding="same", name=f"{name}_pool")(x)
    branches.append(conv_bn(p, proj, 1, f"{name}_pool_proj") if proj else p)  # stride 2: pass-through
    return layers.Concatenate(name=f"{name}_concat")(branches)


@register("bn_inception", task="classify", input_shape=(224, 224, 3), num_classes=1000, test_input=(64, 64, 3),
          paper="Ioffe & Szegedy, Batch Normalization (ICML 2015), sec. 4.2.1, Fig. 5",
          reported_error="25.2% top-1 single network (BN-x30, sec. 4.2.2); 4.9% top-5 ensemble (Table 2)")
def bn_inception(num_classes: int = 1000, input_shape=(224, 224, 3), dropout: float = 0.0):
    """BN-Inception: GoogLeNet with batch norm and double-3x3 branches."""
    inputs, x = pixel_input(input_shape, IMAGENET_MEAN, IMAGENET_STD)
    x = conv_bn(x, 64, 7, "conv1", stride=2)                              # (112, 112, 64)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)       # (56, 56, 64)
    x = conv_bn(x, 64, 1, "conv2_reduce")
    x = conv_bn(x, 192, 3, "conv2")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)       # (28, 28, 192)
    for name, spec in MODULES.items():
        x = bn_inception_module(x, spec, f"inception_{name}")          # 3c: 28 -> 14, 4e: 14 -> 7
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)                # (1024,)
    x = layers.Dropout(dropout, name="drop")(x)  # the paper removes dropout (sec. 4.2.1)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="bn_inception")
