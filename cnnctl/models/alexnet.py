"""AlexNet and ZFNet.

AlexNet: Krizhevsky, Sutskever, Hinton. "ImageNet Classification with Deep
Convolutional Neural Networks." NIPS 2012. Section 3 and Figure 2: five
convolutional and three fully connected layers, ReLU (3.1), two GPUs (3.2:
conv2, conv4 and conv5 see only the kernel maps of their own GPU), local
response normalisation after conv1 and conv2 (3.3), overlapping 3x3 stride-2
max pooling after both normalisations and after conv5 (3.4), dropout 0.5 in
the first two fully connected layers (4.2). Initialisation (5): weights
N(0, 0.01); biases 1 in conv2, conv4, conv5 and the fully connected hidden
layers, 0 elsewhere. The input is 227x227 (the paper's "224" does not give
its 55x55 first maps).

ZFNet: Zeiler & Fergus. "Visualizing and Understanding Convolutional
Networks." ECCV 2014, Figure 3 / section 5: AlexNet with a 7x7 stride-2 first
layer (instead of 11x11 stride 4) and a stride-2 second layer, on one GPU
(no tower split), contrast normalisation after the first two layers.
Section 3: weights initialised N(0, 0.01), biases 0, and "we renormalize each
filter in the convolutional layers whose RMS value exceeds a fixed radius of
1e-1 to this fixed radius" (``FilterRMSCap``, a kernel constraint applied
after every update).
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.errors import CnnctlError
from cnnctl.layers import LocalResponseNormalization
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

IMAGENET_MEAN = (123.68, 116.78, 103.94)
IMAGENET_STD = (58.40, 57.12, 57.38)


@keras.saving.register_keras_serializable(package="cnnctl")
class FilterRMSCap(keras.constraints.Constraint):
    """Rescale each filter (last kernel axis) whose RMS exceeds ``radius`` to RMS ``radius`` (ZFNet sec. 3)."""

    def __init__(self, radius: float = 0.1):
        self.radius = float(radius)

    def __call__(self, w):
        ops = keras.ops
        axes = tuple(range(len(w.shape) - 1))
        rms = ops.sqrt(ops.mean(ops.square(w), axis=axes, keepdims=True))   # (1, 1, 1, filters)
        return w * ops.minimum(1.0, self.radius / ops.maximum(rms, 1e-12))

    def get_config(self):
        return {"radius": self.radius}


def _kernel_init(kind: str):
    """``paper``: N(0, 0.01), the initialisation of both papers; otherwise a Keras initializer name."""
    if kind == "paper":
        return keras.initializers.RandomNormal(0.0, 0.01)
    try:
        return keras.initializers.get(kind)
    except ValueError:
        raise CnnctlError(f"model.kernel_init = {kind!r} is not an initializer",
                          hint="paper (N(0, 0.01)) or a Keras initializer name: he_normal, glorot_uniform, ...") from None


def _conv(x, filters, kernel, stride, padding, name, bias_one=False, groups=1, constraint=None, init="paper"):
    return layers.Conv2D(
        filters, kernel, strides=stride, padding=padding, groups=groups, activation="relu", name=name,
        kernel_initializer=_kernel_init(init),
        bias_initializer="ones" if bias_one else "zeros", kernel_constraint=constraint)(x)


def _classifier(x, num_classes, dropout, bias_one=True, init="paper"):
    x = layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        x = layers.Dense(4096, activation="relu", name=f"fc{i}", kernel_initializer=_kernel_init(init),
                         bias_initializer="ones" if bias_one else "zeros")(x)
        x = layers.Dropout(dropout, name=f"drop{i}")(x)
    return layers.Dense(num_classes, dtype="float32", name="fc8", kernel_initializer=_kernel_init(init))(x)


@register("alexnet", task="classify", input_shape=(227, 227, 3), num_classes=1000, test_input=(67, 67, 3),
          paper="Krizhevsky et al., ImageNet Classification with Deep CNNs (NIPS 2012), sec. 3, Fig. 2",
          reported_error="37.5% top-1 / 17.0% top-5 on ILSVRC-2010 test (Table 1)")
def alexnet(num_classes: int = 1000, input_shape=(227, 227, 3), towers: int = 1, dropout: float = 0.5,
            lrn: bool = True, kernel_init: str = "paper"):
    """AlexNet; ``towers=2`` reproduces the two-GPU split as grouped convolutions (60,965,224 parameters;
    62,378,344 with ``towers=1``). ``kernel_init``: ``paper`` (N(0, 0.01)) or a Keras initializer
    name such as ``he_normal`` for every kernel (the biases stay the paper's)."""
    inputs, x = pixel_input(input_shape, IMAGENET_MEAN, IMAGENET_STD)
    init = kernel_init
    x = _conv(x, 96, 11, 4, "valid", "conv1", init=init)                   # (55, 55, 96)
    if lrn:
        x = LocalResponseNormalization(name="lrn1")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)                           # (27, 27, 96)
    x = _conv(x, 256, 5, 1, "same", "conv2", bias_one=True, groups=towers, init=init)  # (27, 27, 256)
    if lrn:
        x = LocalResponseNormalization(name="lrn2")(x)
    x = layers.MaxPooling2D(3, 2, name="pool2")(x)                           # (13, 13, 256)
    x = _conv(x, 384, 3, 1, "same", "conv3", init=init)                      # all maps of both towers
    x = _conv(x, 384, 3, 1, "same", "conv4", bias_one=True, groups=towers, init=init)
    x = _conv(x, 256, 3, 1, "same", "conv5", bias_one=True, groups=towers, init=init)
    x = layers.MaxPooling2D(3, 2, name="pool5")(x)                           # (6, 6, 256)
    outputs = _classifier(x, num_classes, dropout, init=init)
    return keras.Model(inputs, outputs, name="alexnet" if towers == 1 else f"alexnet_{towers}towers")


@register("zfnet", task="classify", input_shape=(224, 224, 3), num_classes=1000, test_input=(64, 64, 3),
          paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks (ECCV 2014), Fig. 3",
          reported_error="36.0% top-1 / 14.7% top-5 on ILSVRC-2012 val, 1 net (Table 2)")
def zfnet(num_classes: int = 1000, input_shape=(224, 224, 3), dropout: float = 0.5):
    """ZFNet: 7x7/2 first layer, 5x5/2 second layer, 3x3/2 pooling, contrast normalisation."""
    cap = FilterRMSCap(0.1)
    inputs, x = pixel_input(input_shape, IMAGENET_MEAN, IMAGENET_STD)
    x = layers.ZeroPadding2D(1, name="pad1")(x)
    x = _conv(x, 96, 7, 2, "valid", "conv1", constraint=cap)  # (110, 110, 96)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)           # (55, 55, 96)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = _conv(x, 256, 5, 2, "valid", "conv2", constraint=cap)  # (26, 26, 256)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)           # (13, 13, 256)
    x = LocalResponseNormalization(name="lrn2")(x)
    x = _conv(x, 384, 3, 1, "same", "conv3", constraint=cap)
    x = _conv(x, 384, 3, 1, "same", "conv4", constraint=cap)
    x = _conv(x, 256, 3, 1, "same", "conv5", constraint=cap)
    x = layers.MaxPooling2D(3, 2, name="pool5")(x)                           # (6, 6, 256)
    outputs = _classifier(x, num_classes, dropout, bias_one=False)
    return keras.Model(inputs, outputs, name="zfnet")
