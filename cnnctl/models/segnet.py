"""A small SegNet (Badrinarayanan, Kendall & Cipolla, TPAMI 2017): an encoder-decoder whose decoder
upsamples by **max-unpooling with the encoder's recorded pooling switches** (sec. 3: "the decoder
uses pooling indices computed in the max-pooling step of the corresponding encoder").

Encoder: ``depth`` levels of two 3x3 convolutions + BN + ReLU, then 2x2 max pooling that records
where each maximum came from; channels double from ``base_filters``. Decoder, mirrored: unpool with
that level's switches (a sparse map: each value back at its maximum's position, zeros elsewhere),
then two 3x3 convolutions + BN + ReLU that densify it; a 1x1 convolution to the classes. No skip
connections carry feature maps (unlike U-Net): only the switches cross, which is SegNet's point
(memory: indices instead of maps). Same padding: the label map has the input's size. The switch code
is ``cnnctl.layers.switches``, which ``cnnctl visualize deconvnet`` uses too.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import FusedBatchNormalization, MaxPoolWithSwitches, MaxUnpool
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register


def _conv_bn_relu(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    x = FusedBatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


@register("segnet_small", task="segment", input_shape=(128, 128, 1), num_classes=2,
          paper="Badrinarayanan, Kendall & Cipolla, SegNet (TPAMI 2017), sec. 3 (decoder: unpooling by indices)")
def segnet_small(num_classes: int = 2, input_shape=(128, 128, 1), base_filters: int = 16, depth: int = 4) -> keras.Model:
    """(b, H, W, c) pixels in [0, 255] -> (b, H, W, num_classes) logits; H, W divisible by 2 ** depth."""
    h, w = int(input_shape[0]), int(input_shape[1])
    if h % 2**depth or w % 2**depth:
        raise ValueError(f"segnet_small of depth {depth} needs sides divisible by {2**depth}, not {h}x{w}")
    inputs, x = pixel_input(tuple(input_shape), 0.0, 255.0, name="image")
    record = []
    for level in range(depth):
        filters = base_filters * 2**level
        x = _conv_bn_relu(x, filters, f"enc{level + 1}a")
        x = _conv_bn_relu(x, filters, f"enc{level + 1}b")
        before = x
        x, switches = MaxPoolWithSwitches(2, name=f"pool{level + 1}")(x)
        record.append((before, switches))
    for level in reversed(range(depth)):
        before, switches = record[level]
        x = MaxUnpool(name=f"unpool{level + 1}")([x, switches, before])
        filters = base_filters * 2**level
        x = _conv_bn_relu(x, filters, f"dec{level + 1}a")
        x = _conv_bn_relu(x, base_filters * 2 ** max(level - 1, 0), f"dec{level + 1}b")
    logits = layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name="segnet_small")
