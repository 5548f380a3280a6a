"""The shipped model table behind `cnnctl models`: measured from today's source, equal to built models,
rebuilt where it is stale, and read without TensorFlow."""

import json
import subprocess
import sys

import pytest

from cnnctl import model_catalog, models

# One model per kind of builder: plain Sequential-style, residual, a GAN (two networks), an
# encoder-decoder with crops, a captioner with an LSTM, auxiliary heads (built without them).
SAMPLE = ["lenet5", "resnet20", "dcgan", "unet", "show_and_tell", "googlenet"]


def test_the_shipped_table_was_measured_from_todays_source():
    stale = model_catalog.stale_families(model_catalog.read())
    assert stale == [], f"cnnctl/model_catalog.json is stale for {stale}: run `{model_catalog.REGENERATE}`"


def test_the_table_lists_every_registered_model_once():
    names = [r["name"] for r in model_catalog.rows()]
    assert names == models.MODELS.names()
    # data only: a registered hook (a function) would be stored as its repr, new at every write
    assert "<function" not in model_catalog.CATALOG_PATH.read_text()


@pytest.mark.parametrize("name", SAMPLE)
def test_the_tables_row_equals_the_built_models_counts(name):
    row = next(r for r in model_catalog.rows() if r["name"] == name)
    built = models.describe(name)
    assert (row["params"], row["macs"]) == (built["params"], built["macs"])
    assert row["input_shape"] == list(built["input_shape"]) and row["task"] == built["task"]


def test_a_family_whose_source_changed_is_built_again_and_the_others_are_read(tmp_path):
    catalog = model_catalog.read()
    # Pretend lenet's source changed since the table was written, with a wrong count in it...
    lenet = catalog["families"]["cnnctl.models.lenet"]
    lenet["fingerprint"] = "0" * 64
    for row in lenet["models"]:
        row["params"] = -1
    # ...and mark a fresh family's row, to see that it is read, not rebuilt.
    resnet_cifar = catalog["families"]["cnnctl.models.resnet_cifar"]["models"]
    marked = next(r for r in resnet_cifar if r["name"] == "resnet20")
    marked["paper"] = "read from the table"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog))

    assert model_catalog.stale_families(model_catalog.read(path)) == ["cnnctl.models.lenet"]
    rows = {r["name"]: r for r in model_catalog.rows(path)}
    assert rows["lenet5"]["params"] == models.describe("lenet5")["params"] == 61_706
    assert rows["resnet20"]["paper"] == "read from the table"


def test_a_missing_or_corrupt_table_is_rebuilt_not_an_error(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text("{not json")
    assert model_catalog.stale_families(model_catalog.read(path)) == model_catalog.family_modules()


def test_the_fingerprint_covers_the_modules_a_family_imports():
    # fashion_cnn uses cnnctl.layers.FusedBatchNormalization: an edit there can change its count.
    files = {p.relative_to(model_catalog.PACKAGE_ROOT).as_posix() for p in model_catalog.closure("cnnctl.models.simple")}
    assert {"models/simple.py", "models/common.py", "layers/__init__.py", "layers/batch_norm.py"} <= files
    assert "train/engine.py" not in files


def test_cnnctl_models_reads_the_table_without_tensorflow():
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('tensorflow loaded:', 'tensorflow' in sys.modules, file=sys.stderr))\n"
            "sys.argv = ['cnnctl', 'models', '--json']\n"
            "runpy.run_module('cnnctl', run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert "tensorflow loaded: False" in p.stderr
    assert {r["name"] for r in json.loads(p.stdout)} == set(models.MODELS.names())
