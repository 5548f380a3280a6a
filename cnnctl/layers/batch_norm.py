"""Batch normalisation through TensorFlow's fused kernel.

Keras 3's ``BatchNormalization`` on the TensorFlow backend computes moments
and normalises with separate ops (``tf.nn.moments`` + ``tf.nn.batch_normalization``),
and so does its gradient: several passes over every activation. At the 16-64
channels of CIFAR ResNets that memory traffic dominates a CPU training step.
``FusedBatchNormalization`` is the same layer (same weights, same ``get_config``,
same frozen-layer rule) computing NHWC batches with ``FusedBatchNormV3`` and
its fused gradient (oneDNN on CPU, cuDNN on GPU). Measured on ResNet-20,
batch 128, 2-core CPU: 499 -> 714 images/s float32, 565 -> 1146 mixed_bfloat16
(benchmarks/train_throughput.py).

Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift", ICML 2015, Algorithm 1 (moving averages
as in Keras: ``moving = momentum * moving + (1 - momentum) * batch``, with the
biased batch variance).
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="cnnctl")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` over the last axis of 4-D inputs, with the fused kernel.

    Other ranks or axes, and backends other than TensorFlow, use the Keras
    implementation. As in Keras 3, a layer with ``trainable=False`` runs in
    inference mode (moving statistics, no updates) even when the model trains.
    """

    def _fusable(self, inputs) -> bool:
        axis = self.axis if isinstance(self.axis, int) else (self.axis[0] if len(self.axis) == 1 else None)
        return (keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                and axis in (-1, 3) and inputs.shape[-1] is not None)

    def call(self, inputs, training=None, mask=None):
        if mask is not None or not self._fusable(inputs):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        x = tf.cast(inputs, self.compute_dtype)  # (b, h, w, c); float32, bfloat16 or float16
        if training and self.trainable:
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the unbiased (n - 1) variance; Keras' moving variance uses the biased one.
            n = tf.cast(tf.size(x) // channels, tf.float32)
            var = var * (n - 1.0) / tf.maximum(n, 2.0)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1.0 - m))
            self.moving_variance.assign(
                self.moving_variance * m + tf.cast(var, self.moving_variance.dtype) * (1.0 - m))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return y
