"""Building blocks shared by several families."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


def pixel_input(input_shape: Sequence[int], mean: Sequence[float] | float, std: Sequence[float] | float,
                name: str = "pixels"):
    """``(h, w, c)`` raw pixels in [0, 255] -> (input tensor, normalised tensor ``(x - mean) / std``)."""
    inputs = keras.Input(shape=tuple(input_shape), name=name)
    channels = input_shape[-1]
    mean = [mean] * channels if isinstance(mean, (int, float)) else list(mean)
    std = [std] * channels if isinstance(std, (int, float)) else list(std)
    if len(mean) != channels:  # RGB statistics for a grey (or other) input: their average per channel
        mean = [sum(mean) / len(mean)] * channels
        std = [sum(std) / len(std)] * channels
    # Normalization with fixed mean/variance: serialised in the .keras file, no adapt() needed.
    x = layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalize")(inputs)
    return inputs, x
