"""GANs through the one engine: a conditional DCGAN run with per-epoch samples and scores,
`cnnctl generate`, exact resume after SIGKILL, and the errors a user can cause."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app

runner = CliRunner()
SMALL = ["--set", "task='generate'", "--set", "model.width=8", "--set", "optimizer.name='adam'",
         "--set", "optimizer.lr=0.001", "--set", "optimizer.beta_1=0.5", "--set", "optimizer.weight_decay=0.0",
         "--set", "schedule.name='constant'", "--set", "data.augment=[]", "--set", "generate.judge_epochs=20",
         "--set", "generate.eval_samples=60", "--set", "generate.final_samples=90", "--set", "generate.grid=4",
         "--strategy", "default", "--precision", "float32", "--batch-size", "12"]


def _shapes(root, per_class=40):
    """Three classes a judge tells apart at once: bars, stripes, a disc (28x28 grey PNGs)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28]
    for c, name in enumerate(["bars", "stripes", "disc"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 50, (28, 28)).astype(float)
            shift = i % 4
            if c == 0:
                img[((yy + shift) // 4) % 2 == 0] += 190
            elif c == 1:
                img[((xx + shift) // 4) % 2 == 0] += 190
            else:
                img[(yy - 14) ** 2 + (xx - 14) ** 2 < (6 + shift) ** 2] += 190
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def gan_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan")
    old = os.environ.get("CNNCTL_CACHE")
    os.environ["CNNCTL_CACHE"] = str(root / "cache")          # the judge is trained once, here
    yield root, _shapes(root / "shapes")
    if old is None:
        os.environ.pop("CNNCTL_CACHE", None)
    else:
        os.environ["CNNCTL_CACHE"] = old


@pytest.fixture(scope="module")
def cond_run(gan_env, fid_wheel):
    root, data = gan_env
    r = runner.invoke(app, ["train", "--model", "dcgan", "--set", "model.conditional=true", "--data", str(data),
                            "--epochs", "2", "--out-dir", str(root / "runs"), "--name", "cond", *SMALL,
                            "--set", "generate.inception_samples=6"])
    assert r.exit_code == 0, r.output
    return root / "runs" / "cond", r.output


def test_a_gan_run_writes_samples_and_scores_every_epoch(cond_run):
    run, output = cond_run
    for epoch in (1, 2):
        grid = Image.open(run / "samples" / f"epoch-{epoch:03d}.png")
        assert grid.size == (4 * 30 + 2, 4 * 30 + 2)           # 4 x 4 images of 28 px, 2 px apart
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 2
    for key in ("d_loss", "g_loss", "fid", "kid", "is", "covered", "class_kl", "label_accuracy"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    m = json.loads((run / "metrics.json").read_text())
    assert m["judge_test_accuracy"] > 0.9                     # the shapes are easy: the judge is trustworthy
    assert 0 <= m["real_floor_fid"] < m["test_fid"]
    assert 0 <= m["test_covered"] <= 3 and 0 <= m["test_label_accuracy"] <= 1
    by_class = m["test_label_accuracy_by_class"]
    assert sorted(by_class) == ["bars", "disc", "stripes"]              # 30 samples of each class
    assert np.mean(list(by_class.values())) == pytest.approx(m["test_label_accuracy"])
    assert math.isfinite(m["test_parzen_ll"]) and m["test_samples"] == 90
    # the standard space too: 6 samples against 6 real test images, the floor against 6 others
    assert m["inception_samples"] == 6
    assert 0 <= m["real_floor_inception_fid"] < m["test_inception_fid"]
    assert "FID" in output and "D " in output                 # the epoch line shows the task's fields


def test_generate_writes_files_and_respects_labels_and_seeds(cond_run, tmp_path):
    run, _ = cond_run
    r = runner.invoke(app, ["generate", str(run), "--n", "5", "--label", "Disc", "--json", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [x["label"] for x in rows] == ["disc"] * 5                   # a label matches regardless of case
    first = [np.asarray(Image.open(x["file"])) for x in rows]
    assert all(im.shape == (28, 28) and im.dtype == np.uint8 for im in first)
    assert (tmp_path / "a" / "grid.png").is_file()
    runner.invoke(app, ["generate", str(run), "--n", "5", "--label", "disc", "--out", str(tmp_path / "b")])
    again = [np.asarray(Image.open(tmp_path / "b" / f"{i:06d}.png")) for i in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))          # same seed, same images
    runner.invoke(app, ["generate", str(run), "--n", "5", "--label", "disc", "--seed", "1", "--out", str(tmp_path / "c")])
    other = [np.asarray(Image.open(tmp_path / "c" / f"{i:06d}.png")) for i in range(5)]
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    r = runner.invoke(app, ["generate", str(run), "--n", "8", "--interpolate", "4", "--json", "--out", str(tmp_path / "d")])
    lines = json.loads(r.output)
    classes = json.loads((run / "classes.json").read_text())
    assert len(lines) == 8 and [x["label"] for x in lines] == [classes[0]] * 4 + [classes[1]] * 4   # a class a line


def test_generate_user_errors_are_one_message(cond_run, gan_env, tmp_path):
    run, _ = cond_run
    r = runner.invoke(app, ["generate", str(run), "--label", "sneaker"])
    assert r.exit_code == 2 and "unknown label 'sneaker'" in r.output and "bars, disc, stripes" in r.output
    r = runner.invoke(app, ["generate", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such run directory" in r.output
    _, data = gan_env
    r = runner.invoke(app, ["train", "--model", "wgan", "--data", str(data), "--epochs", "1", "--out-dir",
                            str(tmp_path), *SMALL, "--batch-size", "16"])
    assert r.exit_code == 2 and "not a multiple of the 5 discriminator steps" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--model", "wgan_gp", "--data", str(data), "--epochs", "1", "--out-dir",
                            str(tmp_path), *SMALL, "--batch-size", "16", "--set", "model.n_critic=3"])
    assert r.exit_code == 2 and "not a multiple of the 3 discriminator steps" in r.output   # the recipe's n_critic


def _cnnctl(*args):
    return subprocess.Popen([sys.executable, "-m", "cnnctl", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_killed_gan_run_resumes_bit_identical(gan_env, cond_run, kill_at_first_backup):
    root, data = gan_env
    out = root / "resume"
    common = ["train", "--model", "wgan_gp", "--set", "model.n_critic=2", "--data", data, "--epochs", "2",
              "--deterministic", "--checkpoint-every", "2", "--out-dir", out, *SMALL]
    ref = _cnnctl(*common, "--name", "ref")
    text, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, text
    kill_at_first_backup(_cnnctl(*common, "--name", "victim"), out / "victim")
    resumed = _cnnctl("train", "--resume", out / "victim")
    text, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resuming" in text, text
    import keras

    import cnnctl.models  # noqa: F401
    a = keras.models.load_model(out / "ref" / "model.keras").weights
    b = keras.models.load_model(out / "victim" / "model.keras").weights
    assert len(a) == len(b) == 19                  # G's 12 weights and the critic's 7: both networks compared
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))
    ma, mb = (json.loads((out / n / "metrics.json").read_text()) for n in ("ref", "victim"))
    assert ma["test_fid"] == mb["test_fid"]


def test_a_nan_loss_stops_a_gan_run_with_one_message(gan_env, tmp_path):
    _, data = gan_env
    r = runner.invoke(app, ["train", "--model", "dcgan", "--data", str(data), "--epochs", "1", "--out-dir",
                            str(tmp_path), *SMALL, "--set", "optimizer.name='sgd'", "--set", "optimizer.lr=1e30"])
    assert r.exit_code == 2 and "the loss became" in r.output and "Traceback" not in r.output


def test_mode_collapse_is_warned_about(cond_run, gan_env, tmp_path):
    """A generator that draws one image whatever z is: one class takes every sample."""
    from cnnctl import models
    from cnnctl.tasks.generate import EpochSamples, SampleScorer
    from cnnctl.train.judge import Judge
    from cnnctl.train.rundir import RunDir

    root, _ = gan_env
    # the cache holds the judge's run directory and its lock file (HASH.lock) side by side
    judge = Judge(next(p for p in (root / "cache" / "judges").iterdir() if p.is_dir()))
    gan = models.build("dcgan", num_classes=3, width=8)
    for w in gan.generator.get_layer("to_image").weights:
        w.assign(np.zeros(w.shape, "float32"))                # every sample is the same grey square
    real = np.stack([np.asarray(Image.open(p)) for p in sorted((gan_env[1] / "bars").glob("*.png"))])[..., None]
    said = []
    callback = EpochSamples(RunDir.create(tmp_path, "collapse"), SampleScorer(judge, real, np.zeros(len(real), int)),
                            samples=30, grid=2, log=said.append)
    callback.set_model(gan)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["top_class_share"] == 1.0 and logs["covered"] == 1
    assert len(said) == 1 and "mode collapse" in said[0] and "100%" in said[0]


def test_predict_names_the_command_for_a_gan_run(cond_run):
    run, _ = cond_run
    r = runner.invoke(app, ["predict", str(run), str(run / "samples" / "epoch-001.png")])
    assert r.exit_code == 2 and "is a generate run" in r.output and "cnnctl generate" in r.output, r.output


def test_evaluate_on_a_gan_run_reproduces_its_final_scores(cond_run, gan_env):
    """`cnnctl evaluate RUN` is the task's own final evaluation: the same samples, judge and real
    images as the run's metrics.json, so the same numbers (and Inception space on request)."""
    run, _ = cond_run
    r = runner.invoke(app, ["evaluate", str(run), "--json", "--inception", "6"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout[r.stdout.index("{"):])
    want = json.loads((run / "metrics.json").read_text())
    for key in ("test_fid", "test_kid", "test_label_accuracy", "test_parzen_ll", "real_floor_fid",
                "test_inception_fid", "real_floor_inception_fid"):
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    assert json.loads((run / "evaluation.json").read_text())["test_fid"] == got["test_fid"]
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(gan_env[1])])
    assert r.exit_code == 2 and "--data is for classifiers" in r.output
