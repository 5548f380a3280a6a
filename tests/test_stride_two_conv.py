"""The sub-pixel 4x4 stride-2 convolutions compute what Keras' layers compute, gradients included."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnctl.layers import StrideTwoConv2D, StrideTwoConv2DTranspose
from cnnctl.layers.stride_two_conv import conv_transpose_4x4_stride_2


def _pair(fast_cls, plain_cls, input_shape, **kwargs):
    """(fast, plain) layers with the same random weights (bias included) on ``input_shape``."""
    fast, plain = fast_cls(**kwargs), plain_cls(**kwargs)
    fast.build((None, *input_shape))
    plain.build((None, *input_shape))
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.1, w.shape).astype("float32") for w in plain.get_weights()]
    fast.set_weights(weights)
    plain.set_weights(weights)
    return fast, plain


def _grads(layer, x, order: int):
    """First order: d(sum(y^2))/d(x, weights). Second order (WGAN-GP's penalty): d(|dy/dx|^2)/d(weights)."""
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        first = inner.gradient(loss, [x, *layer.trainable_variables])
        penalty = tf.reduce_sum(first[0] ** 2)
    return first if order == 1 else outer.gradient(penalty, layer.trainable_variables)


def test_sub_pixel_op_is_tensorflows_transposed_convolution():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(3, 5, 6, 4)), tf.float32)          # non-square, odd side
    kernel = tf.constant(rng.normal(size=(4, 4, 7, 4)), tf.float32)    # (kh, kw, out, in)
    want = tf.nn.conv2d_transpose(x, kernel, (3, 10, 12, 7), 2, "SAME")
    np.testing.assert_allclose(conv_transpose_4x4_stride_2(x, kernel).numpy(), want.numpy(), atol=1e-4)


@pytest.mark.parametrize("shape,filters,activation", [((7, 7, 16), 8, None), ((14, 14, 8), 1, "tanh"),
                                                      ((5, 6, 3), 4, "relu")])
def test_transposed_layer_matches_keras_with_gradients(shape, filters, activation):
    fast, plain = _pair(StrideTwoConv2DTranspose, keras.layers.Conv2DTranspose, shape, filters=filters,
                        kernel_size=4, strides=2, padding="same", activation=activation)
    x = tf.constant(np.random.default_rng(2).normal(size=(4, *shape)), tf.float32)
    np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), atol=1e-5)
    for order in (1, 2):
        for g_fast, g_plain in zip(_grads(fast, x, order), _grads(plain, x, order), strict=True):
            np.testing.assert_allclose(g_fast.numpy(), g_plain.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,filters", [((28, 28, 1), 8), ((14, 14, 8), 16), ((7, 9, 4), 4)])
def test_strided_layer_matches_keras_with_gradients(shape, filters):
    """Odd sides (7, 9) pad 1 before and 2 after: the input gradient must drop the extra row."""
    fast, plain = _pair(StrideTwoConv2D, keras.layers.Conv2D, shape, filters=filters, kernel_size=4, strides=2,
                        padding="same", activation="relu")
    x = tf.constant(np.random.default_rng(3).normal(size=(4, *shape)), tf.float32)
    np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), atol=1e-5)
    for order in (1, 2):
        for g_fast, g_plain in zip(_grads(fast, x, order), _grads(plain, x, order), strict=True):
            np.testing.assert_allclose(g_fast.numpy(), g_plain.numpy(), rtol=1e-4, atol=1e-4)


def test_layers_round_trip_through_a_keras_file(tmp_path):
    inputs = keras.Input((8, 8, 3))
    h = StrideTwoConv2D(4, 4, strides=2, padding="same", name="down")(inputs)
    outputs = StrideTwoConv2DTranspose(2, 4, strides=2, padding="same", name="up")(h)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(la).__name__ for la in loaded.layers[1:]] == ["StrideTwoConv2D", "StrideTwoConv2DTranspose"]
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict_on_batch(x), model.predict_on_batch(x))
