"""ResNet-18/34/50/101/152 for ImageNet.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR
2016. Table 1: a 7x7 stride-2 convolution of 64 filters, 3x3 stride-2 max
pooling, four stages (64, 128, 256, 512 filters) of basic blocks (two 3x3
convolutions; ResNet-18/34) or bottleneck blocks (1x1, 3x3, 1x1 with 4x
expansion; ResNet-50/101/152), global average pooling and a 1000-way dense
layer. Batch normalisation after every convolution, which therefore has no
bias (section 3.4). Shortcuts: identity, and option B (1x1 projection + BN)
where the shape changes (section 3.3). The first block of stages 2-4
subsamples with stride 2; the paper puts the stride on the first 1x1 of a
bottleneck (``stride_in_1x1=True``); torchvision's "v1.5" puts it on the
3x3 (same parameter count). He initialisation (section 3.4, [13]).
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import FusedBatchNormalization
from cnnctl.models.alexnet import IMAGENET_MEAN, IMAGENET_STD
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

# Table 1: blocks per stage, and the block type.
STAGES = {18: ([2, 2, 2, 2], "basic"), 34: ([3, 4, 6, 3], "basic"), 50: ([3, 4, 6, 3], "bottleneck"),
          101: ([3, 4, 23, 3], "bottleneck"), 152: ([3, 8, 36, 3], "bottleneck")}
# Table 3 (10-crop testing): top-1 / top-5 ImageNet validation error; ResNet-18 from Table 2 (single crop).
REPORTED = {18: "27.88% top-1 (Table 2, 10-crop)", 34: "21.53% / 5.60% (Table 3, option B, 10-crop)",
            50: "20.74% / 5.25% (Table 3, 10-crop)", 101: "19.87% / 4.60% (Table 3, 10-crop)",
            152: "19.38% / 4.49% (Table 3, 10-crop)"}


def _conv_bn(x, filters, kernel, stride, name, relu=True, zero_gamma=False):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn",
                                gamma_initializer="zeros" if zero_gamma else "ones")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _shortcut(x, filters, stride, name):
    if stride == 1 and x.shape[-1] == filters:
        return x
    return _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)  # option B


def basic_block(x, filters, stride, name, stride_in_1x1=True):
    y = _conv_bn(x, filters, 3, stride, f"{name}_1")
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", relu=False)
    y = layers.Add(name=f"{name}_add")([y, _shortcut(x, filters, stride, name)])
    return layers.ReLU(name=f"{name}_out")(y)


def bottleneck_block(x, filters, stride, name, stride_in_1x1=True):
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    y = _conv_bn(x, filters, 1, s1, f"{name}_1")
    y = _conv_bn(y, filters, 3, s3, f"{name}_2")
    y = _conv_bn(y, 4 * filters, 1, 1, f"{name}_3", relu=False)
    y = layers.Add(name=f"{name}_add")([y, _shortcut(x, 4 * filters, stride, name)])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet(depth: int, num_classes: int = 1000, input_shape=(224, 224, 3), stride_in_1x1: bool = True):
    blocks, kind = STAGES[depth]
    block_fn = basic_block if kind == "basic" else bottleneck_block
    inputs, x = pixel_input(input_shape, IMAGENET_MEAN, IMAGENET_STD)
    x = _conv_bn(x, 64, 7, 2, "conv1")                                          # (112, 112, 64)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)             # (56, 56, 64)
    for stage, (n, filters) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1                          # 56 -> 28 -> 14 -> 7
            x = block_fn(x, filters, stride, f"conv{stage + 2}_{b + 1}", stride_in_1x1)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def _register(depth: int) -> None:
    def builder(num_classes: int = 1000, input_shape=(224, 224, 3), stride_in_1x1: bool = True):
        return resnet(depth, num_classes, input_shape, stride_in_1x1)

    builder.__doc__ = f"ResNet-{depth} for ImageNet ({STAGES[depth][1]} blocks {STAGES[depth][0]}, Table 1)."
    register(f"resnet{depth}", task="classify", input_shape=(224, 224, 3), num_classes=1000, test_input=(32, 32, 3),
             paper="He et al., Deep Residual Learning for Image Recognition (CVPR 2016), Table 1",
             reported_error=REPORTED[depth] + " on ILSVRC-2012 val")(builder)


for _d in STAGES:
    _register(_d)
