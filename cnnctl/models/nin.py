"""Network in Network.

Lin, Chen, Yan. "Network In Network." ICLR 2014. Section 3: mlpconv layers
(a convolution followed by two 1x1 convolutions, i.e. a micro MLP shared over
positions, all with ReLU) and global average pooling over the last mlpconv's
class maps instead of fully connected layers (3.2). The CIFAR-10 network
(section 4.2, the authors' released cifar10 model): three mlpconv blocks of
192-160-96, 192-192-192 and 192-192-10 with 3x3 stride-2 pooling and dropout
0.5 between blocks. The ImageNet network (the authors' Caffe model): four
mlpconv blocks of 96, 256, 384 and 1024 filters ending in 1000 class maps.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnctl.models.alexnet import IMAGENET_MEAN, IMAGENET_STD
from cnnctl.models.common import pixel_input
from cnnctl.models.registry import register
from cnnctl.models.resnet_cifar import CIFAR_MEAN, CIFAR_STD


def mlpconv(x, filters, kernel, stride, name, last_relu=True):
    """Conv kxk then two 1x1 convs (``filters`` = (f1, f2, f3)), ReLU after each."""
    f1, f2, f3 = filters
    x = layers.Conv2D(f1, kernel, strides=stride, padding="same", activation="relu", name=f"{name}_conv")(x)
    x = layers.Conv2D(f2, 1, activation="relu", name=f"{name}_mlp1")(x)
    return layers.Conv2D(f3, 1, activation="relu" if last_relu else None, name=f"{name}_mlp2")(x)


def _gap_logits(x):
    x = layers.GlobalAveragePooling2D(name="gap")(x)                 # (num_classes,) class-map averages
    return layers.Activation("linear", dtype="float32", name="logits")(x)


@register("nin_cifar", task="classify", input_shape=(32, 32, 3), num_classes=10,
          paper="Lin et al., Network In Network (ICLR 2014), sec. 3-4.2",
          reported_error="10.41% on CIFAR-10 without augmentation, 8.81% with (Table 1)")
def nin_cifar(num_classes: int = 10, input_shape=(32, 32, 3), dropout: float = 0.5):
    """NiN for 32x32 images: 3 mlpconv blocks, global average pooling."""
    c = input_shape[-1]
    mean = CIFAR_MEAN if c == 3 else [sum(CIFAR_MEAN) / 3] * c
    std = CIFAR_STD if c == 3 else [sum(CIFAR_STD) / 3] * c
    inputs, x = pixel_input(input_shape, mean, std)
    x = mlpconv(x, (192, 160, 96), 5, 1, "block1")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)  # (16, 16, 96)
    x = layers.Dropout(dropout, name="drop1")(x)
    x = mlpconv(x, (192, 192, 192), 5, 1, "block2")
    x = layers.AveragePooling2D(3, 2, padding="same", name="pool2")(x)  # (8, 8, 192)
    x = layers.Dropout(dropout, name="drop2")(x)
    x = mlpconv(x, (192, 192, num_classes), 3, 1, "block3", last_relu=False)
    return keras.Model(inputs, _gap_logits(x), name="nin_cifar")


@register("nin_imagenet", task="classify", input_shape=(224, 224, 3), num_classes=1000, test_input=(64, 64, 3),
          paper="Lin et al., Network In Network (ICLR 2014), ImageNet model",
          reported_error="~40.6% top-1 on ILSVRC-2012 val (authors' released model)")
def nin_imagenet(num_classes: int = 1000, input_shape=(224, 224, 3), dropout: float = 0.5):
    """NiN for ImageNet: 4 mlpconv blocks (96, 256, 384, 1024), global average pooling."""
    inputs, x = pixel_input(input_shape, IMAGENET_MEAN, IMAGENET_STD)
    x = mlpconv(x, (96, 96, 96), 11, 4, "block1")                    # (56, 56, 96)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = mlpconv(x, (256, 256, 256), 5, 1, "block2")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)
    x = mlpconv(x, (384, 384, 384), 3, 1, "block3")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool3")(x)
    x = layers.Dropout(dropout, name="drop3")(x)
    x = mlpconv(x, (1024, 1024, num_classes), 3, 1, "block4", last_relu=False)
    return keras.Model(inputs, _gap_logits(x), name="nin_imagenet")
