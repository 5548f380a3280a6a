"""The command line, end to end, through typer's CliRunner (and subprocesses where a kill is needed)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import typer
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.config import DataConfig
from cnnctl.inference import input_spec, load_images, load_run_model

runner = CliRunner()
FAST = ["--strategy", "default", "--precision", "float32", "--batch-size", "8"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_does_not_import_tensorflow():
    code = ("import sys; from typer.testing import CliRunner; from cnnctl.cli import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(app, ['train', '--help']); assert 'Examples' in r.output; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_inference_commands_end_without_python_teardown_once_their_output_is_flushed(tmp_path):
    """`caption` (as predict, segment, detect) ends with os._exit after flushing: the atexit handler
    never runs, and the JSON written to a pipe (block-buffered) arrives whole."""
    samples = Path(__file__).resolve().parent.parent / "cnnctl" / "data" / "bundled" / "captioner" / "samples"
    sample = min(samples.glob("*.png"))
    code = ("import atexit, sys; atexit.register(lambda: sys.stdout.write('TEARDOWN\\n')); "
            "sys.argv = ['cnnctl', 'caption', *sys.argv[1:]]; from cnnctl.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, str(sample), "--json"], check=False, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "TEARDOWN" not in r.stdout
    captions = json.loads(r.stdout)
    assert [c["image"] for c in captions] == [str(sample)] and captions[0]["caption"]
    # refused before TensorFlow is imported: an ordinary exit, with its code and message
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.png")], check=False,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "missing.png" in r.stderr and "TEARDOWN" in r.stdout


def test_every_command_has_help_with_examples():
    for cmd in (["train"], ["evaluate"], ["predict"], ["models"], ["data", "inspect"], ["data", "convert"]):
        r = invoke(*cmd, "--help")
        assert r.exit_code == 0 and "Examples" in r.output, cmd


def test_models_json_lists_every_model_with_params_and_paper():
    r = invoke("models", "--json")
    assert r.exit_code == 0, r.output
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"fashion_cnn", "lenet5", "resnet20", "resnet110"} <= set(rows)
    assert rows["lenet5"]["params"] == 61_706 and rows["resnet20"]["macs"] > 40e6
    assert all(m["paper"] for m in rows.values())


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "alexnett"], "unknown model 'alexnett'"),
    (["train", "--set", "train.epochz=3"], "did you mean train.epochs"),
    (["train", "--set", "epochs"], "malformed --set"),
    (["train", "--epochs", "0"], "out of range"),
    (["train", "--batch-size", "-1"], "out of range"),
    (["train", "--data", "/no/such/folder"], "does not exist"),
    (["evaluate", "/no/such/run"], "does not exist"),
    (["train", "--set", "model.depth=3"], "has no option 'depth'"),
    (["train", "--set", "data.source=foldr"], "did you mean 'folder'"),
    (["train", "--set", "optimizer.name=adamm"], "choose one of: sgd, adam, adamw"),
    (["train", "--set", "optimizer.lr=-0.1"], "out of range"),
    (["train", "--set", "train.epochs=ten"], "must be an integer"),
])
def test_user_errors_are_one_message_without_traceback(args, needle):
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert "Traceback" not in r.output


def test_a_run_of_another_task_where_a_classifier_is_expected_names_its_own_command(tmp_path):
    """`cnnctl predict` given a segmentation (caption, GAN, ...) run: the hint is that task's command,
    and the command it names exists."""
    from cnnctl.tasks import TASKS, get

    get("classify")                              # registers every built-in task
    commands = {c.name for c in typer.main.get_command(app).commands.values()}
    # the built-in tasks (other tests register their own, e.g. a toy regression task)
    others = [t for t in TASKS.names() if t != "classify" and TASKS.get(t).fn.__module__.startswith("cnnctl.")]
    assert {"caption", "generate", "segment", "detect", "align"} <= set(others)
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    for task in others:
        run = tmp_path / task
        run.mkdir()
        (run / "config.toml").write_text(f'task = "{task}"\n')
        r = invoke("predict", str(run), str(image))
        assert r.exit_code == 2 and f"is a {task} run, not a classifier" in r.output, r.output
        hint = re.search(r"use `cnnctl (\w+) ", r.output)
        assert hint and hint.group(1) in commands and str(run) in r.output, (task, r.output)
        assert "Traceback" not in r.output


def test_train_evaluate_predict_end_to_end(make_folder, pattern, tmp_path):
    data = make_folder(classes=3, per_class=24)
    out = tmp_path / "runs"
    r = invoke("train", "--data", data, "--epochs", "3", "--name", "e2e", "--out-dir", out, *FAST,
               "--set", "optimizer.lr=0.01")
    assert r.exit_code == 0, r.output
    run = out / "e2e"
    for name in ("config.toml", "classes.json", "model.keras", "best.keras", "history.csv", "curves.png",
                 "metrics.json", "backup/LATEST"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").rglob("events.out.tfevents.*")), "TensorBoard event files"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 3
    assert metrics["test_accuracy"] > 0.9  # the three patterns are easy
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 4 and history[0].startswith("epoch,")

    r = invoke("evaluate", run, "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert abs(ev["top1"] - metrics["test_accuracy"]) < 1e-6
    assert np.asarray(ev["confusion"]).sum() == ev["images"]
    assert (run / "confusion.png").is_file()
    # Views are checked on images the model is unsure of and that are not mirror-symmetric (the
    # training patterns are both, so any subset of views would give the same numbers on them).
    hard = tmp_path / "hard"
    for c, name in enumerate(["bars", "stripes", "disc"]):
        (hard / name).mkdir(parents=True)
        for i in range(6):
            img = pattern(c, i)
            img[:, 17:] = pattern((c + 1) % 3, i)[:, 17:]   # the right 40% from the next class
            Image.fromarray(img).save(hard / name / f"{i}.png")
    _check_tta_matches_softmax_averaged_by_hand(run, hard, "10crop")
    _check_tta_matches_softmax_averaged_by_hand(run, hard, "144crop")

    img = min((data / "disc").iterdir())
    r = invoke("predict", run, img, "--json", "--top-k", "2", "--precision", "float32")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["top"][0]["label"] == "disc"
    # Probabilities: the model's own softmax on the images as the run's pipeline shows them (whole
    # image at 28x28, grey), on images it is unsure of (a confident 1.0 hides a wrong softmax).
    unsure = [min((hard / name).iterdir()) for name in ("bars", "stripes", "disc")]
    r = invoke("predict", run, *unsure, "--json", "--top-k", "2", "--precision", "float32")
    assert r.exit_code == 0, r.output
    model, classes, _ = load_run_model(run)
    probs = np.asarray(tf.nn.softmax(model(load_images([str(p) for p in unsure], input_spec(model)), training=False)))
    assert probs.max(axis=1).min() < 0.99, "the check needs an image the model is unsure of"
    for pred, row in zip(json.loads(r.stdout), probs):
        order = np.argsort(-row)[:2]
        assert [t["label"] for t in pred["top"]] == [classes[i] for i in order]
        np.testing.assert_allclose([t["probability"] for t in pred["top"]], row[order], rtol=1e-5, atol=1e-6)

    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = invoke("predict", run, bad)
    assert r.exit_code == 2 and "cannot read" in r.output and "Traceback" not in r.output


def _check_tta_matches_softmax_averaged_by_hand(run, data, tta):
    """`evaluate --tta` = the mean of the model's softmax over each image's views, per image.

    The views' geometry is tested in test_data.py; here the averaging, the pairing of images with
    labels and the metrics are recomputed from the views one image at a time.
    """
    from cnnctl.data.pipeline import DataModule
    from cnnctl.data.tta import googlenet_144_views, googlenet_short_side, ten_crops

    r = invoke("evaluate", run, "--json", "--tta", tta, "--data", data)
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    model, classes, _cfg = load_run_model(run)
    spec = input_spec(model)
    short = googlenet_short_side(spec.height) if tta == "144crop" else 0
    dm = DataModule(DataConfig(path=str(data), val_split=0.0), spec, 16, 0, log=lambda m: None)
    nll, hits, confusion = [], [], np.zeros((len(classes),) * 2, int)
    for x, y in dm.eval_dataset("train", short_side=short):
        for image, label in zip(x, np.argmax(y.numpy(), axis=1)):
            views = (ten_crops(image[None])[:, 0] if tta == "10crop"
                     else googlenet_144_views(image, (spec.height, spec.width)))
            p = np.mean(np.asarray(tf.nn.softmax(model(views, training=False)), np.float64), axis=0)
            nll.append(-np.log(p[label]))
            hits.append(p.argmax() == label)
            confusion[label, p.argmax()] += 1
    assert ev["tta"] == tta and ev["images"] == len(hits)
    assert abs(ev["loss"] - np.mean(nll)) < 1e-5 and ev["top1"] == np.mean(hits)
    assert ev["confusion"] == confusion.tolist()
    assert 0.05 < ev["loss"], "the check needs images the model is unsure of"


def test_auxiliary_classifiers_train_and_are_dropped_at_inference(make_folder, tmp_path):
    data = make_folder(classes=3, per_class=12, size=80, rgb=True)
    out = tmp_path / "runs"
    r = invoke("train", "--data", data, "--epochs", "1", "--name", "g", "--out-dir", out, *FAST,
               "--model", "googlenet", "--set", "model.input_shape=[80,80,3]", "--set", "optimizer.lr=0.001")
    assert r.exit_code == 0, r.output
    r = invoke("predict", out / "g", min((data / "disc").iterdir()), "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)[0]["top"]) == 3   # one output: the main classifier's 3 classes


def test_knn_memorises_the_training_split_and_evaluates_like_any_run(make_folder, tmp_path):
    data = make_folder(classes=3, per_class=16)
    out = tmp_path / "runs"
    r = invoke("train", "--data", data, "--model", "knn", "--set", "model.k=3", "--set", "model.metric=l1",
               "--name", "k", "--out-dir", out, *FAST, "--set", "model.input_shape=[28,28,1]")
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "k" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.9 and metrics["params"] == 0
    r = invoke("evaluate", out / "k", "--json")
    assert r.exit_code == 0, r.output
    assert abs(json.loads(r.stdout)["top1"] - metrics["test_accuracy"]) < 1e-6
    r = invoke("train", "--resume", out / "k")
    assert r.exit_code == 2 and "resume" in r.output and "Traceback" not in r.output


def test_nan_loss_stops_with_a_message_and_keeps_the_last_checkpoint(make_folder, tmp_path):
    data = make_folder(per_class=16)
    out = tmp_path / "runs"
    r = invoke("train", "--data", data, "--epochs", "2", "--name", "ok", "--out-dir", out, *FAST,
               "--model", "softmax", "--set", "schedule.name=constant")
    assert r.exit_code == 0, r.output
    # Resume with an absurd learning rate: the loss overflows in the third epoch.
    r = invoke("train", "--resume", out / "ok", "--epochs", "4", "--set", "optimizer.lr=1e38")
    assert r.exit_code == 2, r.output
    assert "loss became" in r.output and "--clipnorm" in r.output and "Traceback" not in r.output
    state = json.loads((out / "ok" / "backup" / (out / "ok" / "backup" / "LATEST").read_text().strip()
                        / "state.json").read_text())
    assert state["epoch"] == 2  # the last good checkpoint, not a NaN one


def test_a_second_trainer_is_refused_with_the_holders_pid(make_folder, tmp_path):
    from cnnctl.errors import CnnctlError
    from cnnctl.train.rundir import RunDir

    run = RunDir.create(str(tmp_path), "locked")
    run.lock()
    other = RunDir(run.path)
    with pytest.raises(CnnctlError, match=f"process {os.getpid()} is training into it"):
        other.lock()
    run.unlock()
    other.lock()
    other.unlock()


def test_resume_after_a_checkpoint_of_another_architecture_is_refused(make_folder, tmp_path):
    data = make_folder(per_class=8)
    out = tmp_path / "runs"
    assert invoke("train", "--data", data, "--epochs", "1", "--name", "a", "--out-dir", out, *FAST,
                  "--model", "softmax").exit_code == 0
    r = invoke("train", "--resume", out / "a", "--model", "lenet5", "--epochs", "2")
    assert r.exit_code == 2 and "another architecture" in r.output, r.output


def _cnnctl(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "cnnctl", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _weights(path: Path):
    import keras

    import cnnctl.models  # noqa: F401
    return [v.numpy() for v in keras.models.load_model(path, safe_mode=True).weights]


def test_killed_run_resumes_to_bit_identical_weights(make_folder, tmp_path):
    """SIGKILL mid-epoch, resume from the step backup: final weights equal an uninterrupted run's."""
    data = make_folder(classes=3, per_class=40)
    common = ["--data", data, "--epochs", "3", "--deterministic", "--checkpoint-every", "3",
              "--out-dir", tmp_path, "--strategy", "default", "--precision", "float32", "--batch-size", "8",
              "--set", "model.widths=[8,16]", "--set", "model.hidden=32", "--set", "data.augment=['flip','crop']"]
    ref = _cnnctl("train", *common, "--name", "reference")
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out

    victim = _cnnctl("train", *common, "--name", "victim")
    latest = tmp_path / "victim" / "backup" / "LATEST"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert not (tmp_path / "victim" / "metrics.json").exists(), "the run finished before it could be killed"
    state_dir = tmp_path / "victim" / "backup" / latest.read_text().strip()
    killed_at = json.loads((state_dir / "state.json").read_text())
    assert killed_at["epoch"] == 0 and 0 < killed_at["step_in_epoch"]  # mid-epoch

    resumed = _cnnctl("train", "--resume", tmp_path / "victim")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert "resuming" in out
    a = _weights(tmp_path / "reference" / "model.keras")
    b = _weights(tmp_path / "victim" / "model.keras")
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_a_full_disk_stops_with_a_message_and_the_run_resumes_after(make_folder, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writes past the limit fail with EFBIG."""
    import resource

    data = make_folder(per_class=16)
    common = ["--strategy", "default", "--precision", "float32", "--batch-size", "8",
              "--set", "model.widths=[4,8]", "--set", "model.hidden=16"]
    first = _cnnctl("train", "--data", data, "--epochs", "1", "--name", "disk", "--out-dir", tmp_path, *common)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    run = tmp_path / "disk"
    size = (run / "model.keras").stat().st_size
    before = (run / "backup" / "LATEST").read_text()

    def small_files_only():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    full = _cnnctl("train", "--resume", run, "--epochs", "2", preexec_fn=small_files_only)
    out, _ = full.communicate(timeout=300)
    assert full.returncode != 0
    assert "could not write" in out and "Traceback" not in out, out
    assert (run / "backup" / "LATEST").read_text() == before      # the last checkpoint is untouched
    assert not list(run.glob(".*.tmp*")), "no temporary files left behind"

    again = _cnnctl("train", "--resume", run, "--epochs", "2")   # space is back
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert json.loads((run / "metrics.json").read_text())["epochs_trained"] == 2


def test_backups_never_rewrite_the_checkpoint_latest_points_at(tmp_path):
    import keras

    from cnnctl.train.rundir import RunDir

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    run = RunDir.create(str(tmp_path), "b")
    state = {"epoch": 0, "step_in_epoch": 4, "global_step": 4}
    run.save_backup(model, state)
    first = (run.file("backup") / "LATEST").read_text().strip()
    run.save_backup(model, {"epoch": 1, "step_in_epoch": 0, "global_step": 4})  # same global step
    second = (run.file("backup") / "LATEST").read_text().strip()
    assert first != second and (run.file("backup") / first).is_dir()
    run.save_backup(model, {"epoch": 1, "step_in_epoch": 0, "global_step": 4})  # same state again
    third = (run.file("backup") / "LATEST").read_text().strip()
    assert third not in (first, second)
    assert sorted(p.name for p in run.file("backup").glob("ckpt-*")) == sorted([second, third])  # two kept
    assert run.load_backup(model)["epoch"] == 1


def test_a_batch_size_the_replicas_cannot_share_is_refused_with_a_multiple(make_folder, tmp_path):
    data = make_folder(per_class=8)
    r = invoke("train", "--data", data, "--epochs", "1", "--out-dir", tmp_path / "runs", "--strategy", "mirrored",
               "--precision", "float32", "--batch-size", "7")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "batch size 7 is not divisible by the 2 replicas" in r.output and "--batch-size 6" in r.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run directory left


def test_resume_with_another_optimizer_is_refused_and_the_run_is_untouched(make_folder, tmp_path):
    data = make_folder(per_class=8)
    out = tmp_path / "runs"
    assert invoke("train", "--data", data, "--epochs", "1", "--name", "o", "--out-dir", out, *FAST,
                  "--model", "softmax", "--set", "optimizer.name=adamw").exit_code == 0
    before = {p.relative_to(out): p.read_bytes() for p in (out / "o").rglob("*") if p.is_file() and p.name != "run.lock"}
    r = invoke("train", "--resume", out / "o", "--epochs", "2", "--set", "optimizer.name=sgd")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "belongs to another architecture or optimizer" in r.output
    after = {p.relative_to(out): p.read_bytes() for p in (out / "o").rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after.keys() - {Path("o/config.toml")} == before.keys() - {Path("o/config.toml")}
    assert all(after[k] == before[k] for k in before if k.name != "config.toml")   # weights, backup, metrics kept


def test_a_lambda_layer_is_refused_by_safe_mode_and_its_code_never_runs(make_folder, tmp_path):
    import keras

    data = make_folder(per_class=8)
    out = tmp_path / "runs"
    assert invoke("train", "--data", data, "--epochs", "1", "--name", "l", "--out-dir", out, *FAST,
                  "--model", "softmax").exit_code == 0
    marker = tmp_path / "code-ran"
    # A model whose Lambda creates a file when called: what a hostile .keras would carry. (The path
    # is a constant in the lambda's code, which Keras stores; loading unsafely creates the file.)
    touch = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    evil = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Lambda(touch),
                             keras.layers.Dense(2)])
    marker.unlink(missing_ok=True)
    evil.save(out / "l" / "model.keras")
    img = min((data / "bars").iterdir())
    for args in (["evaluate", out / "l"], ["predict", out / "l", img]):
        r = invoke(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert "refused to load" in r.output and "Lambda layer" in r.output and "safe_mode=False" in r.output
    assert not marker.exists()


def test_two_replica_training_through_the_engine_matches_one_device(make_folder, tmp_path):
    """`cnnctl train --strategy mirrored` (2 logical CPUs) and `--strategy default` give the same
    weights after the same steps: the engine splits the global batch and sums the replicas' gradients."""
    data = make_folder(classes=2, per_class=16)
    out = tmp_path / "runs"
    common = ["--data", data, "--epochs", "1", "--out-dir", out, "--precision", "float32", "--batch-size", "8",
              "--model", "lenet5", "--set", "data.val_split=0", "--set", "optimizer.name=sgd",
              "--set", "optimizer.lr=0.05", "--set", "schedule.name=constant", "--deterministic"]
    r1 = invoke("train", *common, "--name", "one", "--strategy", "default")
    assert r1.exit_code == 0, r1.output
    r2 = invoke("train", *common, "--name", "two", "--strategy", "mirrored", "--devices", "2")
    assert r2.exit_code == 0, r2.output
    assert "2 replica(s) x 4" in r2.output and "1 replica(s) x 8" in r1.output
    one, two = _weights(out / "one" / "model.keras"), _weights(out / "two" / "model.keras")
    assert len(one) == len(two)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    import keras

    from cnnctl import models
    keras.utils.set_random_seed(0)
    initial = np.asarray(models.build("lenet5", num_classes=2).weights[0])
    assert np.abs(initial - one[0]).max() > 1e-3   # 4 steps did move the weights
