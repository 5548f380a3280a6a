"""Batch norm folded into the convolution before it, for inference.

In inference a batch norm is a per-channel affine map, ``y = s * (x - mean) + beta`` with
``s = gamma / sqrt(var + eps)``, so a convolution followed by one is a single convolution with kernel
``k * s`` (per output channel) and bias ``beta + (b - mean) * s``. TensorFlow's graph optimiser does
this fusion itself in float32 (oneDNN ``_MklNativeFusedConv2D``) but not under mixed_bfloat16, where
every batch norm and ReLU6 then runs as its own op: EfficientNet-Lite0 at batch 32 on one core took
419 ms in bf16 unfolded and 210 ms folded (394 ms in float32; benchmarks/inference_profile.py).
``folded_copy`` returns a copy of a functional model with every such pair folded; the original is
untouched (training needs its batch norms).

A pair is folded when the batch norm normalises the last axis, has one call, and its input is the
output of a Conv2D or DepthwiseConv2D (channels_last, no activation of its own) called once and used
by nothing else. Nested functional models are folded the same way; anything else is copied as it is.
"""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="cnnctl")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a folded batch norm was: passes its input through (its scale and shift are in the
    convolution before it). Takes the batch norm's call arguments."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def _producer(tensor):
    return tensor._keras_history[0]


def fold_pairs(model) -> dict[str, keras.layers.Layer]:
    """{convolution layer name: the batch norm folded into it} for ``model``'s top-level layers."""
    pairs = {}
    for bn in model.layers:
        if not isinstance(bn, keras.layers.BatchNormalization) or bn.axis not in (-1, 3):
            continue
        if len(bn._inbound_nodes) != 1:
            continue
        conv = _producer(bn.input)
        if (isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
                and conv.data_format == "channels_last" and getattr(conv.activation, "__name__", "") == "linear"
                and len(conv._inbound_nodes) == 1 and len(conv._outbound_nodes) == 1 and len(bn.input.shape) == 4):
            pairs[conv.name] = bn
    return pairs


def _folded_kernel_and_bias(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    kernel = np.asarray(conv.kernel.numpy(), np.float64)
    bias = np.asarray(conv.bias.numpy(), np.float64) if conv.use_bias else 0.0
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else 1.0
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else 0.0
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance.numpy(), np.float64) + bn.epsilon)
    if isinstance(conv, keras.layers.DepthwiseConv2D):   # (kh, kw, c_in, mult): output channel c * mult + m
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:                                                # (kh, kw, c_in / groups, c_out)
        kernel = kernel * scale
    new_bias = beta + (bias - np.asarray(bn.moving_mean.numpy(), np.float64)) * scale
    return kernel.astype(np.float32), new_bias.astype(np.float32)


def is_functional(model) -> bool:
    """A plain functional or Sequential model (not a subclass with its own ``call``)."""
    from keras.src.models.functional import Functional

    return type(model) in (Functional, keras.Sequential)


def folded_copy(model, policy: str | None = None):
    """-> (a copy of functional ``model`` with its conv + batch norm pairs folded, pairs folded).

    ``policy`` ("float32" or "mixed_bfloat16"): the copy computes in that Keras dtype policy instead of
    the one each layer was saved with (every layer whose policy is one of those two).
    """
    pairs = fold_pairs(model)
    folded_bns = {bn.name for bn in pairs.values()}
    nested: dict[str, tuple] = {}

    def clone(layer):
        if is_functional(layer):
            nested[layer.name] = folded_copy(layer, policy)
            return nested[layer.name][0]
        config = layer.get_config()
        if policy and "dtype" in config and getattr(layer.dtype_policy, "name", "") in ("float32", "mixed_bfloat16"):
            config["dtype"] = policy
        if layer.name in pairs:
            return layer.__class__.from_config({**config, "use_bias": True})
        if layer.name in folded_bns:
            return FoldedBatchNorm(name=layer.name, dtype=policy or layer.dtype_policy)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name in folded_bns or layer.name in nested or not layer.weights:
            continue
        target = copy.get_layer(layer.name)
        if layer.name in pairs:
            kernel, bias = _folded_kernel_and_bias(layer, pairs[layer.name])
            target.kernel.assign(kernel)
            target.bias.assign(bias)
        else:
            for mine, theirs in zip(target.weights, layer.weights, strict=True):
                mine.assign(theirs)
    return copy, len(pairs) + sum(n for _, n in nested.values())
