"""DeepFace.

Taigman, Yang, Ranzato, Wolf. "DeepFace: Closing the Gap to Human-Level
Performance in Face Verification." CVPR 2014, section 3 and Figure 2: on a
152x152x3 frontalised face, C1 32@11x11 -> M2 3x3/2 max pooling -> C3 16@9x9
-> locally connected L4 16@9x9, L5 16@7x7 stride 2, L6 16@5x5 (no weight
sharing) -> F7 4096 (dropout) -> F8 softmax over the identities (4,030 in
the paper). ReLU after every layer but F8; more than 120 M parameters,
almost all in the locally connected and fully connected layers.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import LocallyConnected2D
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register


@register("deepface", task="classify", input_shape=(152, 152, 3), num_classes=4030, test_input=(76, 76, 3),
          paper="Taigman et al., DeepFace (CVPR 2014), sec. 3, Fig. 2",
          reported_error="97.35% verification accuracy on LFW (ensemble, Table 3); SFC identification 8.74% error")
def deepface(num_classes: int = 4030, input_shape=(152, 152, 3), dropout: float = 0.5):
    """DeepFace: C1-M2-C3 convolutions, L4-L6 locally connected, F7, F8."""
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = layers.Conv2D(32, 11, activation="relu", name="C1")(x)                 # (142, 142, 32)
    x = layers.MaxPooling2D(3, 2, name="M2")(x)                                 # (71, 71, 32)
    x = layers.Conv2D(16, 9, activation="relu", name="C3")(x)                  # (63, 63, 16)
    x = LocallyConnected2D(16, 9, activation="relu", name="L4")(x)             # (55, 55, 16)
    x = LocallyConnected2D(16, 7, strides=2, activation="relu", name="L5")(x)  # (25, 25, 16)
    x = LocallyConnected2D(16, 5, activation="relu", name="L6")(x)             # (21, 21, 16)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="F7")(x)
    x = layers.Dropout(dropout, name="F7_drop")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="F8")(x)
    return keras.Model(inputs, outputs, name="deepface")
