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


@pytest.mark.parametrize("shape,filters,activation,kernel,padding", [
    ((7, 7, 16), 8, None, 4, "same"), ((14, 14, 8), 1, "tanh", 4, "same"), ((5, 6, 3), 12, "relu", 4, "same"),
    ((6, 5, 16), 8, None, 2, "valid"), ((4, 4, 3), 5, "relu", 2, "same")])       # U-Net's up-convolution
def test_transposed_layer_matches_keras_with_gradients(shape, filters, activation, kernel, padding):
    fast, plain = _pair(StrideTwoConv2DTranspose, keras.layers.Conv2DTranspose, shape, filters=filters,
                        kernel_size=kernel, strides=2, padding=padding, activation=activation)
    x = tf.constant(np.random.default_rng(2).normal(size=(4, *shape)), tf.float32)
    np.testing.assert_allclose(fast(x).numpy(), plain(x).numpy(), atol=1e-5)
    for order in (1, 2):
        for g_fast, g_plain in zip(_grads(fast, x, order), _grads(plain, x, order), strict=True):
            np.testing.assert_allclose(g_fast.numpy(), g_plain.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,filters", [((28, 28, 1), 8), ((14, 14, 8), 16), ((7, 9, 12), 4)])
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


def _op_types(layer, x):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x) ** 2)
        return tape.gradient(y, [x, layer.kernel])

    return {op.type for op in step.get_concrete_function(x).graph.get_operations()}


def test_wide_layers_avoid_conv2d_backprop_input_and_narrow_ones_keep_keras():
    """The point of the layers: no Conv2DBackpropInput where the sub-pixel form is faster."""
    from cnnctl.layers.stride_two_conv import MIN_SUBPIXEL_CHANNELS as MIN

    cases = [(StrideTwoConv2DTranspose(MIN, 4, strides=2, padding="same"), (7, 7, 16), False),
             (StrideTwoConv2D(16, 4, strides=2, padding="same"), (14, 14, MIN), False),
             (StrideTwoConv2DTranspose(8, 2, strides=2), (6, 6, 16), False),         # U-Net's up-convolution
             (StrideTwoConv2DTranspose(MIN - 1, 4, strides=2, padding="same"), (7, 7, 16), True),
             (StrideTwoConv2D(16, 4, strides=2, padding="same"), (14, 14, MIN - 1), True)]
    for layer, shape, keras_kernel in cases:
        x = tf.zeros((2, *shape))
        layer(x)
        assert ("Conv2DBackpropInput" in _op_types(layer, x)) == keras_kernel, (layer.name, shape)
