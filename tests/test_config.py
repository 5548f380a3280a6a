from pathlib import Path

import pytest

from cnnctl import config
from cnnctl.errors import CnnctlError


def test_default_recipe_matches_dataclass_defaults_where_it_sets_nothing():
    cfg = config.load()
    assert cfg.model.name == "fashion_cnn"
    assert cfg.train.epochs == 8 and cfg.train.batch_size == 128
    assert cfg.data.source == "auto" and cfg.data.path == ""


def test_set_overrides_are_typed():
    cfg = config.load(None, ["train.epochs=30", "optimizer.lr=0.1", "data.augment=['flip', 'crop']",
                             "train.deterministic=true", "model.name=resnet20", "model.input_shape=[28,28,1]"])
    assert cfg.train.epochs == 30 and isinstance(cfg.train.epochs, int)
    assert cfg.optimizer.lr == 0.1
    assert cfg.data.augment == ["flip", "crop"]
    assert cfg.train.deterministic is True
    assert cfg.model.options == {"input_shape": [28, 28, 1]}


def test_int_accepted_for_float_and_bare_string_values():
    cfg = config.load(None, ["optimizer.lr=1", "data.path=some/folder"])
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.data.path == "some/folder"


@pytest.mark.parametrize("override, needle", [
    ("train.epoch=3", "did you mean train.epochs"),
    ("nosuch.key=1", "unknown recipe key"),
    ("train.epochs=abc", "must be an integer"),
    ("train.epochs=0", "out of range"),
    ("train.batch_size=-4", "out of range"),
    ("optimizer.name=lbfgs", "choose one of"),
    ("train.deterministic=3", "true or false"),
    ("data.val_split=1.5", "out of range"),
    ("data.augment=['rotate']", "unknown augmentation"),
    ("epochs", "malformed --set"),
])
def test_bad_overrides_name_the_key_and_the_fix(override, needle):
    with pytest.raises(CnnctlError) as e:
        config.load(None, [override])
    assert needle in str(e.value)


def test_recipe_base_chain_and_round_trip(tmp_path):
    (tmp_path / "base.toml").write_text('[train]\nepochs = 7\nseed = 3\n[model]\nname = "lenet5"\n')
    (tmp_path / "child.toml").write_text('base = "base.toml"\n[train]\nepochs = 9\n')
    cfg = config.load(tmp_path / "child.toml")
    assert (cfg.train.epochs, cfg.train.seed, cfg.model.name) == (9, 3, "lenet5")
    import tomllib

    again = config.from_dict(tomllib.loads(config.dumps(cfg)))
    assert again == cfg


def test_invalid_toml_and_missing_recipe(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3")
    with pytest.raises(CnnctlError, match="not valid TOML"):
        config.load(bad)
    with pytest.raises(CnnctlError, match="not found"):
        config.load(tmp_path / "missing.toml")


def test_every_shipped_recipe_loads():
    for path in sorted(config.PIPELINES_DIR.glob("*.toml")):
        cfg = config.load(path)
        assert cfg.train.epochs > 0, path


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (Path(__file__).parent.parent / "pipelines").glob("*.toml")))
def test_every_shipped_recipe_loads_and_names_a_model_with_valid_options(recipe):
    from cnnctl.models import check_options

    cfg = config.load(recipe)
    check_options(cfg.model.name, {k: v for k, v in cfg.model.options.items() if k != "input_shape"})
    if cfg.data.resize_short:
        assert cfg.data.source == "folder" and not cfg.data.cache
