"""Max pooling that records where each maximum came from ("switches"), and the unpooling that puts
values back there: ZFNet's deconvnet (Zeiler & Fergus 2014, sec. 2.1) and SegNet's decoder
(Badrinarayanan et al. 2017) use the same pair. ``cnnctl visualize deconvnet`` and ``segnet_small``
share these functions.
"""

from __future__ import annotations

import keras
import numpy as np


def max_pool_with_switches(x, size, strides, padding: str = "valid"):
    """(pooled, switches): switches (b, h', w', c) int64 hold the flat index (in the whole input batch)
    of each maximum."""
    import tensorflow as tf

    pooled, switches = tf.nn.max_pool_with_argmax(x, ksize=size, strides=strides, padding=padding.upper(),
                                                  include_batch_in_index=True)
    return pooled, switches


def unpool(signal, switches, input_shape):
    """Place each pooled value back at the position its switch recorded; zeros elsewhere.
    ``input_shape``: the pooled input's shape (a tuple, or a shape tensor with a dynamic batch)."""
    import tensorflow as tf

    if tf.is_tensor(input_shape):
        total = tf.reduce_prod(tf.cast(input_shape, tf.int64))
    else:
        total = tf.constant(int(np.prod(input_shape)), tf.int64)
    switches = tf.cast(switches, tf.int64)
    flat = tf.scatter_nd(tf.reshape(switches, (-1, 1)), tf.reshape(signal, (-1,)), tf.reshape(total, (1,)))
    return tf.reshape(flat, input_shape)


@keras.saving.register_keras_serializable(package="cnnctl")
class MaxPoolWithSwitches(keras.layers.Layer):
    """2x2 (``pool_size``) max pooling -> [pooled (b, h/2, w/2, c), switches (b, h/2, w/2, c) int64]."""

    def __init__(self, pool_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)

    def call(self, x):
        p = self.pool_size
        return list(max_pool_with_switches(x, (p, p), (p, p)))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        p = self.pool_size
        out = (b, None if h is None else h // p, None if w is None else w // p, c)
        return [out, out]

    def compute_output_spec(self, x):
        shape = self.compute_output_shape(x.shape)[0]
        return [keras.KerasTensor(shape, dtype=x.dtype), keras.KerasTensor(shape, dtype="int64")]

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="cnnctl")
class MaxUnpool(keras.layers.Layer):
    """[signal (b, h', w', c), switches, like (b, h, w, c)] -> (b, h, w, c): each value at its switch."""

    def call(self, inputs):
        import tensorflow as tf

        signal, switches, like = inputs
        return unpool(signal, switches, tf.shape(like, out_type=tf.int64))

    def compute_output_shape(self, input_shapes):
        return input_shapes[2]

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[2].shape, dtype=inputs[0].dtype)
