"""k-nearest-neighbour classification as a Keras layer (the CS231n baseline).

The "training" of a kNN classifier is memorising the training set: the
layer holds it as two non-trainable weights, ``memory`` (n, d) uint8 pixels
and ``memory_labels`` (n,) int32, filled by :meth:`NearestNeighbours.memorize`.
Because they are ordinary weights, a memorised classifier is an ordinary
``.keras`` file that ``cnnctl evaluate`` / ``predict`` load like any other
model.

Distances are computed exactly on the flattened pixels:
- L2: ``|q|^2 - 2 q.m + |m|^2``, one matrix product (b, d) x (d, n);
- L1: ``sum |q - m|`` over blocks of memory rows, so that the
  (b, block, d) difference tensor stays near 16 M elements.
The layer's output is log of the smoothed vote share of each class among
the k nearest neighbours, so softmax of it gives the vote shares; a tie is
broken towards the class of the single nearest neighbour.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

_BLOCK_ELEMENTS = 16 * 2**20  # bound on b x block x d for the L1 difference tensor
_TIE_BREAK = 1e-3             # vote bonus of the nearest neighbour's class (< one vote)


@keras.saving.register_keras_serializable(package="cnnctl")
class NearestNeighbours(keras.layers.Layer):
    """Vote of the ``k`` nearest memorised examples under the L1 or L2 distance.

    Args:
        memory_size: n, the number of training examples memorised.
        num_classes: k classes of the labels.
        k: neighbours that vote.
        metric: "l2" (Euclidean) or "l1" (Manhattan).

    Input (b, h, w, c) pixels in [0, 255]; output (b, num_classes) float32.
    """

    def __init__(self, memory_size: int, num_classes: int, k: int = 5, metric: str = "l2", **kwargs):
        kwargs["dtype"] = "float32"  # distances in bfloat16 would tie almost every neighbour
        super().__init__(**kwargs)
        if metric not in ("l1", "l2"):
            raise ValueError(f"metric must be 'l1' or 'l2', got {metric!r}")
        if not 1 <= k <= memory_size:
            raise ValueError(f"k must be between 1 and the memory size {memory_size}, got {k}")
        self.memory_size, self.num_classes, self.k, self.metric = int(memory_size), int(num_classes), int(k), metric

    def build(self, input_shape):
        dim = math.prod(int(s) for s in input_shape[1:])
        self.memory = self.add_weight(name="memory", shape=(self.memory_size, dim), dtype="uint8",
                                      initializer="zeros", trainable=False)
        self.memory_labels = self.add_weight(name="memory_labels", shape=(self.memory_size,), dtype="int32",
                                             initializer="zeros", trainable=False)

    def memorize(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Store ``images`` (n, h, w, c) in [0, 255] and integer ``labels`` (n,)."""
        images = np.asarray(images)
        if len(images) != self.memory_size or len(labels) != self.memory_size:
            raise ValueError(f"expected {self.memory_size} examples, got {len(images)} images / {len(labels)} labels")
        flat = np.clip(np.rint(images.reshape(len(images), -1)), 0, 255).astype(np.uint8)
        self.memory.assign(flat)
        self.memory_labels.assign(np.asarray(labels, dtype=np.int32))

    def distances(self, x):
        """(b, h, w, c) queries -> (b, n) distances to every memorised example."""
        q = ops.reshape(ops.cast(x, "float32"), (ops.shape(x)[0], -1))     # (b, d)
        m = ops.cast(self.memory, "float32")                                 # (n, d)
        if self.metric == "l2":
            sq = (ops.sum(q * q, axis=1, keepdims=True) - 2.0 * ops.matmul(q, ops.transpose(m))
                  + ops.sum(m * m, axis=1)[None, :])
            return ops.sqrt(ops.maximum(sq, 0.0))
        import tensorflow as tf

        dim = int(m.shape[1])
        block = max(1, min(self.memory_size, _BLOCK_ELEMENTS // (256 * dim)))
        blocks = -(-self.memory_size // block)
        padded = tf.pad(m, [[0, blocks * block - self.memory_size], [0, 0]])
        per_block = tf.map_fn(lambda mb: tf.reduce_sum(tf.abs(q[:, None, :] - mb[None]), axis=2),
                              tf.reshape(padded, (blocks, block, dim)),
                              fn_output_signature=tf.TensorSpec((None, block), tf.float32))  # (blocks, b, block)
        return tf.reshape(tf.transpose(per_block, (1, 0, 2)), (-1, blocks * block))[:, :self.memory_size]

    def call(self, x):
        d = self.distances(x)                                                # (b, n)
        _, nearest = ops.top_k(-d, self.k)                                   # (b, k), nearest first
        labels = ops.take(self.memory_labels, nearest)                       # (b, k)
        votes = ops.sum(ops.one_hot(labels, self.num_classes), axis=1)       # (b, classes)
        votes = votes + _TIE_BREAK * ops.one_hot(labels[:, 0], self.num_classes)
        return ops.log((votes + 1e-6) / (self.k + _TIE_BREAK))

    def compute_output_shape(self, shape):
        return (shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(memory_size=self.memory_size, num_classes=self.num_classes, k=self.k, metric=self.metric)
        return config
