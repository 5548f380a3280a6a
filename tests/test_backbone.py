"""Every classifier as a backbone: named multi-scale feature maps found from the graph."""

from __future__ import annotations

import numpy as np
import pytest

from cnnctl import models
from cnnctl.errors import CnnctlError
from cnnctl.models.backbone import backbone, pyramid_outputs, split_head


def _levels(name, shape):
    model = models.build(name, num_classes=10, input_shape=shape)
    return model, {k: (int(v.shape[1]), int(v.shape[-1]), v._keras_history.operation.name)
                   for k, v in pyramid_outputs(model).items()}


def test_resnet50_gives_its_stage_outputs_at_strides_2_to_32():
    _, levels = _levels("resnet50", (224, 224, 3))
    assert levels == {"P1": (112, 64, "conv1_relu"), "P2": (56, 256, "conv2_3_out"), "P3": (28, 512, "conv3_4_out"),
                      "P4": (14, 1024, "conv4_6_out"), "P5": (7, 2048, "conv5_3_out")}


def test_inception_levels_are_block_outputs_never_a_branch_and_valid_padding_lands_on_its_level():
    # 299 -> 147 -> 71 -> 35 -> 17 -> 8 (valid padding): the concatenations that end each grid size,
    # not the 35x35 branch convolutions inside the reduction block that follows them.
    _, levels = _levels("inception_v3", (299, 299, 3))
    assert [levels[k][2] for k in ("P3", "P4", "P5")] == ["mixed2", "mixed7", "mixed10"]
    assert [levels[k][0] for k in ("P3", "P4", "P5")] == [35, 17, 8]
    _, levels = _levels("alexnet", (227, 227, 3))                       # 227 -> 55 -> 27 -> 13 -> 6
    assert {k: v[0] for k, v in levels.items()} == {"P2": 55, "P3": 27, "P4": 13, "P5": 6}


def test_auxiliary_heads_are_not_features():
    _, levels = _levels("googlenet", (224, 224, 3))
    assert list(levels) == ["P1", "P2", "P3", "P4", "P5"]               # the aux heads' 4x4 maps are left out
    assert levels["P5"] == (7, 1024, "inception_5b_concat")


def test_a_backbone_model_shares_the_classifiers_weights_and_splits_its_head():
    model = models.build("fashion_cnn", num_classes=10, input_shape=(28, 28, 1))
    body = backbone(model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 28, 28, 1)).astype("float32")
    maps = body(x)
    assert {k: tuple(v.shape) for k, v in maps.items()} == {"P1": (2, 14, 14, 64), "P2": (2, 7, 7, 64)}
    assert body.get_layer("conv1") is model.get_layer("conv1")           # the same layers, the same weights
    features, head = split_head(model)
    assert head.units == 10 and len(features.shape) == 2
    with pytest.raises(CnnctlError, match="no feature map at level"):
        backbone(model, ["P4"])
