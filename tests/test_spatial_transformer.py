"""Spatial transformer: grid, bilinear sampler (values and gradients), the layer, its .keras round trip."""

from __future__ import annotations

import numpy as np
import pytest

from cnnctl.layers import SpatialTransformer, affine_grid, bilinear_sample
from cnnctl.layers.spatial_transformer import rotation_theta


def _numpy_bilinear(images, grid):
    """Direct loop: for each output point, blend the 4 neighbours, zero outside."""
    b, H, W, C = images.shape
    _, h, w, _ = grid.shape
    out = np.zeros((b, h, w, C))
    for n in range(b):
        for i in range(h):
            for j in range(w):
                x = (grid[n, i, j, 0] + 1) * (W - 1) / 2
                y = (grid[n, i, j, 1] + 1) * (H - 1) / 2
                x0, y0 = int(np.floor(x)), int(np.floor(y))
                for xi in (x0, x0 + 1):
                    for yi in (y0, y0 + 1):
                        if 0 <= xi < W and 0 <= yi < H:
                            out[n, i, j] += (1 - abs(x - xi)) * (1 - abs(y - yi)) * images[n, yi, xi]
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sampler_matches_direct_bilinear_interpolation(dtype):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 5, 7, 3)).astype(dtype)
    grid = rng.uniform(-1.3, 1.3, size=(2, 4, 6, 2)).astype(dtype)    # some points outside: zeros
    out = np.asarray(bilinear_sample(images, grid))
    assert out.shape == (2, 4, 6, 3) and out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, _numpy_bilinear(images, grid), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_affine_grid_convention_identity_and_rot90(dtype):
    theta = np.array([[[1, 0, 0], [0, 1, 0]]], dtype=dtype)
    grid = np.asarray(affine_grid(theta, 3, 4))
    assert grid.shape == (1, 3, 4, 2) and grid.dtype == np.dtype(dtype)
    np.testing.assert_allclose(grid[0, 0, 0], [-1, -1])                 # corner pixel centres at +-1
    np.testing.assert_allclose(grid[0, 2, 3], [1, 1])
    images = np.random.default_rng(1).normal(size=(1, 6, 6, 2)).astype(dtype)
    np.testing.assert_allclose(np.asarray(bilinear_sample(images, affine_grid(theta, 6, 6))), images, atol=1e-6)
    # Output (x, y) reads input (-y, x): np.rot90 (counter-clockwise) of the image.
    rot = np.asarray(bilinear_sample(images, affine_grid(rotation_theta(90).astype(dtype), 6, 6)))
    np.testing.assert_allclose(rot[0], np.rot90(images[0], k=1, axes=(0, 1)), atol=1e-5)


def test_gradients_with_respect_to_theta_and_input_match_finite_differences():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    images = tf.constant(rng.normal(size=(2, 6, 5, 2)))
    theta = tf.constant(rotation_theta(20, 2) * 0.8 + rng.normal(scale=0.05, size=(2, 2, 3)))
    weights = tf.constant(rng.normal(size=(2, 4, 3, 2)))

    def f(img, th):
        return tf.reduce_sum(bilinear_sample(img, affine_grid(th, 4, 3)) * weights)

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([images, theta])
        value = f(images, theta)
    g_theta, g_img = tape.gradient(value, theta).numpy(), tape.gradient(value, images).numpy()
    eps = 1e-6
    for idx in np.ndindex(*theta.shape):
        d = np.zeros(theta.shape)
        d[idx] = eps
        fd = (f(images, theta + d) - f(images, theta - d)).numpy() / (2 * eps)
        assert abs(fd - g_theta[idx]) < 1e-6 * max(1.0, abs(fd)), (idx, fd, g_theta[idx])
    for idx in list(np.ndindex(*images.shape))[::7]:
        d = np.zeros(images.shape)
        d[idx] = eps
        fd = (f(images + d, theta) - f(images - d, theta)).numpy() / (2 * eps)
        assert abs(fd - g_img[idx]) < 1e-6 * max(1.0, abs(fd))
    assert np.abs(g_theta).max() > 0


@pytest.mark.parametrize("transform", ["affine", "similarity", "translation_scale", "projective"])
def test_layer_starts_at_identity_trains_theta_and_round_trips(transform, tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((28, 28, 1))
    st = SpatialTransformer("conv" if transform != "similarity" else "dense", transform=transform, name="st")
    x = st(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(3).uniform(0, 1, (4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(st(images)), images, atol=1e-5)   # the identity warp at init
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(images) ** 2)
    grads = tape.gradient(loss, st.regressor.trainable_weights)
    assert all(g is not None for g in grads) and float(tf.linalg.global_norm(grads)) > 0
    path = tmp_path / "st.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(again(images)), np.asarray(model(images)), atol=1e-6)


def test_transformers_in_series_and_in_parallel_inside_a_network():
    import keras

    inputs = keras.Input((32, 32, 1))
    first = SpatialTransformer("dense", output_size=(24, 24), name="st1")(inputs)
    feat = keras.layers.Conv2D(4, 3, padding="same", name="conv")(first)
    a = SpatialTransformer("conv", transform="translation_scale", output_size=(12, 12), name="st_a")(feat)
    b = SpatialTransformer("conv", transform="translation_scale", output_size=(12, 12), name="st_b")(feat)
    out = keras.layers.Concatenate()([a, b])
    model = keras.Model(inputs, out)
    assert tuple(model.output.shape) == (None, 12, 12, 8)
    y = np.asarray(model(np.ones((2, 32, 32, 1), "float32")))
    assert np.all(np.isfinite(y))


class _FixedRng:
    """Stands in for numpy's Generator: uniform() returns the given values (for exact geometry checks)."""

    def __init__(self, **values):
        self.values = values

    def uniform(self, low, high, size):
        key = "scale" if (low, high) == (0.7, 1.2) else "angle" if low < -1 else "shift"
        return np.broadcast_to(np.asarray(self.values[key], float), size).copy()


def test_distortions_are_seeded_and_have_the_papers_sizes():
    from cnnctl.data.distort import distort

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28)).astype(np.uint8)
    for kind, size in (("R", 28), ("RTS", 42), ("P", 28), ("E", 28), ("cluttered", 60)):
        a, b, c = distort(images, kind, 0), distort(images, kind, 0), distort(images, kind, 1)
        assert a.shape == (6, size, size) and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_rts_geometry_and_rotation_by_90_degrees():
    from cnnctl.data.distort import rotate, rotate_translate_scale

    img = np.zeros((1, 28, 28), np.uint8)
    img[0, 5:12, 3:20] = 200
    # No rotation, scale 1, no shift: the image sits centred on the 42x42 canvas, unchanged.
    out = rotate_translate_scale(img, _FixedRng(angle=0.0, scale=1.0, shift=0.0))
    np.testing.assert_array_equal(out[0, 7:35, 7:35], img[0])
    assert out[0].sum() == img[0].sum()
    # A 90-degree rotation is np.rot90 (exact on the pixel grid).
    rot = rotate(img, _FixedRng(angle=90.0))
    assert np.array_equal(rot[0], np.rot90(img[0], 1)) or np.array_equal(rot[0], np.rot90(img[0], -1))


def test_cluttered_keeps_the_whole_object_and_adds_clutter():
    from cnnctl.data.distort import distort

    img = np.zeros((3, 28, 28), np.uint8)
    img[:, 10:18, 10:18] = 255
    out = distort(img, "cluttered", 0)
    for canvas in out:
        assert (canvas == 255).sum() >= 64                    # the 8x8 object block is intact somewhere
    assert out.shape == (3, 60, 60)
