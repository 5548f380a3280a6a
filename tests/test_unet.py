"""U-Net as Fig. 1 of Ronneberger et al. 2015 draws it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cnnctl.models import trainable_params
from cnnctl.models.unet import output_size, unet, valid_input_sizes


def _conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout                    # weights + biases


def test_the_paper_unet_has_fig_1s_shapes_layers_and_parameters():
    model = unet(num_classes=2)
    assert model.input_shape == (None, 572, 572, 1) and model.output_shape == (None, 388, 388, 2)
    convs = [la for la in model.layers if isinstance(la, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    assert len(convs) == 23                             # sec. 2: "In total the network has 23 convolutional layers"
    # Fig. 1's layer table, level by level (3x3 convolutions, 2x2 up-convolutions, the 1x1 output):
    # contracting: 1->64->64, 64->128->128, 128->256->256, 256->512->512, bottom 512->1024->1024
    down = sum(_conv(3, a, b) + _conv(3, b, b) for a, b in [(1, 64), (64, 128), (128, 256), (256, 512), (512, 1024)])
    # expansive: up-conv c -> c/2, then the concatenation (c/2 copied + c/2 up) c -> c/2 -> c/2
    up = sum(_conv(2, c, c // 2) + _conv(3, c, c // 2) + _conv(3, c // 2, c // 2) for c in (1024, 512, 256, 128))
    out = _conv(1, 64, 2)
    assert down == 18_842_048 and up == 12_188_480 and out == 130     # = 31,030,658 in all
    assert trainable_params(model) == down + up + out        # (the input scaling holds no trainable weight)
    # the crops: the 64-channel map of the first level is 568x568, cropped to 392x392 to meet the up-conv
    assert model.get_layer("down1_relu2").output.shape[1:3] == (568, 568)
    assert model.get_layer("up1_crop").output.shape[1:3] == (392, 392)


def test_valid_tile_sizes_and_the_options():
    assert output_size(572) == 388 and 572 in valid_input_sizes(600)
    with pytest.raises(ValueError, match="does not pool evenly"):
        unet(input_shape=(570, 570, 1))
    same = unet(num_classes=3, input_shape=(64, 64, 3), base_filters=8, depth=3, padding="same", batch_norm=True)
    assert same.output_shape == (None, 64, 64, 3)
    assert len([la for la in same.layers if isinstance(la, keras.layers.BatchNormalization)]) == 2 * (2 * 3 + 1)
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    assert np.isfinite(same(x, training=False).numpy()).all()
    with pytest.raises(ValueError, match="divisible by 8"):
        unet(input_shape=(60, 60, 1), depth=3, padding="same")


def test_the_stem_runs_the_levels_on_pixel_blocks_and_shuffles_the_logits_back(tmp_path):
    from cnnctl.layers import DepthToSpace, SpaceToDepth

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    blocks = SpaceToDepth(2)(x).numpy()                              # (2, 4, 6, 12)
    # channel (dy * 2 + dx) * 3 + k of block (i, j) is pixel (2i + dy, 2j + dx), channel k
    want = x.reshape(2, 4, 2, 6, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 4, 6, 12)
    np.testing.assert_array_equal(blocks, want)
    np.testing.assert_array_equal(DepthToSpace(2)(blocks).numpy(), x)

    model = unet(num_classes=3, input_shape=(64, 64, 1), base_filters=8, depth=2, padding="same", stem=4)
    assert model.output_shape == (None, 64, 64, 3)
    assert model.get_layer("down1_conv1").input.shape[1:] == (16, 16, 16)     # 4x4 blocks of one grey channel
    assert model.get_layer("subpixel_logits").output.shape[1:] == (16, 16, 48)
    images = rng.integers(0, 256, (2, 64, 64, 1)).astype("float32")
    logits = model(images, training=False).numpy()
    # each of a block's 16 pixels has its own logits (not one value copied over the block)
    assert not np.allclose(logits[:, 0::4, 0::4], logits[:, 1::4, 1::4])
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again(images, training=False).numpy(), logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="stem must be"):
        unet(input_shape=(64, 64, 1), padding="same", stem=3)
    with pytest.raises(ValueError, match="padding = 'same'"):
        unet(stem=2)
    with pytest.raises(ValueError, match="set model.stem = 1 with an encoder"):
        unet(input_shape=(64, 64, 1), padding="same", stem=4, encoder="fashion_cnn:fashion_mnist")
    with pytest.raises(ValueError, match="divisible by 32"):
        unet(input_shape=(48, 48, 1), depth=3, padding="same", stem=4)



def test_under_mixed_bfloat16_the_stem_logits_are_computed_in_bfloat16_and_returned_in_float32():
    """The sub-pixel 1x1 convolution runs in the policy's precision (speed); the shuffled logits the
    loss and ``predict`` read are float32."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = unet(num_classes=3, input_shape=(32, 32, 1), base_filters=8, depth=2, padding="same", stem=4,
                     stem_skip=1)
        out = model(np.zeros((1, 32, 32, 1), np.float32), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("subpixel_logits").compute_dtype == "bfloat16"
    assert model.get_layer("subpixel_logits").variable_dtype == "float32"
    assert out.dtype.name == "float32" and model.output.dtype == "float32"

def test_the_papers_dropout_widths_and_the_stem_skip():
    # dropout (sec. 3.1; the released model's dropout_d3c and dropout_d4c): after the deepest level's
    # pair, before its copy and its pooling, and after the bottom pair; none by default
    plain = unet(num_classes=3, input_shape=(64, 64, 1), base_filters=8, depth=2, padding="same")
    assert not [la for la in plain.layers if isinstance(la, keras.layers.Dropout)]
    drop = unet(num_classes=3, input_shape=(64, 64, 1), base_filters=8, depth=2, padding="same", dropout=0.5)
    assert [la.name for la in drop.layers if isinstance(la, keras.layers.Dropout)] == ["down2_dropout", "bottom_dropout"]
    assert drop.get_layer("down2_dropout").input is drop.get_layer("down2_relu2").output
    assert drop.get_layer("up2_concat").input[0] is drop.get_layer("down2_dropout").output
    assert trainable_params(drop) == trainable_params(plain)
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(drop(x, training=False).numpy(), drop(x, training=False).numpy())
    assert not np.allclose(drop(x, training=True).numpy(), drop(x, training=False).numpy())

    # widths: the contracting levels and the bottom, then the expansive levels (top first)
    wide = unet(num_classes=3, input_shape=(64, 64, 1), depth=2, padding="same", filters=[8, 24, 40],
                decoder_filters=[8, 16])
    down = _conv(3, 1, 8) + _conv(3, 8, 8) + _conv(3, 8, 24) + _conv(3, 24, 24) + _conv(3, 24, 40) + _conv(3, 40, 40)
    # up level 2: 2x2 up-conv 40 -> 16, concat with the 24-wide copy, 40 -> 16 -> 16; level 1: 16 -> 8, (8 + 8) -> 8 -> 8
    up = (_conv(2, 40, 16) + _conv(3, 40, 16) + _conv(3, 16, 16)) + (_conv(2, 16, 8) + _conv(3, 16, 8) + _conv(3, 8, 8))
    assert trainable_params(wide) == down + up + _conv(1, 8, 3)
    with pytest.raises(ValueError, match="3 numbers for depth 2"):
        unet(input_shape=(64, 64, 1), depth=2, padding="same", filters=[8, 16])
    with pytest.raises(ValueError, match="2 numbers for depth 2"):
        unet(input_shape=(64, 64, 1), depth=2, padding="same", decoder_filters=[8, 16, 32])

    # stem_skip: the sub-pixel output reads the 4x4 blocks (16 values) and 16 * n ramps of them
    base = unet(num_classes=3, input_shape=(64, 64, 1), base_filters=8, depth=2, padding="same", stem=4)
    skip = unet(num_classes=3, input_shape=(64, 64, 1), base_filters=8, depth=2, padding="same", stem=4, stem_skip=2)
    assert skip.get_layer("subpixel_logits").input.shape[-1] == 16 + 32 + 8
    assert trainable_params(skip) - trainable_params(base) == _conv(1, 16, 32) + (16 + 32) * 48
    assert skip.get_layer("stem_skip").input[0] is skip.get_layer("stem").output
    # without a stem the full-resolution levels give each pixel its own features: nothing to add (so a
    # stem recipe's stem_skip may stay when --set model.stem=1 puts a pretrained encoder in)
    no_stem = {"num_classes": 3, "input_shape": (64, 64, 1), "base_filters": 8, "depth": 2, "padding": "same"}
    assert trainable_params(unet(**no_stem, stem_skip=2)) == trainable_params(unet(**no_stem))
