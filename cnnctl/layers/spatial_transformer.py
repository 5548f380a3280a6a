"""Spatial Transformer Networks (Jaderberg, Simonyan, Zisserman, Kavukcuoglu, NIPS 2015).

A localisation network regresses the parameters theta of a transformation
(sec. 3.1); a grid generator maps every pixel of the output grid through
theta to a point of the input (sec. 3.2, eq. 1); a bilinear sampler reads the
input there (sec. 3.3, eq. 5). All of it is differentiable with respect to
the input feature map and to theta (eq. 6-7), so the localisation network
learns from the classification loss alone.

Coordinates are normalised to [-1, 1] with -1 and 1 at the centres of the
corner pixels (``align_corners=True`` in PyTorch's ``affine_grid`` /
``grid_sample``); theta maps output coordinates to input coordinates; samples
outside the input read zero. ``keras.ops.image.affine_transform`` (and the
old ``tfa.image.transform``) give no gradient with respect to the transform,
hence this module.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

TRANSFORMS = {
    # name: (number of parameters, identity bias of the last localisation layer)
    "affine": (6, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    "similarity": (4, [1.0, 0.0, 0.0, 0.0]),            # scale, rotation (radians), tx, ty
    "translation_scale": (3, [1.0, 0.0, 0.0]),          # scale, tx, ty: the paper's attention variant
    "projective": (8, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
}


def _base_grid(height: int, width: int, dtype):
    """(h * w, 3) homogeneous output coordinates (x, y, 1), row-major, in [-1, 1]."""
    xs = np.linspace(-1.0, 1.0, width) if width > 1 else np.zeros(1)
    ys = np.linspace(-1.0, 1.0, height) if height > 1 else np.zeros(1)
    gx, gy = np.meshgrid(xs, ys)                               # (h, w) each
    grid = np.stack([gx.ravel(), gy.ravel(), np.ones(height * width)], axis=1)
    return ops.convert_to_tensor(grid, dtype=dtype)


def affine_grid(theta, height: int, width: int):
    """theta (b, 2, 3) -> sampling grid (b, height, width, 2) of input (x, y) in [-1, 1]."""
    theta = ops.convert_to_tensor(theta)
    base = _base_grid(height, width, theta.dtype)              # (h*w, 3)
    grid = ops.einsum("pk,bjk->bpj", base, theta)              # (b, h*w, 2)
    return ops.reshape(grid, (-1, height, width, 2))


def projective_grid(matrix, height: int, width: int):
    """matrix (b, 3, 3) -> grid (b, height, width, 2): (x', y', w') = M (x, y, 1), point (x'/w', y'/w')."""
    matrix = ops.convert_to_tensor(matrix)
    base = _base_grid(height, width, matrix.dtype)
    pts = ops.einsum("pk,bjk->bpj", base, matrix)              # (b, h*w, 3)
    w = pts[..., 2:3]
    w = ops.where(ops.abs(w) < 1e-6, ops.where(w < 0, -1e-6, 1e-6), w)  # keep the division finite
    return ops.reshape(pts[..., :2] / w, (-1, height, width, 2))


def bilinear_sample(images, grid):
    """Read ``images`` (b, H, W, C) at ``grid`` (b, h, w, 2) points (x, y) in [-1, 1] -> (b, h, w, C).

    Each output is the bilinear blend of the four pixels around its point
    (Jaderberg et al. eq. 5); neighbours outside the image count as zero.
    Differentiable with respect to ``images`` and ``grid``.
    """
    images = ops.convert_to_tensor(images)
    grid = ops.cast(grid, images.dtype)
    shape = ops.shape(images)
    b, H, W, C = shape[0], shape[1], shape[2], shape[3]
    Hf, Wf = ops.cast(H, images.dtype), ops.cast(W, images.dtype)
    x = (grid[..., 0] + 1.0) * (Wf - 1.0) / 2.0               # (b, h, w) pixel coordinates
    y = (grid[..., 1] + 1.0) * (Hf - 1.0) / 2.0
    x0, y0 = ops.floor(x), ops.floor(y)
    flat = ops.reshape(images, (-1, C))                        # (b*H*W, C)
    batch = ops.reshape(ops.arange(b, dtype="int32") * (H * W), (-1, 1, 1))
    out = 0.0
    for dx in (0.0, 1.0):
        for dy in (0.0, 1.0):
            xi, yi = x0 + dx, y0 + dy
            weight = (1.0 - ops.abs(x - xi)) * (1.0 - ops.abs(y - yi))          # (b, h, w)
            inside = (xi >= 0) & (xi <= Wf - 1.0) & (yi >= 0) & (yi <= Hf - 1.0)
            weight = ops.where(inside, weight, ops.zeros_like(weight))
            xc = ops.cast(ops.clip(xi, 0.0, Wf - 1.0), "int32")
            yc = ops.cast(ops.clip(yi, 0.0, Hf - 1.0), "int32")
            values = ops.take(flat, batch + yc * W + xc, axis=0)                # (b, h, w, C)
            out = out + weight[..., None] * values
    return out


def params_to_matrix(params, transform: str):
    """Localisation output (b, n) -> (b, 2, 3) for affine kinds or (b, 3, 3) for "projective"."""
    p = params
    if transform == "affine":
        return ops.reshape(p, (-1, 2, 3))
    if transform == "similarity":
        s, a, tx, ty = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        c, n = s * ops.cos(a), s * ops.sin(a)
        return ops.stack([ops.stack([c, -n, tx], axis=1), ops.stack([n, c, ty], axis=1)], axis=1)
    if transform == "translation_scale":
        s, tx, ty = p[:, 0], p[:, 1], p[:, 2]
        z = ops.zeros_like(s)
        return ops.stack([ops.stack([s, z, tx], axis=1), ops.stack([z, s, ty], axis=1)], axis=1)
    if transform == "projective":
        ones = ops.ones_like(p[:, :1])
        return ops.reshape(ops.concatenate([p, ones], axis=1), (-1, 3, 3))
    raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")


def localization_network(kind: str = "conv", input_shape=None, units: int = 32, name: str = "loc"):
    """The paper's localisation nets (sec. 4.1): "dense" = two ``units``-unit layers; "conv" = 2x2
    max-pooling, then two 20-filter 5x5 convolutions with 2x2 max-pooling between them, then a
    ``units``-unit layer ("same" padding on inputs under 28 pixels, which the valid convolutions
    would shrink to nothing). The regression layer is added by ``SpatialTransformer``."""
    stack = []
    if kind == "conv":
        small = input_shape is not None and min(input_shape[1], input_shape[2]) < 28
        pad = "same" if small else "valid"
        stack = [layers.MaxPooling2D(2, name=f"{name}_pool0"),
                 layers.Conv2D(20, 5, padding=pad, activation="relu", name=f"{name}_conv1"),
                 layers.MaxPooling2D(2, name=f"{name}_pool1"),
                 layers.Conv2D(20, 5, padding=pad, activation="relu", name=f"{name}_conv2"),
                 layers.Flatten(name=f"{name}_flatten"),
                 layers.Dense(units, activation="relu", name=f"{name}_fc")]
    elif kind == "dense":
        stack = [layers.Flatten(name=f"{name}_flatten"),
                 layers.Dense(units, activation="relu", name=f"{name}_fc1"),
                 layers.Dense(units, activation="relu", name=f"{name}_fc2")]
    else:
        raise ValueError(f"localisation network kind must be 'conv' or 'dense', got {kind!r}")
    return keras.Sequential(stack, name=name)


@keras.saving.register_keras_serializable(package="cnnctl")
class SpatialTransformer(layers.Layer):
    """Warp the input by a transformation its own localisation network predicts.

    Args:
        localization: a Keras layer/model mapping the input to a feature vector, or "conv" / "dense"
            for the paper's nets (``localization_network``).
        transform: "affine" (6 parameters), "similarity" (4), "translation_scale" (3) or
            "projective" (8).
        output_size: (height, width) of the output grid; None keeps the input size.
        units: width of the built-in localisation nets.

    The last localisation layer is a Dense layer with a zero kernel and the identity transform as its
    bias, so training starts from the identity warp. ``transform_matrix(x)`` returns the predicted
    matrices (for pictures of what the transformer does).
    """

    def __init__(self, localization="conv", transform: str = "affine", output_size=None, units: int = 32, **kwargs):
        super().__init__(**kwargs)
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}")
        self.transform = transform
        self.output_size = tuple(int(s) for s in output_size) if output_size else None
        self.units = int(units)
        if isinstance(localization, str):
            if localization not in ("conv", "dense"):
                raise ValueError(f"localisation network kind must be 'conv' or 'dense', got {localization!r}")
            self.localization_kind = localization
            self.localization = None  # built for the input size in build()
        else:
            self.localization_kind = None
            self.localization = localization
        n, identity = TRANSFORMS[transform]
        self.regressor = layers.Dense(n, kernel_initializer="zeros",
                                      bias_initializer=keras.initializers.Constant(identity),
                                      dtype="float32", name=f"{self.name}_theta")

    def build(self, input_shape):
        if self.localization is None:
            self.localization = localization_network(self.localization_kind, input_shape, self.units,
                                                     name=f"{self.name}_loc")
        self.localization.build(input_shape)
        feat = self.localization.compute_output_shape(input_shape)
        self.regressor.build(feat)

    def transform_matrix(self, x):
        params = ops.cast(self.regressor(self.localization(x)), "float32")
        return params_to_matrix(params, self.transform)

    def call(self, x):
        h, w = self.output_size or (x.shape[1], x.shape[2])
        matrix = self.transform_matrix(x)
        grid = projective_grid(matrix, h, w) if self.transform == "projective" else affine_grid(matrix, h, w)
        return ops.cast(bilinear_sample(ops.cast(x, "float32"), grid), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        h, w = self.output_size or (input_shape[1], input_shape[2])
        return (input_shape[0], h, w, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(transform=self.transform, output_size=self.output_size, units=self.units,
                      localization=self.localization_kind or keras.saving.serialize_keras_object(self.localization))
        return config

    @classmethod
    def from_config(cls, config):
        loc = config.pop("localization")
        if isinstance(loc, dict):
            loc = keras.saving.deserialize_keras_object(loc)
        return cls(localization=loc, **config)


def rotation_theta(degrees: float, batch: int = 1) -> np.ndarray:
    """(batch, 2, 3) theta of a rotation by ``degrees`` about the centre (output -> input coordinates)."""
    a = math.radians(degrees)
    m = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])
    return np.repeat(m[None], batch, axis=0)
