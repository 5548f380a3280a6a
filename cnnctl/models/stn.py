"""Spatial Transformer networks and their baselines (Jaderberg et al. 2015, sec. 4.1, Table 1).

- ``cnn_baseline``: two convolutions (9x9, then 7x7) with ReLU and 2x2 max-pooling after each,
  then the softmax classifier.
- ``st_cnn``: the same CNN (32 filters) behind a spatial transformer at the input whose
  localisation network is convolutional (two 20-filter 5x5 convolutions with max-pooling, a
  32-unit layer).
- ``fcn_baseline``: two hidden fully connected ReLU layers, then the classifier.
- ``st_fcn``: the same FCN (128 units) behind a transformer with a fully connected localisation
  network (two 32-unit layers).

"All networks have roughly the same number of parameters" (sec. 4.1): by default the baselines'
width is chosen so that their parameter count is the closest to their ST version's at the same
input size (``width`` overrides it). The transform defaults to affine; ``transform`` selects the
constrained ones (similarity, translation_scale) or projective, and ``output_size`` the sampling
grid (the paper samples 60x60 cluttered inputs down to 30x30 with ``translation_scale``).
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import SpatialTransformer
from cnnctl.models.registry import register

PAPER = "Jaderberg et al., Spatial Transformer Networks (NIPS 2015), sec. 4.1"
MEAN, STD = 72.94, 90.02  # Fashion-MNIST pixel statistics (the distorted sets keep the objects' pixels)


def _pixels(input_shape):
    """Raw [0, 255] pixels -> [0, 1]: the transformer samples here, so what it reads outside the
    image (zero) is the black background of the data, not the mean grey of normalised pixels."""
    inputs = keras.Input(tuple(input_shape), name="pixels")
    return inputs, layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)


def _normalise(x, channels: int):
    return layers.Normalization(mean=[MEAN / 255.0] * channels, variance=[(STD / 255.0) ** 2] * channels,
                                name="normalize")(x)


def _cnn_body(x, width: int, num_classes: int):
    x = layers.Conv2D(width, 9, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(width, 7, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(num_classes, dtype="float32", name="logits")(x)


def _fcn_body(x, width: int, num_classes: int):
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(width, activation="relu", name="fc1")(x)
    x = layers.Dense(width, activation="relu", name="fc2")(x)
    return layers.Dense(num_classes, dtype="float32", name="logits")(x)


def _cnn_params(width: int, size: tuple[int, int], channels: int, num_classes: int) -> int:
    h, w = ((size[0] - 8) // 2 - 6) // 2, ((size[1] - 8) // 2 - 6) // 2
    return (81 * channels * width + width) + (49 * width * width + width) + (h * w * width * num_classes + num_classes)


def _fcn_params(width: int, size: tuple[int, int], channels: int, num_classes: int) -> int:
    d = size[0] * size[1] * channels
    return d * width + width + width * width + width + width * num_classes + num_classes


def _matched_width(count_fn, target: int, size, channels, num_classes) -> int:
    return min(range(4, 513), key=lambda w: abs(count_fn(w, size, channels, num_classes) - target))


def _st_params(model) -> int:
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@register("st_cnn", task="classify", input_shape=(42, 42, 1), num_classes=10, test_input=(42, 42, 1), paper=PAPER,
          reported_error="0.5% on RTS-distorted MNIST (Table 1, ST-CNN affine; CNN 0.8%)")
def st_cnn(num_classes: int = 10, input_shape=(42, 42, 1), transform: str = "affine", output_size=None,
           width: int = 32):
    """A spatial transformer (convolutional localisation) in front of the two-convolution CNN."""
    inputs, x = _pixels(input_shape)
    x = SpatialTransformer("conv", transform=transform, output_size=output_size, name="st")(x)
    return keras.Model(inputs, _cnn_body(_normalise(x, input_shape[-1]), width, num_classes), name="st_cnn")


@register("cnn_baseline", task="classify", input_shape=(42, 42, 1), num_classes=10, test_input=(42, 42, 1),
          paper=PAPER, reported_error="0.8% on RTS-distorted MNIST (Table 1, CNN)")
def cnn_baseline(num_classes: int = 10, input_shape=(42, 42, 1), width: int = 0):
    """The CNN of ``st_cnn`` without the transformer; ``width`` 0 = as many parameters as ``st_cnn``."""
    if not width:
        target = _st_params(st_cnn(num_classes, input_shape))
        width = _matched_width(_cnn_params, target, input_shape[:2], input_shape[2], num_classes)
    inputs, x = _pixels(input_shape)
    return keras.Model(inputs, _cnn_body(_normalise(x, input_shape[-1]), width, num_classes), name="cnn_baseline")


@register("st_fcn", task="classify", input_shape=(42, 42, 1), num_classes=10, test_input=(28, 28, 1), paper=PAPER,
          reported_error="0.8% on RTS-distorted MNIST (Table 1, ST-FCN affine; FCN 5.2%)")
def st_fcn(num_classes: int = 10, input_shape=(42, 42, 1), transform: str = "affine", output_size=None,
           width: int = 128):
    """A spatial transformer (fully connected localisation) in front of the two-hidden-layer FCN."""
    inputs, x = _pixels(input_shape)
    x = SpatialTransformer("dense", transform=transform, output_size=output_size, name="st")(x)
    return keras.Model(inputs, _fcn_body(_normalise(x, input_shape[-1]), width, num_classes), name="st_fcn")


@register("fcn_baseline", task="classify", input_shape=(42, 42, 1), num_classes=10, test_input=(28, 28, 1),
          paper=PAPER, reported_error="5.2% on RTS-distorted MNIST (Table 1, FCN; 2.1% on R)")
def fcn_baseline(num_classes: int = 10, input_shape=(42, 42, 1), width: int = 0):
    """The FCN of ``st_fcn`` without the transformer; ``width`` 0 = as many parameters as ``st_fcn``."""
    if not width:
        target = _st_params(st_fcn(num_classes, input_shape))
        width = _matched_width(_fcn_params, target, input_shape[:2], input_shape[2], num_classes)
    inputs, x = _pixels(input_shape)
    return keras.Model(inputs, _fcn_body(_normalise(x, input_shape[-1]), width, num_classes), name="fcn_baseline")
