"""Frozen image encoders for heads that describe images (captioning): a pretrained network's last
feature map, average-pooled to a ``g x g`` grid of cells -> ``(g * g, channels)`` per image.

An encoder is ``NAME:imagenet`` (a registered network with its ImageNet weights, converted offline,
e.g. ``efficientnet_lite0:imagenet``) or the folder of a cnnctl run (its ``best.keras``, else
``model.keras``). Images are resized to ``image_size`` x ``image_size`` with Pillow (bilinear) --
the same code for training images held in memory and for files given to ``cnnctl caption`` -- and
converted to the encoder's channels.
"""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cnnctl.errors import CnnctlError


@dataclass(frozen=True)
class EncoderSpec:
    name: str            # "efficientnet_lite0:imagenet" or a run directory
    image_size: int      # square input side
    grid: int            # cells per side of the pooled feature map
    regions: str = "map"  # "map": pool the feature map; "cells": the whole network on each cell

    @classmethod
    def from_config(cls, cc) -> EncoderSpec:
        if cc.regions not in ("map", "cells"):
            raise CnnctlError(f"caption.regions = {cc.regions!r} is not map or cells",
                              hint="map: the feature map pooled to grid x grid; cells: the network on each cell")
        return cls(cc.encoder, int(cc.image_size), int(cc.grid), cc.regions)

    @classmethod
    def from_json(cls, obj: dict) -> EncoderSpec:
        return cls(str(obj["name"]), int(obj["image_size"]), int(obj["grid"]), str(obj.get("regions", "map")))

    def to_json(self) -> dict:
        return {"name": self.name, "image_size": self.image_size, "grid": self.grid, "regions": self.regions}

    def build(self, log=print):
        """-> a Keras model: uint8-valued float images ``(S, S, c)`` -> features ``(grid * grid, channels)``."""
        import keras

        if self.regions == "cells":
            return self._cells(log)
        trunk = self._trunk(log)
        x = trunk.output                                                    # (b, h, w, d)
        h, w = int(x.shape[1]), int(x.shape[2])
        if h % self.grid or w % self.grid:
            raise CnnctlError(f"the encoder's {h}x{w} feature map does not split into a {self.grid}x{self.grid} grid",
                              hint=f"pick caption.grid dividing {h}, or caption.image_size so that the map "
                                   f"(size / 32 for EfficientNet) is a multiple of {self.grid}")
        x = keras.layers.AveragePooling2D((h // self.grid, w // self.grid), name="grid_pool")(x)
        x = keras.layers.Reshape((self.grid * self.grid, int(x.shape[-1])), name="cells")(x)
        x = keras.layers.Activation("linear", dtype="float32", name="features")(x)
        model = keras.Model(trunk.input, x, name="encoder")
        model.trainable = False
        return model

    def _cells(self, log):
        """Region features (as Karpathy & Fei-Fei's, with grid cells for detections): the image is cut
        into ``grid x grid`` cells, each cell centre-cropped (or resized, if smaller) to the network's
        own input size, and the network's penultimate layer (the input of its classifier) describes it."""
        import keras

        net = self._network(log)
        h, w, c = (int(d) for d in net.inputs[0].shape[1:])
        from cnnctl.train.finetune import classifier_layer

        penultimate = keras.Model(net.inputs[0], classifier_layer(net).input, name="region_net")
        cell = self.image_size // self.grid
        if cell * self.grid != self.image_size:
            raise CnnctlError(f"caption.image_size {self.image_size} does not split into {self.grid} cells",
                              hint=f"use a multiple of {self.grid}")
        image = keras.Input((self.image_size, self.image_size, c), name="image")
        crops = GridCells(self.grid, (h, w), name="grid_cells")(image)           # (b * g * g, h, w, c)
        feats = penultimate(crops)                                                # (b * g * g, d)
        feats = RegroupCells(self.grid * self.grid, name="cells")(feats)           # (b, g * g, d)
        feats = keras.layers.Activation("linear", dtype="float32", name="features")(feats)
        model = keras.Model(image, feats, name="encoder")
        model.trainable = False
        return model

    def _network(self, log):
        """The whole pretrained network at its own input size."""
        return pretrained_network(self.name, log, "caption.encoder")

    def _trunk(self, log):
        """The network up to its last 4-d feature map, at ``image_size``."""
        import keras

        model = network_at(self.name, (self.image_size, self.image_size), log, "caption.encoder",
                           size_hint="caption.image_size")
        from cnnctl.models.backbone import pyramid_outputs

        try:
            deepest = list(pyramid_outputs(model).values())[-1]
        except CnnctlError:
            raise CnnctlError(f"{self.name} has no convolutional feature map to describe images with") from None
        return keras.Model(model.inputs[0], deepest, name="encoder_trunk")


def pretrained_network(name: str, log=print, option: str = "model.encoder"):
    """The whole pretrained network ``name`` at its own input size: ``NAME:WEIGHTS`` (a registered network
    with its ImageNet or bundled weights) or the folder of a cnnctl run (its best.keras, else model.keras)."""
    if ":" in name and not Path(name).exists():
        net, _, weights = name.partition(":")
        from cnnctl.weights import load_pretrained

        return load_pretrained(net, weights, log=log)
    run = Path(name)
    which = "best" if (run / "best.keras").is_file() else "model"
    if not (run / f"{which}.keras").is_file():
        raise CnnctlError(f"{option} = {name!r} is neither NAME:WEIGHTS nor a trained run",
                          hint="use efficientnet_lite0:imagenet, fashion_cnn:fashion_mnist, or a run folder")
    from cnnctl.inference import load_keras_file

    return load_keras_file(run / f"{which}.keras", hint="give a run trained by cnnctl")


def network_at(name: str, size: tuple[int, int], log=print, option: str = "model.encoder",
               size_hint: str = "model.input_shape"):
    """The pretrained network ``name`` built again for ``size`` (h, w) inputs (its own channels): every
    layer up to the last feature map takes the trained weights (convolutions do not depend on the input
    size), so a network trained on 28x28 items can look at a 128x128 scene. Its classifier, whose shapes
    change, keeps fresh weights: only the feature maps are meant to be used."""
    from cnnctl import models

    trained = pretrained_network(name, log, option)
    size = (int(size[0]), int(size[1]))
    if tuple(trained.inputs[0].shape[1:3]) == size:
        return trained
    channels = int(trained.inputs[0].shape[-1])
    if ":" in name and not Path(name).exists():
        net, options, where = name.partition(":")[0], {}, name
    else:
        from cnnctl.config import load_run_config

        cfg = load_run_config(Path(name))
        net, where = cfg.model.name, f"the encoder run's {cfg.model.name}"
        options = {k: v for k, v in cfg.model.options.items() if k != "input_shape"}
    try:
        model = models.build(net, num_classes=int(trained.outputs[0].shape[-1]),
                             input_shape=(*size, channels), **options)
    except CnnctlError as e:
        raise CnnctlError(f"{where} cannot take {size[0]}x{size[1]} images ({e.message})",
                          hint=f"set {size_hint} to {trained.inputs[0].shape[1]}") from None
    _copy_feature_layers(trained, model)
    return model


def _copy_feature_layers(src, dst) -> None:
    """Weights of every layer with a 4-d output (the convolutional body), from ``src`` into the same
    architecture ``dst`` built for another input size; the classifier (whose shapes change) is left out."""
    for layer in dst.layers:
        out = getattr(layer, "output", None)
        if out is not None and len(out.shape) == 4 and layer.weights:
            layer.set_weights(src.get_layer(layer.name).get_weights())


class GridCells(keras.layers.Layer):
    """``(b, S, S, c)`` -> ``(b * g * g, h, w, c)``: the ``g x g`` cells in reading order, each centre-cropped
    to ``(h, w)`` (resized instead when the cell is smaller)."""

    def __init__(self, grid: int, size: tuple[int, int], **kwargs):
        super().__init__(**kwargs)
        self.grid, self.size = int(grid), (int(size[0]), int(size[1]))

    def call(self, x):
        ops = keras.ops
        g, (h, w) = self.grid, self.size
        side, c = int(x.shape[1]), int(x.shape[-1])
        cell = side // g
        x = ops.reshape(x, (-1, g, cell, g, cell, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, cell, cell, c))
        if cell >= h and cell >= w:
            top, left = (cell - h) // 2, (cell - w) // 2
            return x[:, top:top + h, left:left + w, :]
        return ops.image.resize(x, (h, w), interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return (None, *self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "size": list(self.size)}


class RegroupCells(keras.layers.Layer):
    """``(b * n, d)`` -> ``(b, n, d)``: each image's cells back together."""

    def __init__(self, cells: int, **kwargs):
        super().__init__(**kwargs)
        self.cells = int(cells)

    def call(self, x):
        return keras.ops.reshape(x, (-1, self.cells, int(x.shape[-1])))

    def compute_output_shape(self, input_shape):
        return (None, self.cells, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "cells": self.cells}


def fit_image(image: np.ndarray, channels: int, size: int) -> np.ndarray:
    """uint8 (h, w, c) -> (size, size, channels), bilinear (Pillow), grey <-> RGB converted."""
    from PIL import Image

    if image.shape[-1] != channels:
        image = np.repeat(image[..., :1], 3, axis=-1) if channels == 3 else \
            np.asarray(Image.fromarray(image[..., :3]).convert("L"))[..., None]
    if image.shape[:2] != (size, size):
        pil = Image.fromarray(image[..., 0] if channels == 1 else image)
        image = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        image = image[..., None] if image.ndim == 2 else image
    return image


def fitted_images(images, channels: int, size: int, start: int = 0, stop: int | None = None
                  ) -> tuple[np.ndarray, list]:
    """``images[start:stop]`` (a uint8 array, or file paths) at ``(size, size, channels)`` uint8 ->
    (array, [(path, problem)]). Unreadable files become black images and a problem line."""
    from cnnctl.data.images import ImageError, load_image

    stop = len(images) if stop is None else stop
    bad: list[tuple[str, str]] = []

    def one(i):
        if isinstance(images, np.ndarray):
            return fit_image(images[i], channels, size)
        try:
            return fit_image(load_image(images[i], channels), channels, size)
        except ImageError as e:
            bad.append((images[i], str(e)))
            return np.zeros((size, size, channels), np.uint8)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        out = np.stack(list(pool.map(one, range(start, stop)))) if stop > start else \
            np.zeros((0, size, size, channels), np.uint8)
    return out, bad


def encode(encoder, spec: EncoderSpec, images, log=print, batch: int = 64, mirror: bool = False,
           transform=None) -> tuple[np.ndarray, list]:
    """Features of ``images`` (uint8 array, or file paths) -> (float32 (n, cells, d), [(path, problem)]).

    ``mirror``: of each image flipped left-right. ``transform(batch, first)``: of each image as that
    function returns it (uint8 (b, S, S, c) at the encoder's size; ``first`` = the batch's first
    image's index). Unreadable files get zero features and a problem line; callers decide whether that
    stops them.
    """
    channels = int(encoder.inputs[0].shape[-1])
    n = len(images)
    out = np.zeros((n, *encoder.outputs[0].shape[1:]), np.float32)
    bad: list[tuple[str, str]] = []
    for s in range(0, n, batch):
        x, problems = fitted_images(images, channels, spec.image_size, s, min(n, s + batch))
        bad += problems
        if mirror:
            x = x[:, :, ::-1]
        if transform is not None:
            x = transform(x, s)
        out[s:s + len(x)] = np.asarray(encoder(x.astype(np.float32), training=False), np.float32)
    return out, bad


def encode_pixels(encoder, pixels: np.ndarray, batch: int = 64) -> np.ndarray:
    """Features of images already at the encoder's size (uint8 ``(n, S, S, c)``) -> float32 ``(n, cells, d)``."""
    out = [np.asarray(encoder(pixels[s:s + batch].astype(np.float32), training=False), np.float32)
           for s in range(0, len(pixels), batch)]
    return np.concatenate(out) if out else np.zeros((0, *encoder.outputs[0].shape[1:]), np.float32)


def trainable_encoder(spec: EncoderSpec, log=print):
    """The encoder of ``spec`` with its weights trainable, batch-norm layers kept frozen (their
    statistics and affine parameters: caption batches are small and one-sided), to be called with
    ``training=False`` (no dropout / drop-connect inside it)."""
    from cnnctl.models import leaf_layers

    encoder = spec.build(log)
    encoder.trainable = True
    for layer in leaf_layers(encoder):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return encoder
