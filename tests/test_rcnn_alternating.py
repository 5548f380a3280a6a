"""Faster R-CNN's 4-step alternating training (sec. 3.2): what each step trains and keeps fixed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.data.detection import load_detection

runner = CliRunner()
SMALL = {"num_classes": 10, "input_shape": (128, 128, 1), "widths": [8, 16, 16, 32], "rpn_width": 32,
         "head_width": 64, "anchor_scales": [27, 55, 109], "min_size": 4, "post_nms_train": 100}


def _fixed_batch(n=8):
    data = load_detection("scenes:free", (n, 0, 0))
    sp = data.splits["train"]
    boxes = -np.ones((n, 5, 4), np.float32)
    classes = np.zeros((n, 5), np.int32)
    for j in range(n):
        boxes[j, :len(sp.boxes[j])], classes[j, :len(sp.boxes[j])] = sp.boxes[j], sp.classes[j]
    return np.stack(sp.images), boxes, classes


def test_each_step_trains_its_own_layers_and_keeps_the_rest_fixed(tmp_path):
    import keras

    from cnnctl import models
    from cnnctl.models.rcnn_alternating import TrainingStages

    x, boxes, classes = _fixed_batch()
    keras.utils.set_random_seed(0)
    model = models.build("faster_rcnn", alternating=[1, 1, 1, 1], **SMALL)
    # steps 1 and 2 start from the same backbone weights, in two separate networks
    assert all(np.array_equal(a, b) for a, b in zip(model.backbone.get_weights(), model.rpn_backbone.get_weights()))
    assert model.backbone is not model.rpn_backbone
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.optimizer.build(model.trainable_variables)
    parts = ("rpn_backbone", "rpn", "backbone", "detector")
    snapshots, logs = [{p: getattr(model, p).get_weights() for p in parts}], []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, log=None):
            snapshots.append({p: getattr(model, p).get_weights() for p in parts})
            logs.append(dict(log))

    import tensorflow as tf

    ds = tf.data.Dataset.from_tensors((x, boxes, classes)).repeat(3)
    model.fit(ds, epochs=4, callbacks=[TrainingStages(), Record()], verbose=0)

    def moved(part, epoch):     # did ``part`` change during 0-based ``epoch`` (step epoch + 1)?
        return not all(np.array_equal(a, b) for a, b in zip(snapshots[epoch][part], snapshots[epoch + 1][part]))

    trained = {1: {"rpn_backbone", "rpn"}, 2: {"backbone", "detector"}, 3: {"rpn"}, 4: {"detector"}}
    for step, parts_trained in trained.items():
        assert {p for p in parts if moved(p, step - 1)} == parts_trained, step
    assert [log["stage"] for log in logs] == [1, 2, 3, 4]
    # a step reports only the losses it computes (the others' trackers stay at 0)
    assert logs[0]["rpn_cls"] > 0 and logs[0]["cls"] == 0 and logs[1]["cls"] > 0 and logs[1]["rpn_cls"] == 0
    # steps 1-2 draw proposals from the step-1 network; from step 3 on from the shared backbone
    model.stage = 2
    unshared = model.propose(x[:2])[0].numpy()
    model.stage = 4
    shared = model.propose(x[:2])[0].numpy()
    assert not np.array_equal(unshared, shared)
    # the stage is saved with the model: a step-2 file keeps its proposals
    model.stage = 2
    model.save(tmp_path / "step2.keras")
    again = keras.saving.load_model(tmp_path / "step2.keras", safe_mode=True)
    assert again.stage == 2 and again.stage_epochs == (1, 1, 1, 1)
    np.testing.assert_allclose(again.propose(x[:2])[0].numpy(), unshared, atol=1e-5)
    det, det_again = model(x[:2]), again(x[:2])
    np.testing.assert_allclose(det_again["scores"].numpy(), det["scores"].numpy(), atol=1e-5)


def test_alternating_training_end_to_end_and_its_epochs_must_add_up(tmp_path):
    tiny = ["--set", "data.scene_counts=[16, 4, 4]", "--set", "train.batch_size=8", "--set",
            "model.widths=[8, 16, 16, 32]", "--set", "model.rpn_width=32", "--set", "model.head_width=64",
            "--set", "model.alternating=[1, 1, 1, 1]", "--out-dir", str(tmp_path)]
    r = runner.invoke(app, ["train", "detect-scenes", "--epochs", "3", "--name", "bad", *tiny])
    assert r.exit_code == 2 and "adds up to 4 epochs, but train.epochs is 3" in r.output and "--epochs 4" in r.output
    r = runner.invoke(app, ["train", "detect-scenes", "--epochs", "4", "--name", "ok", *tiny])
    assert r.exit_code == 0, r.output
    with open(tmp_path / "ok" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["stage"]) for row in rows] == [1, 2, 3, 4]
    # a fresh process (nothing imported but what `cnnctl detect` imports) loads the run and detects
    scene = tmp_path / "scene.png"
    Image.fromarray(load_detection("scenes:free", (0, 0, 1)).splits["test"].images[0][..., 0]).save(scene)
    done = subprocess.run([sys.executable, "-m", "cnnctl", "detect", str(scene), "--model", str(tmp_path / "ok"),
                           "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)[0]["image"].endswith("scene.png")
