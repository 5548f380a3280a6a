"""LeNet-5.

LeCun, Bottou, Bengio, Haffner. "Gradient-Based Learning Applied to Document
Recognition." Proc. IEEE 1998, section II.B and Fig. 2: 32x32 input,
C1 6@5x5 -> S2 2x2 -> C3 16@5x5 -> S4 2x2 -> C5 120@5x5 -> F6 84 -> output.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register


@register("lenet5", task="classify", input_shape=(32, 32, 1), num_classes=10,
          paper="LeCun et al., Gradient-Based Learning Applied to Document Recognition (Proc. IEEE 1998), Fig. 2",
          reported_error="0.95% on MNIST (Table/Fig. 9, LeNet-5 without distortions)")
def lenet5(num_classes: int = 10, input_shape=(32, 32, 1), activation: str = "tanh", pooling: str = "avg"):
    """LeNet-5 with average-pooling subsampling and tanh units (the paper's scaled tanh is plain tanh here).

    ``activation="relu", pooling="max"`` gives the common modern reading
    (same layers and parameter count, ReLU units, max-pooling subsampling).

    The C3 partial connection table (Table I) is replaced by full connections
    and the RBF output by a dense softmax layer, as in every modern reading;
    the parameter count is therefore 61,706 rather than the paper's 60,000.
    """
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    pool = layers.AveragePooling2D if pooling == "avg" else layers.MaxPooling2D
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = layers.Conv2D(6, 5, activation=activation, name="c1")(x)          # (28, 28, 6)
    x = pool(2, name="s2")(x)                           # (14, 14, 6)
    x = layers.Conv2D(16, 5, activation=activation, name="c3")(x)         # (10, 10, 16)
    x = pool(2, name="s4")(x)                           # (5, 5, 16)
    x = layers.Conv2D(120, 5, activation=activation, name="c5")(x)        # (1, 1, 120)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(84, activation=activation, name="f6")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5")
