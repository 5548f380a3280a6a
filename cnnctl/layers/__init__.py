"""Layers Keras 3 lacks or does slowly; all registered serializables (``.keras`` round trip, safe_mode)."""

from cnnctl.layers.batch_norm import FusedBatchNormalization
from cnnctl.layers.locally_connected import LocallyConnected2D
from cnnctl.layers.lrn import LocalResponseNormalization
from cnnctl.layers.neighbours import NearestNeighbours
from cnnctl.layers.pixel_shuffle import DepthToSpace, SpaceToDepth
from cnnctl.layers.roi_pool import RoIPool, roi_pool
from cnnctl.layers.spatial_transformer import (
           SpatialTransformer,
           affine_grid,
           bilinear_sample,
)
from cnnctl.layers.stride_two_conv import StrideTwoConv2D, StrideTwoConv2DTranspose
from cnnctl.layers.switches import MaxPoolWithSwitches, MaxUnpool

__all__ = [
           "DepthToSpace",
           "FusedBatchNormalization",
           "LocalResponseNormalization",
           "LocallyConnected2D",
           "MaxPoolWithSwitches",
           "MaxUnpool",
           "NearestNeighbours",
           "RoIPool",
           "SpaceToDepth",
           "SpatialTransformer",
           "StrideTwoConv2D",
           "StrideTwoConv2DTranspose",
           "affine_grid",
           "bilinear_sample",
           "roi_pool",
]
