"""Small fast baselines for 28x28 data: the default model of ``cnnctl train``."""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.layers import FusedBatchNormalization
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register

FASHION_MEAN, FASHION_STD = 72.94, 90.02  # Fashion-MNIST train-set pixel statistics


@register("fashion_cnn", task="classify", input_shape=(28, 28, 1), num_classes=10,
          paper="Xiao et al., Fashion-MNIST (arXiv:1708.07747, 2017), 2-conv benchmark net",
          reported_error="8.4% (Fashion-MNIST README, 2 conv + pooling + BN)")
def fashion_cnn(num_classes: int = 10, input_shape=(28, 28, 1), widths=(32, 64), hidden: int = 256,
                dropout: float = 0.3):
    """Two conv-BN-ReLU-maxpool stages and a dense head.

    The shape of the 2-conv TensorFlow net the Fashion-MNIST README lists at
    91.6% test accuracy, with batch norm added so that it gets there in a few
    epochs on a CPU.

    Args:
        widths: filters of the two 3x3 convolutions.
        hidden: units of the hidden dense layer.
        dropout: dropout before and after the hidden layer.
    """
    inputs, x = pixel_input(input_shape, FASHION_MEAN, FASHION_STD)
    for i, w in enumerate(widths):
        x = layers.Conv2D(w, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = FusedBatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.ReLU(name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)  # (h/2, w/2, w)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="drop1")(x)
    x = layers.Dense(hidden, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout, name="drop2")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


@register("softmax", task="classify", input_shape=(28, 28, 1), num_classes=10,
          paper="CS231n linear classifier (multinomial logistic regression)", reported_error="15.8% on Fashion-MNIST (README, LogisticRegression)")
def softmax(num_classes: int = 10, input_shape=(28, 28, 1)):
    """A linear softmax classifier on raw pixels: the CS231n baseline."""
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="softmax")


@register("linear_svm", task="classify", input_shape=(28, 28, 1), num_classes=10, loss="multiclass_hinge",
          paper="CS231n linear classifier with the multiclass SVM loss (Weston & Watkins 1999)",
          reported_error="16.4% on Fashion-MNIST (README, LinearSVC)")
def linear_svm(num_classes: int = 10, input_shape=(28, 28, 1)):
    """A linear classifier trained with the multiclass hinge loss (margin 1) instead of softmax."""
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="scores")(x)
    return keras.Model(inputs, outputs, name="linear_svm")


@register("two_layer_net", task="classify", input_shape=(28, 28, 1), num_classes=10,
          paper="CS231n two-layer neural network (affine - ReLU - affine - softmax)",
          reported_error="12.3% on Fashion-MNIST (README, MLPClassifier, 100 hidden ReLU units)")
def two_layer_net(num_classes: int = 10, input_shape=(28, 28, 1), hidden: int = 100):
    """Affine - ReLU - affine: the CS231n two-layer net."""
    inputs, x = pixel_input(input_shape, 127.5, 127.5)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(hidden, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="two_layer_net")


@register("knn", task="classify", input_shape=(28, 28, 1), num_classes=10, fit="memorize",
          paper="CS231n k-nearest-neighbour classifier (Cover & Hart 1967)",
          reported_error="about 14-15% on Fashion-MNIST (benchmark, KNeighborsClassifier)")
def knn(num_classes: int = 10, input_shape=(28, 28, 1), k: int = 5, metric: str = "l2", memory_size: int = 1):
    """k nearest neighbours on raw pixels, L1 or L2 distance.

    Not trained by gradient descent: ``cnnctl train --model knn`` memorises
    the training split (``memory_size`` is set to its size) in one pass and
    reports validation/test accuracy, as the CS231n assignment does.

    Args:
        k: neighbours that vote.
        metric: "l2" or "l1".
        memory_size: examples memorised (set by the trainer to the training split's size).
    """
    from cnnctl.layers import NearestNeighbours

    inputs = keras.Input(input_shape, name="pixels")
    memory_size = max(int(memory_size), int(k))  # before memorising (e.g. `cnnctl models`): a placeholder
    outputs = NearestNeighbours(memory_size, num_classes, k=k, metric=metric, name="neighbours")(inputs)
    return keras.Model(inputs, outputs, name="knn")
