"""Architectures, registered by name. ``build("resnet20", num_classes=10)`` returns a plain Keras model.

Every model takes raw pixel values in [0, 255] (float) of shape
``(height, width, channels)`` and applies its own normalisation as its first
layers, so a saved ``.keras`` file is self-contained and input pipelines
cannot get the preprocessing wrong. Outputs are logits.
"""

from __future__ import annotations

import inspect
from typing import Any

from cnnctl.errors import CnnctlError

# Importing the family modules fills the registry.
from cnnctl.models import (  # noqa: F401
    alexnet,
    bn_inception,
    captioning,
    deepface,
    efficientnet_lite,
    gans,
    inception,
    inception_resnet,
    inception_v3,
    inception_v4,
    lenet,
    nin,
    rcnn,
    rcnn_alternating,  # its model class must be registered before a run's .keras file loads
    rcnn_original,
    resnet,
    resnet_cifar,
    segnet,
    simple,
    stn,
    unet,
    vgg,
)
from cnnctl.models.registry import MODELS, register

__all__ = ["MODELS", "build", "default_input_shape", "describe", "register"]


def default_input_shape(name: str) -> tuple[int, int, int]:
    return tuple(MODELS.get(name).meta["input_shape"])


def test_input_shape(name: str) -> tuple[int, int, int]:
    """A small input the architecture still accepts (for fast tests)."""
    meta = MODELS.get(name).meta
    return tuple(meta.get("test_input", meta["input_shape"]))


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise a ``CnnctlError`` listing the valid options if ``options`` has a key the builder lacks."""
    entry = MODELS.get(name)
    params = inspect.signature(entry.fn).parameters
    accepted = [p for p in params if p not in ("num_classes", "input_shape")]
    for key in options:
        if key not in params:
            raise CnnctlError(
                f"model {name!r} has no option {key!r}",
                hint=("its options are: " + ", ".join(accepted)) if accepted else f"{name} takes no options")


def build(name: str, num_classes: int = 1000, input_shape: tuple[int, int, int] | None = None,
          **options: Any):
    """Build registered model ``name``; ``options`` are checked against its builder's signature."""
    entry = MODELS.get(name)
    check_options(name, options)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(name)
    try:
        return entry.fn(num_classes=num_classes, input_shape=shape, **options)
    except (TypeError, ValueError) as e:
        raise CnnctlError(f"cannot build {name!r} with input {shape} and options {options}: {e}") from None


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass (Conv2D, Conv2DTranspose, DepthwiseConv2D, Dense, recurrent
    layers per step). A GAN counts both of its networks (G's and D's forward passes)."""
    import keras
    import numpy as np

    total = 0
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape  # (batch, h, w, filters)
            k = layer.kernel.shape    # (kh, kw, cin/groups, filters)
            total += out[1] * out[2] * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            inp = layer.input.shape   # every input pixel scatters the whole kernel (kh, kw, filters, cin)
            total += inp[1] * inp[2] * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            out = layer.output.shape
            k = layer.kernel.shape    # (kh, kw, cin, multiplier)
            total += out[1] * out[2] * k[0] * k[1] * k[2] * k[3]
        elif layer.__class__.__name__ == "LocallyConnected2D":
            k = layer.kernel.shape    # (positions, kh*kw*cin, filters)
            total += k[0] * k[1] * k[2]
        elif isinstance(layer, keras.layers.Dense):
            total += int(layer.kernel.shape[0] * layer.kernel.shape[1])
        elif isinstance(layer, keras.layers.LSTM):     # per time step (caption models: per word)
            total += int(np.prod(layer.cell.kernel.shape) + np.prod(layer.cell.recurrent_kernel.shape))
        elif isinstance(layer, keras.layers.RNN) and hasattr(layer.cell, "recurrent_kernel"):
            total += int(np.prod(layer.cell.recurrent_kernel.shape))
    return int(total)


def leaf_layers(model):
    """Every layer of ``model``, nested models opened."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def describe(name: str) -> dict[str, Any]:
    """Metadata of a model plus its parameter count and MACs at the default input (builds it)."""
    entry = MODELS.get(name)
    meta = dict(entry.meta)
    # Auxiliary classifiers are discarded at inference, and papers count without them.
    extra = {"aux": False} if "aux" in inspect.signature(entry.fn).parameters else {}
    model = build(name, num_classes=meta.get("num_classes", 1000), **extra)
    meta.update(name=name, params=trainable_params(model), macs=count_macs(model))
    meta.pop("test_input", None)
    return meta


def model_input_shape(model) -> tuple:
    """(h, w, c) a built model takes, also for wrappers such as ``AuxiliaryClassifiers``."""
    inner = getattr(model, "network", None)
    source = inner if inner is not None else model
    return tuple(int(s) for s in source.inputs[0].shape[1:])


def model_num_outputs(model) -> int:
    """Classes predicted by the main output."""
    inner = getattr(model, "network", None)
    outputs = inner.outputs if inner is not None else model.outputs
    return int(outputs[0].shape[-1])


def trainable_params(model) -> int:
    """Trainable parameters: what papers count (batch norm's moving statistics are not parameters)."""
    import numpy as np

    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
