"""ResNet for CIFAR-10: ResNet-20/32/44/56/110.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR
2016, section 4.2: a 3x3 conv of 16 filters, then 3 stages of n basic blocks
on 32x32, 16x16 and 8x8 maps with 16, 32 and 64 filters (6n+2 weighted
layers), global average pooling and a 10-way dense layer. Shortcuts are
identity everywhere; where the shape changes, option A: stride-2 subsampling
and zero-padding of the extra channels (no parameters).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from cnnctl.layers import FusedBatchNormalization
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

CIFAR_MEAN = (125.3, 123.0, 113.9)
CIFAR_STD = (63.0, 62.1, 66.7)
# Table 6 of the paper: depth -> test error (%) on CIFAR-10.
DEPTHS = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}


@keras.saving.register_keras_serializable(package="cnnctl")
class ShortcutA(layers.Layer):
    """Option-A shortcut: ``x[:, ::2, ::2, :]`` zero-padded from C to ``filters`` channels."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def call(self, x):
        x = x[:, ::2, ::2, :]                                   # (b, h/2, w/2, c)
        pad = self.filters - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [pad // 2, pad - pad // 2]])

    def compute_output_shape(self, shape):
        h = None if shape[1] is None else (shape[1] + 1) // 2
        w = None if shape[2] is None else (shape[2] + 1) // 2
        return (shape[0], h, w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _conv_bn(x, filters, stride, name, relu=True):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", kernel_regularizer=None, name=f"{name}_conv")(x)
    x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, stride, name):
    shortcut = x
    y = _conv_bn(x, filters, stride, f"{name}_1")
    y = _conv_bn(y, filters, 1, f"{name}_2", relu=False)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = ShortcutA(filters, name=f"{name}_shortcut")(x)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet_cifar(depth: int, num_classes: int = 10, input_shape=(32, 32, 3), widths=(16, 32, 64)):
    """CIFAR ResNet of ``depth`` = 6n + 2 layers."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    channels = input_shape[-1]
    mean = CIFAR_MEAN if channels == 3 else [sum(CIFAR_MEAN) / 3] * channels
    std = CIFAR_STD if channels == 3 else [sum(CIFAR_STD) / 3] * channels
    inputs, x = pixel_input(input_shape, mean, std)
    x = _conv_bn(x, widths[0], 1, "stem")                      # (32, 32, 16)
    for stage, filters in enumerate(widths):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1      # 32 -> 16 -> 8
            x = _basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)           # (64,)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def _register_depth(depth: int) -> None:
    def builder(num_classes: int = 10, input_shape=(32, 32, 3), widths=(16, 32, 64)):
        return resnet_cifar(depth, num_classes, input_shape, widths)

    builder.__doc__ = f"ResNet-{depth} for CIFAR (6n+2 with n={(depth - 2) // 6}; paper Table 6)."
    register(f"resnet{depth}", task="classify", input_shape=(32, 32, 3), num_classes=10,
             paper="He et al., Deep Residual Learning for Image Recognition (CVPR 2016), sec. 4.2, Table 6",
             reported_error=f"{DEPTHS[depth]}% on CIFAR-10")(builder)


for _depth in DEPTHS:
    _register_depth(_depth)
