"""U-Net on a pretrained encoder (``model.encoder``): the encoder's maps replace the contracting path, its
weights are the pretrained ones, and ``finetune.freeze`` freezes it as `cnnctl finetune` freezes a body."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.errors import CnnctlError

runner = CliRunner()
FASHION = "fashion_cnn:fashion_mnist"


def _unet(**options):
    from cnnctl import models

    kw = {"num_classes": 11, "input_shape": (64, 64, 1), "padding": "same", "base_filters": 8, "depth": 3, "batch_norm": True}
    return models.build("unet", **{**kw, **options})


def test_the_encoders_maps_are_the_contracting_path_with_its_pretrained_weights(tmp_path):
    import keras

    from cnnctl.weights import load_pretrained

    model = _unet(encoder=FASHION)
    encoder = model.get_layer("encoder")
    # fashion_cnn at 64x64 gives maps at strides 2 (conv2's, 32x32x64) and 4 (pool2, 16x16x64); level 3 is new
    assert [tuple(t.shape[1:]) for t in encoder.outputs] == [(32, 32, 64), (16, 16, 64)]
    assert model.get_layer("pool3").output.shape[1:] == (8, 8, 64)
    assert model.get_layer("up2_concat").output.shape[-1] == 64 + 16   # the encoder's stride-2 map + up2
    assert model.output_shape == (None, 64, 64, 11)
    trained = load_pretrained("fashion_cnn", "fashion_mnist", log=lambda *a: None)
    for name in ("conv1", "bn1", "conv2", "bn2"):
        for got, want in zip(encoder.get_layer(name).get_weights(), trained.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    # the encoder alone computes what the bundled classifier's conv layers compute on the same image
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 1)).astype(np.float32)
    conv_at_64 = keras.Model(encoder.inputs[0], encoder.get_layer("relu2").output)
    np.testing.assert_allclose(encoder(image)[0], conv_at_64(image), atol=1e-5)
    model.save(tmp_path / "unet.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "unet.keras").predict_on_batch(image),
                               model.predict_on_batch(image), atol=1e-5)


def test_an_rgb_imagenet_encoder_takes_grey_images():
    from cnnctl.weights import load_pretrained

    model = _unet(encoder="efficientnet_lite0:imagenet", depth=4, input_shape=(64, 64, 1))
    assert model.get_layer("grey_to_rgb").output.shape[-1] == 3
    encoder = model.get_layer("encoder")
    assert len(encoder.outputs) == 4 and encoder.outputs[-1].shape[1] == 4          # strides 2, 4, 8, 16
    imagenet = load_pretrained("efficientnet_lite0", "imagenet", log=lambda *a: None)
    stem = next(la.name for la in encoder.layers if la.weights)
    np.testing.assert_array_equal(encoder.get_layer(stem).get_weights()[0], imagenet.get_layer(stem).get_weights()[0])


def test_encoder_errors_are_clear():
    with pytest.raises(CnnctlError, match="padding = 'same'"):
        _unet(encoder=FASHION, padding="valid", input_shape=(188, 188, 1))
    with pytest.raises(CnnctlError, match="neither NAME:WEIGHTS nor a trained run"):
        _unet(encoder="no/such/run")
    with pytest.raises(CnnctlError, match="takes 3-channel images"):
        _unet(encoder="efficientnet_lite0:imagenet", input_shape=(64, 64, 2))


@pytest.fixture(scope="module")
def scene_cfg():
    from cnnctl.config import load

    def make(**settings):
        base = {"model.encoder": f"'{FASHION}'", "model.input_shape": "[64, 64, 1]", "model.depth": "3",
                "model.base_filters": "8", "model.stem": "1"}
        return load("segment-scenes", [f"{k}={v}" for k, v in {**base, **settings}.items()])
    return make


@pytest.mark.parametrize("mode, frozen", [("conv", {"conv1", "bn1", "conv2", "bn2"}), ("partial:1", {"conv1"}),
                                          ("until:bn1", {"conv1", "bn1"}), ("", set()), ("none", set())])
def test_freeze_modes_apply_to_the_encoder(scene_cfg, mode, frozen):
    from cnnctl.tasks.segment import freeze_encoder

    cfg = scene_cfg(**{"finetune.freeze": f"'{mode}'"})
    model = _unet(encoder=FASHION)
    body = freeze_encoder(model, cfg, log=lambda *a: None)
    encoder = model.get_layer("encoder")
    assert {la.name for la in encoder.layers if la.weights and not la.trainable} == frozen
    # the unfrozen encoder variables are the ones trained at finetune.body_lr_scale; the decoder trains in full
    assert set(body) == {w.path for la in encoder.layers if la.trainable for w in la.trainable_weights}
    assert model.get_layer("up1_conv1").trainable and model.get_layer("down1_conv1").trainable


def test_freeze_needs_an_encoder_and_features_mode_is_refused(scene_cfg):
    from cnnctl.tasks.segment import freeze_encoder

    with pytest.raises(CnnctlError, match="needs a pretrained encoder"):
        freeze_encoder(_unet(), scene_cfg(**{"finetune.freeze": "'conv'"}), log=print)
    with pytest.raises(CnnctlError, match="does not apply to segmentation"):
        freeze_encoder(_unet(encoder=FASHION), scene_cfg(**{"finetune.freeze": "'features'"}), log=print)


def test_a_frozen_encoder_leaves_training_with_its_weights_unchanged(tmp_path):
    import keras

    from cnnctl.weights import load_pretrained

    r = runner.invoke(app, ["train", "segment-scenes", "--out-dir", str(tmp_path), "--epochs", "1",
                            "--batch-size", "8", "--precision", "float32", "--strategy", "default",
                            "--set", "data.scene_counts=[16, 4, 4]", "--set", f"model.encoder='{FASHION}'", "--set", "model.stem=1",
                            "--set", "model.input_shape=[64, 64, 1]", "--set", "model.depth=3",
                            "--set", "model.base_filters=4", "--set", "finetune.freeze='conv'"])
    assert r.exit_code == 0, r.output
    assert "4 layer(s) frozen (conv)" in r.output
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    model = keras.models.load_model(run / "model.keras")
    trained = load_pretrained("fashion_cnn", "fashion_mnist", log=lambda *a: None)
    encoder = model.get_layer("encoder")
    for name in ("conv1", "bn1", "conv2", "bn2"):          # BN's moving statistics too (frozen = inference mode)
        for got, want in zip(encoder.get_layer(name).get_weights(), trained.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert json.loads((run / "metrics.json").read_text())["test_images"] == 4
