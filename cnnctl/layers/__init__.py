"""Layers Keras 3 lacks or does slowly; all registered serializables (``.keras`` round trip, safe_mode)."""

from cnnctl.layers.batch_norm import FusedBatchNormalization

__all__ = ["FusedBatchNormalization"]
