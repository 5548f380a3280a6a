"""Stride-2 (transposed) convolutions without TensorFlow's slow ``Conv2DBackpropInput``: DCGAN's 4x4
and U-Net's 2x2 up-convolution.

A 4x4 stride-2 "same" transposed convolution (G's fractionally-strided layers) and the input
gradient of a 4x4 stride-2 "same" convolution (D's strided layers, back-propagated on every G and D
update) are one and the same operation. TensorFlow runs it as ``Conv2DBackpropInput``, which on CPU
(oneDNN) takes 2-4x as long as a forward convolution of the same multiply-adds
(``benchmarks/dcgan_layers.py``). Here it is computed as a sub-pixel convolution (Shi et al. 2016):
each of the 4 output phases (row parity a, column parity b) of the 2x-upsampled map is a 2x2
stride-1 convolution of the input padded by one pixel, with the kernel taps of that phase, and
``depth_to_space`` interleaves the phases. Same multiply-adds, forward-convolution kernels only.

A 2x2 stride-2 transposed convolution (U-Net's up-convolution) has no overlap between its windows:
each input pixel writes its own 2x2 output block, so it is one matrix product (b h w, c_in) x
(c_in, 4 c_out) and ``depth_to_space``, and its gradients are matrix products too.

``StrideTwoConv2DTranspose`` and ``StrideTwoConv2D`` are Keras' ``Conv2DTranspose`` and ``Conv2D``
(same weights, same config, same results to float rounding) that use it, with hand-written
gradients made of forward convolutions and ``Conv2DBackpropFilter`` (when the transposed direction
writes at least ``MIN_SUBPIXEL_CHANNELS`` channels); every gradient is itself
differentiable (WGAN-GP's penalty differentiates through D's input gradient). Any other kernel
size, stride, padding, dilation or data format, and backends other than TensorFlow, use Keras'
implementation.
"""

from __future__ import annotations

import keras

# The sub-pixel form wins when the transposed convolution writes many channels; writing one or a few
# (DCGAN's 64 -> 1 output layer, and the input gradient of D's first layer on a grey image) it is
# slower than TensorFlow's kernel (benchmarks/dcgan_layers.py), so those keep Keras' computation.
MIN_SUBPIXEL_CHANNELS = 8

# Output phase -> the kernel taps (along one axis) that reach it, in the order of the padded input
# rows m, m + 1 of a 2x2 window. From out[o] = sum over (i, k) with o = 2i + k - 1 of x[i] * w[k]
# (stride 2, kernel 4, "same" padding of 1 before): out[2m] = x[m-1] w[3] + x[m] w[1] and
# out[2m+1] = x[m] w[2] + x[m+1] w[0]; with the input padded by one, x[m-1] is padded row m.
_PHASE_TAPS = {0: (3, 1), 1: (2, 0)}


def conv_transpose_4x4_stride_2(x, kernel):
    """``tf.nn.conv2d_transpose(x, kernel, stride 2, "SAME")`` for a 4x4 kernel, as 4 sub-pixel phases.

    x: (b, h, w, c_in); kernel: (4, 4, c_out, c_in), the transposed convolution's layout.
    Returns (b, 2h, 2w, c_out).
    """
    import tensorflow as tf

    h, w, c_out = x.shape[1], x.shape[2], kernel.shape[2]
    phases = [(a, b) for a in (0, 1) for b in (0, 1)]            # depth_to_space's channel order
    taps = [tf.gather(tf.gather(kernel, _PHASE_TAPS[a], axis=0), _PHASE_TAPS[b], axis=1) for a, b in phases]
    stacked = tf.transpose(tf.concat(taps, axis=2), (0, 1, 3, 2))  # (2, 2, c_in, 4 c_out)
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    y = tf.nn.conv2d(padded, stacked, 1, "VALID")                  # (b, h + 1, w + 1, 4 c_out)
    # Phase (a, b) starts at padded row a, column b of the window grid.
    y = tf.concat([y[:, a:a + h, b:b + w, i * c_out:(i + 1) * c_out] for i, (a, b) in enumerate(phases)], axis=-1)
    return tf.nn.depth_to_space(y, 2)


