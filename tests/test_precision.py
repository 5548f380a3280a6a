"""`--precision auto` by measurement: the real calibration on a tiny model, its cache, and the choice in
the run's config."""

import json
import tomllib

import pytest
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.train import calibrate
from cnnctl.train.runtime import cpu_has_fast_bf16, explain_precision


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(calibrate, "_MEMO", {})
    return tmp_path / "cache" / "precision.json"


def test_the_calibration_times_both_policies_and_keeps_the_faster(fresh_cache):
    """Real timings of fashion_cnn training steps, float32 and mixed_bfloat16 (on a CPU without bf16
    units bf16 is emulated and slower; either way the rule must pick the smaller median)."""
    import keras

    # Keras numbers unnamed objects per kind ("sgd_3", "seed_generator_2"), and those names are the
    # paths of optimizer and dropout-seed variables in a checkpoint: measuring must not shift them.
    before = [keras.optimizers.SGD().name, keras.random.SeedGenerator(1).name]
    entry = calibrate.time_policies("fashion_cnn", "train", batch=16, steps=3)
    after = [keras.optimizers.SGD().name, keras.random.SeedGenerator(1).name]

    def following(name):
        prefix, _, number = name.rpartition("_")
        return f"{prefix}_{int(number) + 1}" if number.isdigit() else f"{name}_1"
    assert after == [following(n) for n in before], (before, after)
    assert entry["float32"] > 0 and entry["mixed_bfloat16"] > 0
    assert entry["policy"] == min(calibrate.POLICIES, key=lambda p: entry[p])
    assert entry["batch"] == 16 and entry["input_shape"] == [28, 28, 1]
    infer = calibrate.time_policies("fashion_cnn", "infer", batch=16, steps=3)
    assert infer["policy"] == min(calibrate.POLICIES, key=lambda p: infer[p])


def test_a_model_with_a_free_input_axis_is_timed_too(fresh_cache):
    """show_and_tell's word input is (batch, None): the calibration gives that axis a length instead of
    failing (it used to fall back to the rule with "Can't convert Python sequence", every run)."""
    entry = calibrate.time_policies("show_and_tell", "train", batch=4, steps=1)
    assert entry["policy"] == min(calibrate.POLICIES, key=lambda p: entry[p])


def test_auto_measures_once_per_cpu_and_model_then_reads_the_cache(fresh_cache):
    heard = []
    policy, why = explain_precision("auto", "fashion_cnn", "train", heard.append)
    if not cpu_has_fast_bf16():
        assert (policy, why) == ("float32", "auto: this CPU has no bf16 units") and not heard
        return
    assert len(heard) == 1 and "timing float32 against mixed_bfloat16" in heard[0]
    entry = json.loads(fresh_cache.read_text())[calibrate.cache_key("fashion_cnn", "train")]
    assert policy == entry["policy"] == min(calibrate.POLICIES, key=lambda p: entry[p])
    assert why.startswith("auto: measured on this CPU, fashion_cnn trains at")
    calibrate._MEMO.clear()                                   # a new process: the file answers
    assert explain_precision("auto", "fashion_cnn", "train", heard.append) == (policy, why)
    assert len(heard) == 1
    fresh_cache.write_text("{not json")                        # a damaged cache is measured again
    calibrate._MEMO.clear()
    assert explain_precision("auto", "fashion_cnn", "train", heard.append)[0] in calibrate.POLICIES
    assert len(heard) == 2 and calibrate.cache_key("fashion_cnn", "train") in json.loads(fresh_cache.read_text())
    # an explicit policy wins without measuring; a multi-worker job never measures (same choice everywhere)
    assert explain_precision("mixed_bfloat16", "fashion_cnn") == ("mixed_bfloat16", "asked for")
    assert explain_precision("auto", "efficientnet_lite0", measure=False)[0] == "float32"
    assert len(heard) == 2


def test_the_policy_auto_chose_is_written_into_the_run_config(fresh_cache, make_folder, tmp_path):
    data = make_folder(classes=2, per_class=8)
    out = tmp_path / "runs"
    r = CliRunner().invoke(app, [str(a) for a in ("train", "--data", data, "--epochs", "1", "--name", "a",
                                                   "--out-dir", out, "--precision", "auto", "--strategy",
                                                   "default", "--batch-size", "8")])
    assert r.exit_code == 0, r.output
    cfg = tomllib.loads((out / "a" / "config.toml").read_text())["train"]
    expected, why = explain_precision("auto", "fashion_cnn")
    assert cfg["precision"] == expected == json.loads((out / "a" / "metrics.json").read_text())["precision"]
    assert cfg["precision_why"] == why
    assert f"{expected} ({why})" in " ".join(r.output.split())


def test_a_model_that_cannot_be_timed_is_remembered_and_left_to_the_rule(fresh_cache):
    heard = []
    assert calibrate.measured_policy("wgan", "train", heard.append) is None
    assert len(heard) == 2 and "cannot be timed generically" in heard[1]
    assert "unmeasurable" in json.loads(fresh_cache.read_text())[calibrate.cache_key("wgan", "train")]
    calibrate._MEMO.clear()                                   # a new process: the file answers, nothing said
    assert calibrate.measured_policy("wgan", "train", heard.append) is None
    assert len(heard) == 2
