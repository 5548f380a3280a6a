"""cnnctl finetune: what each freeze mode trains, frozen batch norm, the features cache, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.config import FinetuneConfig
from cnnctl.errors import CnnctlError
from cnnctl.train.runtime import cpu_has_fast_bf16

runner = CliRunner()
FAST = ["--precision", "float32", "--batch-size", "8"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _source(name="resnet20"):
    import keras

    from cnnctl import models
    from cnnctl.train.finetune import Source

    keras.utils.set_random_seed(0)
    net = models.build(name, num_classes=10, input_shape=(16, 16, 3))
    return Source(net, name, [str(i) for i in range(10)], name)


def _train_a_few_steps(model, num_classes=3):
    import keras

    from cnnctl.tasks import classify

    classify.compile_model(model, keras.optimizers.SGD(0.1, momentum=0.9), num_classes)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    y = keras.ops.one_hot(rng.integers(0, num_classes, 32), num_classes)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def _snapshot(model):
    return {w.path: np.array(w) for w in model.weights}


@pytest.mark.parametrize("mode, trainable_layers", [
    ("conv", {"finetune_logits"}),
    ("partial:3", {"finetune_logits"} | {f"stage3_block{b}_{p}" for b in (1, 2, 3) for p in ("1_conv", "1_bn", "2_conv", "2_bn")}),
    ("until:stage2_block3_2_bn", {"finetune_logits"} | {f"stage3_block{b}_{p}" for b in (1, 2, 3) for p in ("1_conv", "1_bn", "2_conv", "2_bn")}),
    ("none", None),
])
def test_each_freeze_mode_trains_only_its_layers_and_frozen_bn_statistics_stay(mode, trainable_layers):
    from cnnctl.layers import FusedBatchNormalization
    from cnnctl.train import finetune

    plan = finetune.build(FinetuneConfig(freeze=mode, backbone="x"), 3, log=lambda m: None, source=_source())
    model = plan.model
    trained = {layer.name for layer in model.layers if layer.trainable_weights}
    if trainable_layers is None:
        assert trained == {layer.name for layer in model.layers if layer.weights and layer.name != "normalize"}
    else:
        assert trained == trainable_layers
    assert set(plan.frozen).isdisjoint(trained)
    assert len(plan.body_paths) == sum(len(model.get_layer(n).trainable_weights) for n in trained - {"finetune_logits"})
    before = _snapshot(model)
    _train_a_few_steps(model)
    after = _snapshot(model)
    for layer in model.layers:
        for w in layer.weights:
            same = np.array_equal(before[w.path], after[w.path])
            if layer.name in plan.frozen:
                assert same, f"frozen {w.path} changed"            # bit-identical, BN statistics included
            elif w.trainable:
                assert not same, f"{w.path} did not train"
            elif isinstance(layer, FusedBatchNormalization):
                assert not same, f"the moving statistics of trainable {layer.name} did not update"


def test_partial_beyond_the_depth_and_unknown_layers_are_clear_errors():
    from cnnctl.train import finetune

    with pytest.raises(CnnctlError, match="only 4 stages") as e:
        finetune.build(FinetuneConfig(freeze="partial:5", backbone="x"), 3, log=lambda m: None, source=_source())
    assert "stem, stage1, stage2, stage3" in e.value.hint
    with pytest.raises(CnnctlError, match="no layer 'stage2_blok1_1_conv'") as e:
        finetune.build(FinetuneConfig(freeze="until:stage2_blok1_1_conv", backbone="x"), 3, log=lambda m: None,
                       source=_source())
    assert "did you mean stage2_block1_1_conv" in e.value.hint
    with pytest.raises(CnnctlError, match="predicts 10 classes, the data has 3"):
        finetune.build(FinetuneConfig(freeze="none", backbone="x", keep_head=True), 3, log=lambda m: None,
                       source=_source())


@pytest.fixture
def pretrained_run(make_folder, pattern, tmp_path):
    """A 3-class fashion_cnn run on one folder; the fine-tune data is a 2-class folder."""
    source = make_folder(classes=3, per_class=16, root=tmp_path / "source_data")
    out = tmp_path / "runs"
    r = invoke("train", "--data", source, "--epochs", "2", "--name", "pre", "--out-dir", out, *FAST,
               "--strategy", "default", "--set", "optimizer.lr=0.01")
    assert r.exit_code == 0, r.output
    target = tmp_path / "target_data"
    make_folder(classes=2, per_class=16, root=target / "train")
    for c, name in enumerate(["bars", "stripes"]):      # a held-out test split of new images
        (target / "test" / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(pattern(c, 100 + i)).save(target / "test" / name / f"{i}.png")
    return out, out / "pre", target


def test_finetune_cli_modes_from_a_run_directory(pretrained_run):
    out, pre, target = pretrained_run
    for mode in ("conv", "partial:2", "none"):
        r = invoke("finetune", "--data", target, "--from", pre, "--freeze", mode, "--epochs", "2",
                   "--name", mode.replace(":", "-"), "--out-dir", out, *FAST)
        assert r.exit_code == 0, r.output
        assert "new 2-class head" in r.output
        run = out / mode.replace(":", "-")
        metrics = json.loads((run / "metrics.json").read_text())
        # 20 held-out images; chance is 0.5, and the pretrained features separate bars from stripes.
        assert metrics["test_accuracy"] >= 0.95 and metrics["epochs_trained"] == 2
        r = invoke("evaluate", run, "--json")
        assert r.exit_code == 0, r.output
        assert abs(json.loads(r.stdout)["top1"] - metrics["test_accuracy"]) < 1e-6
    conv_params = json.loads((out / "conv" / "metrics.json").read_text())["params"]
    none_params = json.loads((out / "none" / "metrics.json").read_text())["params"]
    assert conv_params < none_params

    r = invoke("finetune", "--data", target, "--from", pre, "--freeze", "features", "--epochs", "3",
               "--name", "feat1", "--out-dir", out, *FAST)
    assert r.exit_code == 0, r.output
    assert (out / "feat1" / "features.npz").is_file()
    first = json.loads((out / "feat1" / "metrics.json").read_text())
    assert first["features_reused"] is False
    r = invoke("finetune", "--data", target, "--from", pre, "--freeze", "features", "--epochs", "3",
               "--name", "feat2", "--out-dir", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "reusing the features stored in" in r.output
    second = json.loads((out / "feat2" / "metrics.json").read_text())
    assert second["features_reused"] is True and second["test_accuracy"] == first["test_accuracy"]
    assert first["test_accuracy"] >= 0.95
    test_images = sorted((target / "test").rglob("*.png"))
    r = invoke("predict", out / "feat2", *test_images, "--json", "--precision", "float32")
    assert r.exit_code == 0, r.output
    labels = [p["top"][0]["label"] for p in json.loads(r.stdout)]
    assert np.mean([label == path.parent.name for label, path in zip(labels, test_images)]) == pytest.approx(
        second["test_accuracy"])  # predict agrees with the run's own test evaluation, image by image


def test_finetune_bad_input_is_one_message(pretrained_run, tmp_path):
    out, pre, target = pretrained_run
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    cases = [
        (["--from", empty, "--freeze", "conv"], "has no trained model"),
        (["--from", pre, "--freeze", "partial:9"], "only"),
        (["--from", pre, "--freeze", "until:nope"], "no layer 'nope'"),
        (["--from", pre, "--freeze", "sideways"], "finetune.freeze = 'sideways' is not valid"),
        (["--from", pre, "--freeze", "conv", "--keep-head"], "predicts 3 classes, the data has 2"),
        (["--freeze", "conv"], "exactly one pretrained network"),
        (["--backbone", "resnet20", "--freeze", "conv"], "no ImageNet weights for 'resnet20'"),
    ]
    for args, needle in cases:
        r = invoke("finetune", "--data", target, *args, "--epochs", "1", "--out-dir", out, *FAST)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output and "Traceback" not in r.output, (args, r.output)


def test_imagenet_backbone_two_stage_finetune(make_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCTL_CACHE", str(tmp_path / "cache"))
    data = make_folder(classes=2, per_class=8, size=40, rgb=True)
    out = tmp_path / "runs"
    # --precision auto: float32 for Lite0 on every CPU (on one with bf16 units, measured: bf16 trains it at
    # about 0.7x float32's speed), said with why
    r = invoke("finetune", "--data", data, "--backbone", "efficientnet_lite0", "--weights", "imagenet",
               "--freeze", "conv", "--stages", "--head-epochs", "1", "--epochs", "1", "--name", "two",
               "--out-dir", out, "--precision", "auto", "--batch-size", "8")
    assert r.exit_code == 0, r.output
    assert "stage 2/2: the top 2 stage(s) (stage7, head)" in r.output
    why = ("auto: measured on this CPU, efficientnet_lite0 trains at 0." if cpu_has_fast_bf16()
           else "auto: this CPU has no bf16 units")
    assert f"float32 ({why}" in " ".join(r.output.split())
    assert json.loads((out / "two" / "metrics.json").read_text())["precision"] == "float32"
    cfg = (out / "two" / "config.toml").read_text()
    assert 'freeze = "partial:7"' in cfg and "two-head" in cfg
    assert (out / "two-head" / "model.keras").is_file() and (out / "two" / "model.keras").is_file()


def test_auto_precision_without_measuring_is_bf16_where_the_cpu_has_it_except_for_models_recorded_slower():
    """The rule a multi-worker job uses (no measurement, the same choice on every worker); measured
    choices are in test_precision.py."""
    from cnnctl.train.runtime import explain_precision

    bf16 = cpu_has_fast_bf16()
    assert explain_precision("auto", "resnet50", measure=False)[0] == ("mixed_bfloat16" if bf16 else "float32")
    assert explain_precision("auto", "efficientnet_lite0", measure=False)[0] == "float32"
    assert explain_precision("mixed_bfloat16", "efficientnet_lite0") == ("mixed_bfloat16", "asked for")


def test_keras_applications_backbone_from_a_local_weights_file(make_folder, tmp_path):
    """keras.applications networks work from weights on disk (no download needed); a missing file is one message."""
    import keras

    weights = tmp_path / "mobilenet_v3_small.weights.h5"
    keras.applications.MobileNetV3Small(weights=None, classifier_activation=None).save_weights(weights)
    data = make_folder(classes=2, per_class=8, size=40, rgb=True)
    out = tmp_path / "runs"
    r = invoke("finetune", "--data", data, "--backbone", "keras:MobileNetV3Small", "--weights", weights,
               "--freeze", "conv", "--epochs", "1", "--name", "k", "--out-dir", out, *FAST)
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", out / "k", "--json")
    assert r.exit_code == 0, r.output
    r = invoke("finetune", "--data", data, "--backbone", "keras:MobileNetV3Small", "--weights", tmp_path / "no.h5",
               "--freeze", "conv", "--out-dir", out, *FAST)
    assert r.exit_code == 2 and "does not exist" in r.output
    r = invoke("finetune", "--data", data, "--backbone", "keras:ResNet9000", "--freeze", "conv", "--out-dir", out, *FAST)
    assert r.exit_code == 2 and "unknown keras.applications backbone" in r.output


def test_a_finetune_run_resumes_with_its_frozen_layers(pretrained_run):
    import keras

    out, pre, target = pretrained_run
    r = invoke("finetune", "--data", target, "--from", pre, "--freeze", "partial:2", "--epochs", "1",
               "--name", "res", "--out-dir", out, *FAST, "--set", "train.strategy=default")
    assert r.exit_code == 0, r.output
    before = keras.models.load_model(out / "res" / "model.keras", safe_mode=True, compile=False)
    r = invoke("train", "--resume", out / "res", "--epochs", "2")
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output and "fine-tuning (partial:2)" in r.output
    after = keras.models.load_model(out / "res" / "model.keras", safe_mode=True, compile=False)
    for name in ("conv1", "bn1"):                                   # the two frozen stages
        for a, b in zip(before.get_layer(name).weights, after.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(before.get_layer("conv2").kernel), np.asarray(after.get_layer("conv2").kernel))
