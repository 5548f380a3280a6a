"""Local Response Normalization (AlexNet).

Krizhevsky, Sutskever, Hinton. "ImageNet Classification with Deep
Convolutional Neural Networks." NIPS 2012, section 3.3:

    b[x, y, i] = a[x, y, i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N-1, i + n/2)} a[x, y, j]^2) ^ beta

with k = 2, n = 5, alpha = 1e-4, beta = 0.75 (alpha multiplies the plain sum,
not the mean, as in the paper and in ``tf.nn.local_response_normalization``).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cnnctl")
class LocalResponseNormalization(keras.layers.Layer):
    """Normalise each channel by the energy of its ``size`` neighbouring channels (channels last).

    Args:
        size: n, the number of adjacent channels summed (odd).
        k: additive constant.
        alpha: scale of the sum of squares.
        beta: exponent.
    """

    def __init__(self, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd number, got {size}")
        self.size, self.k, self.alpha, self.beta = int(size), float(k), float(alpha), float(beta)

    def call(self, x):
        x32 = ops.cast(x, "float32")  # (b, h, w, c); squares overflow float16 / lose bits in bfloat16
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            y = tf.nn.local_response_normalization(x32, depth_radius=self.size // 2, bias=self.k,
                                                   alpha=self.alpha, beta=self.beta)
        else:
            r = self.size // 2
            sq = ops.pad(ops.square(x32), [[0, 0], [0, 0], [0, 0], [r, r]])
            c = x32.shape[-1]
            window = sum(sq[..., i:i + c] for i in range(self.size))  # (b, h, w, c) sums over n channels
            y = x32 / ops.power(self.k + self.alpha * window, self.beta)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "k": self.k, "alpha": self.alpha, "beta": self.beta}
