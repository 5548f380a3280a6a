"""Locally connected 2-D layer (unshared weights), which Keras 3 no longer has.

Each output position (i, j) has its own kernel: for valid padding and
strides (sh, sw),

    y[b, i, j, f] = sum_{di, dj, c} x[b, i*sh + di, j*sw + dj, c] * K[i*ow + j, (di*kw + dj)*C + c, f] + bias[i, j, f]

Taigman et al., "DeepFace: Closing the Gap to Human-Level Performance in Face
Verification", CVPR 2014, section 3 (layers L4-L6): "every location in the
feature map learns a different set of filters".
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cnnctl")
class LocallyConnected2D(keras.layers.Layer):
    """Unshared-weight convolution with valid padding (channels last).

    Args:
        filters: output channels.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        activation, use_bias, kernel_initializer, bias_initializer: as in ``keras.layers.Conv2D``.
    """

    def __init__(self, filters: int, kernel_size, strides=1, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _out_hw(self, h, w):
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        return (h - kh) // sh + 1, (w - kw) // sw + 1

    def build(self, input_shape):
        _, h, w, c = input_shape
        if h is None or w is None:
            raise ValueError("LocallyConnected2D needs a fixed input height and width")
        oh, ow = self._out_hw(h, w)
        if oh < 1 or ow < 1:
            raise ValueError(f"input {h}x{w} is smaller than the kernel {self.kernel_size}")
        kh, kw = self.kernel_size
        self.out_hw = (oh, ow)
        # One (kh*kw*c, filters) kernel per output position.
        self.kernel = self.add_weight(name="kernel", shape=(oh * ow, kh * kw * c, self.filters),
                                      initializer=self.kernel_initializer)
        self.bias = (self.add_weight(name="bias", shape=(oh, ow, self.filters), initializer=self.bias_initializer)
                     if self.use_bias else None)

    def call(self, x):
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh, ow = self.out_hw
        c = x.shape[-1]
        rows = []
        # Patches in (di, dj, c) order: (b, oh, ow, kh*kw*c), built from strided slices so that
        # gradients flow on every backend.
        for di in range(kh):
            for dj in range(kw):
                rows.append(x[:, di:di + sh * (oh - 1) + 1:sh, dj:dj + sw * (ow - 1) + 1:sw, :])
        patches = ops.stack(rows, axis=3)                                   # (b, oh, ow, kh*kw, c)
        patches = ops.reshape(patches, (-1, oh * ow, kh * kw * c))          # (b, p, k)
        y = ops.einsum("bpk,pkf->bpf", patches, ops.cast(self.kernel, patches.dtype))
        y = ops.reshape(y, (-1, oh, ow, self.filters))
        if self.bias is not None:
            y = y + ops.cast(self.bias, y.dtype)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        oh, ow = self._out_hw(input_shape[1], input_shape[2])
        return (input_shape[0], oh, ow, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
