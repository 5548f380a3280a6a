"""Rearranging pixels into channels and back (Shi et al. 2016, "Real-time single image and video
super-resolution using an efficient sub-pixel convolutional neural network", the periodic shuffle).

``SpaceToDepth(r)``: (b, H, W, c) -> (b, H/r, W/r, r*r*c), each r x r block of pixels becomes the
channels of one position (nothing is lost). ``DepthToSpace(r)`` is its inverse: r*r*c channels ->
an r x r block of c-channel pixels (the "sub-pixel convolution" output). The channel order is
TensorFlow's ``space_to_depth``: channel ``(dy * r + dx) * c + k`` is pixel (dy, dx) of the block.
"""

from __future__ import annotations

import keras


class _Shuffle(keras.layers.Layer):
    def __init__(self, block_size: int, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, not {block_size}")

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="cnnctl")
class SpaceToDepth(_Shuffle):
    """(b, H, W, c) -> (b, H/r, W/r, r*r*c)."""

    def call(self, x):
        import tensorflow as tf

        return tf.nn.space_to_depth(x, self.block_size) if self.block_size > 1 else x

    def compute_output_shape(self, s):
        r = self.block_size
        return (s[0], None if s[1] is None else s[1] // r, None if s[2] is None else s[2] // r, s[3] * r * r)


@keras.saving.register_keras_serializable(package="cnnctl")
class DepthToSpace(_Shuffle):
    """(b, h, w, r*r*c) -> (b, h*r, w*r, c)."""

    def call(self, x):
        import tensorflow as tf

        return tf.nn.depth_to_space(x, self.block_size) if self.block_size > 1 else x

    def compute_output_shape(self, s):
        r = self.block_size
        return (s[0], None if s[1] is None else s[1] * r, None if s[2] is None else s[2] * r, s[3] // (r * r))