def conv_transpose_2x2_stride_2(x, kernel):
    """``conv2d_transpose(x, kernel, stride 2)`` for a 2x2 kernel (4, 4 -> no overlap, "same" = "valid").

    x: (b, h, w, c_in); kernel: (2, 2, c_out, c_in). out[2i + a, 2j + b] = x[i, j] @ kernel[a, b].T.
    Returns (b, 2h, 2w, c_out)."""
    import tensorflow as tf

    c_out, c_in = kernel.shape[2], kernel.shape[3]
    # (c_in, 4 c_out), column (2a + b) c_out + o: depth_to_space's channel order
    matrix = tf.reshape(tf.transpose(kernel, (3, 0, 1, 2)), (c_in, 4 * c_out))
    shape = tf.shape(x)
    y = tf.reshape(tf.matmul(tf.reshape(x, (-1, c_in)), matrix), tf.concat([shape[:3], [4 * c_out]], axis=0))
    return tf.nn.depth_to_space(y, 2)


def _filter_gradient(inputs, kernel, out_grad):
    """d(loss)/d(kernel) of conv2d(inputs, kernel, stride 2, SAME): kernel (4, 4, c_in, c_out)."""
    import tensorflow as tf

    return tf.raw_ops.Conv2DBackpropFilter(input=inputs, filter_sizes=tf.shape(kernel), out_backprop=out_grad,
                                           strides=[1, 2, 2, 1], padding="SAME")


def _conv_transpose(x, kernel):
    """conv2d_transpose with gradients: dx is the strided forward convolution of dy."""
    import tensorflow as tf

    @tf.custom_gradient
    def op(x, kernel):
        def grad(dy):
            return tf.nn.conv2d(dy, kernel, 2, "SAME"), _filter_gradient(dy, kernel, x)
        return conv_transpose_4x4_stride_2(x, kernel), grad

    return op(x, kernel)


def _conv(x, kernel):
    """conv2d(x, kernel, stride 2, SAME) with gradients: dx is the sub-pixel transposed convolution.

    For an odd side n the convolution pads 1 before and 2 after, so dx is the transposed
    convolution's (n + 1)-row map less its last row."""
    import tensorflow as tf

    h, w = x.shape[1], x.shape[2]

    @tf.custom_gradient
    def op(x, kernel):
        def grad(dy):
            return _conv_transpose(dy, kernel)[:, :h, :w], _filter_gradient(x, kernel, dy)
        return tf.nn.conv2d(x, kernel, 2, "SAME"), grad

    return op(x, kernel)


def _applies(layer, inputs, kernel=(4, 4), paddings=("same",)) -> bool:
    return (keras.backend.backend() == "tensorflow" and tuple(layer.kernel_size) == kernel
            and tuple(layer.strides) == (2, 2) and layer.padding in paddings and tuple(layer.dilation_rate) == (1, 1)
            and layer.data_format == "channels_last" and len(inputs.shape) == 4
            and inputs.shape[1] is not None and inputs.shape[2] is not None)


def _bias_and_activation(layer, outputs):
    if layer.use_bias:
        outputs = keras.ops.add(outputs, keras.ops.reshape(layer.bias, (1, 1, 1, layer.filters)))
    return outputs if layer.activation is None else layer.activation(outputs)


@keras.saving.register_keras_serializable(package="cnnctl")
class StrideTwoConv2DTranspose(keras.layers.Conv2DTranspose):
    """``keras.layers.Conv2DTranspose``; a 4x4 stride-2 "same" one runs as a sub-pixel convolution, a
    2x2 stride-2 one as a matrix product."""

    def call(self, inputs):
        if self.output_padding is not None:
            return super().call(inputs)
        import tensorflow as tf

        if _applies(self, inputs) and self.filters >= MIN_SUBPIXEL_CHANNELS:
            return _bias_and_activation(self, _conv_transpose(inputs, tf.convert_to_tensor(self.kernel)))
        if _applies(self, inputs, kernel=(2, 2), paddings=("same", "valid")):
            return _bias_and_activation(self, conv_transpose_2x2_stride_2(inputs, tf.convert_to_tensor(self.kernel)))
        return super().call(inputs)


@keras.saving.register_keras_serializable(package="cnnctl")
class StrideTwoConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D``; a 4x4 stride-2 "same" one back-propagates through a sub-pixel convolution."""

    def call(self, inputs):
        # the input gradient is a transposed convolution writing the input's channels
        if self.groups != 1 or not _applies(self, inputs) or inputs.shape[-1] < MIN_SUBPIXEL_CHANNELS:
            return super().call(inputs)
        import tensorflow as tf

        return _bias_and_activation(self, _conv(inputs, tf.convert_to_tensor(self.kernel)))
