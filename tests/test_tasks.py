"""The engine asks the recipe's task; it assumes no task by name (cnnctl/tasks/base.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnctl import config
from cnnctl.cli import app
from cnnctl.errors import CnnctlError
from cnnctl.tasks import TASKS, Field, Task

runner = CliRunner()
FAST = ["--strategy", "default", "--precision", "float32", "--batch-size", "8"]


@TASKS.register("toy_regression", about="test only: one-hot targets as a regression")
class ToyRegression(Task):
    """Not classification: its own loss, fields, monitor mode, run file and metrics."""

    name = "toy_regression"
    progress_fields = (Field("loss", "mse"), Field("mae", "mae"))
    monitor = "val_mae"
    modes = {"loss": "min", "mae": "min"}   # noqa: RUF012 - a test double

    def write_run_files(self, run, data):
        run.write_json("targets.json", {"dims": data.num_classes})

    def compile(self, model, optimizer, cfg, data, loss_kind=""):
        import keras

        model.compile(optimizer=optimizer, loss="mse", metrics=[keras.metrics.MeanAbsoluteError(name="mae")])

    def final_metrics(self, model, data):
        result = model.evaluate(data.eval_dataset("test"), verbose=0, return_dict=True)
        return {"test_mae": float(result["mae"])}

    def summary_keys(self):
        return ("test_mae",)


def test_a_task_the_engine_has_never_heard_of_trains_through_it(make_folder, tmp_path):
    from cnnctl.train import engine

    data = make_folder(per_class=16)
    cfg = config.load(None, [f"data.path='{data}'", "task='toy_regression'", "train.monitor='val_mae'",
                             "train.epochs=3", "train.batch_size=8", "train.strategy='default'",
                             "train.precision='float32'", "model.name='softmax'", f"train.out_dir='{tmp_path}'",
                             "train.name='toy'", "schedule.name='constant'", "optimizer.lr=0.001"])
    from rich.console import Console

    with open(tmp_path / "log.txt", "w") as log_file:
        result = engine.train(cfg, console=Console(file=log_file, width=200))
    run = result.run_dir
    assert (run / "targets.json").is_file() and not (run / "classes.json").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test_mae" in metrics and "test_accuracy" not in metrics
    log = (tmp_path / "log.txt").read_text()
    assert "mae " in log and "val_mae " in log and " acc " not in log   # the task's fields, not accuracy
    history = result.history
    best = min(range(3), key=lambda e: history[e]["val_mae"])           # mode "min", as the task says
    assert metrics["best_epoch"] == best + 1 and metrics["best_val_mae"] == pytest.approx(history[best]["val_mae"])
    assert 'task = "toy_regression"' in (run / "config.toml").read_text()


def test_unknown_task_and_unmeasured_monitor_are_refused_before_any_work(make_folder, tmp_path):
    data = make_folder(per_class=4)
    out = tmp_path / "runs"
    r = runner.invoke(app, ["train", "--data", str(data), "--out-dir", str(out), "--set", "task=segmnt", *FAST])
    assert r.exit_code == 2 and "unknown task 'segmnt'" in r.output and "classify" in r.output, r.output
    r = runner.invoke(app, ["train", "--data", str(data), "--out-dir", str(out), "--set", "train.monitor=val_acc", *FAST])
    assert r.exit_code == 2 and "train.monitor = 'val_acc' is not something the classify task measures" in r.output
    assert "val_accuracy" in r.output
    assert not out.exists()


def test_a_recipe_names_its_task_in_a_section_or_the_model_implies_it(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "default.toml"\n[task]\nname = "toy_regression"\n')
    assert config.load(str(recipe), []).task == "toy_regression"
    assert config.load(None, []).task == ""   # resolved from the model's registry entry at train time
    from cnnctl.models import MODELS

    assert MODELS.get("fashion_cnn").meta["task"] == "classify"


def test_the_nan_guard_watches_every_loss_the_task_names():
    import keras

    from cnnctl.train.callbacks import NaNGuard

    guard = NaNGuard(("d_loss", "g_loss"))
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.on_train_batch_end(0, {"d_loss": 0.5, "g_loss": 1.2})
    assert guard.bad_step is None
    guard.on_train_batch_end(1, {"d_loss": 0.5, "g_loss": float("inf")})
    assert guard.bad_step == 2 and guard.bad_loss == float("inf") and guard.model.stop_training
    with pytest.raises(RuntimeError, match="none of the task's losses"):
        NaNGuard(("loss",)).on_train_batch_end(0, {"d_loss": 0.5})


def test_state_variables_decide_what_the_backup_holds(tmp_path):
    import keras

    from cnnctl.train.rundir import RunDir

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    second = keras.optimizers.RMSprop(0.1)               # a second network's optimizer (a GAN's)
    second.build(model.trainable_variables)
    variables = list(model.variables) + list(model.optimizer.variables) + list(second.variables)
    run = RunDir.create(str(tmp_path), "s")
    second.variables[-1].assign(np.full(second.variables[-1].shape, 7.0, "float32"))
    run.save_backup(model, {"epoch": 0, "step_in_epoch": 1, "global_step": 1}, variables)
    second.variables[-1].assign(np.zeros(second.variables[-1].shape, "float32"))
    run.load_backup(model, variables)
    assert np.all(np.asarray(second.variables[-1]) == 7.0)
    with pytest.raises(CnnctlError, match="another architecture or optimizer"):
        run.load_backup(model)                           # without the second optimizer: refused, not silent
