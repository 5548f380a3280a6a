"""VGG-11/13/16/19 (configurations A, B, D, E).

Simonyan & Zisserman. "Very Deep Convolutional Networks for Large-Scale Image
Recognition." ICLR 2015. Table 1: stacks of 3x3 convolutions (stride 1,
padding 1) with 2x2 stride-2 max pooling, then FC-4096, FC-4096, FC-1000;
dropout 0.5 on the first two FC layers (section 3.1). ``batch_norm=True``
adds batch normalisation after each convolution (a later variant, not in
the paper).
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import FusedBatchNormalization
from cnnctl.models.alexnet import IMAGENET_MEAN, IMAGENET_STD
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

# Table 1 of the paper: filters per conv layer, "M" = max pooling.
CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],                          # A
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],                 # B
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # D
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],                                                                  # E
}
# Table 3 (single test scale): top-1 / top-5 validation error.
REPORTED = {11: "29.6% / 10.4%", 13: "28.7% / 9.9%", 16: "27.0% / 8.8%", 19: "27.3% / 9.0%"}


def vgg(depth: int, num_classes: int = 1000, input_shape=(224, 224, 3), batch_norm: bool = False,
        dropout: float = 0.5, hidden: int = 4096):
    inputs, x = pixel_input(input_shape, IMAGENET_MEAN, IMAGENET_STD)
    block, conv = 1, 1
    for item in CONFIGS[depth]:
        if item == "M":
            x = layers.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)  # halves h and w
            block, conv = block + 1, 1
            continue
        name = f"block{block}_conv{conv}"
        x = layers.Conv2D(item, 3, padding="same", use_bias=not batch_norm, name=name,
                          kernel_initializer="glorot_uniform")(x)
        if batch_norm:
            x = FusedBatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        conv += 1
    x = layers.Flatten(name="flatten")(x)                                 # 7 x 7 x 512 at 224
    for i in (1, 2):
        x = layers.Dense(hidden, activation="relu", name=f"fc{i}")(x)
        x = layers.Dropout(dropout, name=f"fc{i}_drop")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=f"vgg{depth}{'_bn' if batch_norm else ''}")


def _register(depth: int, letter: str) -> None:
    def builder(num_classes: int = 1000, input_shape=(224, 224, 3), batch_norm: bool = False,
                dropout: float = 0.5, hidden: int = 4096):
        return vgg(depth, num_classes, input_shape, batch_norm, dropout, hidden)

    builder.__doc__ = f"VGG-{depth}, configuration {letter} of Table 1."
    register(f"vgg{depth}", task="classify", input_shape=(224, 224, 3), num_classes=1000, test_input=(32, 32, 3),
             paper=f"Simonyan & Zisserman, Very Deep Convolutional Networks (ICLR 2015), Table 1 config {letter}",
             reported_error=f"{REPORTED[depth]} top-1/top-5 ILSVRC-2012 val, single scale (Table 3)")(builder)


for _d, _l in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
    _register(_d, _l)
