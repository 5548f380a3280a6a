"""Segmentation: the free scenes of SCENES.md, U-Net's weight map, overlap-tile inference, the scores,
the task through the engine and `cnnctl segment`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.data.scenes import MASK_THRESHOLD, free_scene
from cnnctl.data.weight_map import border_term, class_balance, weight_map
from cnnctl.metrics.segmentation import instance_scores, semantic_scores

runner = CliRunner()


# ----------------------------------------------------------------------------- free scenes
@pytest.fixture(scope="module")
def fashion():
    from cnnctl.data.sources import fashion_mnist

    fm = fashion_mnist("")
    return fm["train"].images[..., 0], fm["train"].labels


def test_free_scenes_follow_scenes_md(fashion):
    images, labels = fashion
    counts = []
    for index in range(200):
        scene = free_scene(images, labels, "train", 0, index)
        assert scene.image.shape == (128, 128) and scene.image.dtype == np.uint8
        counts.append(len(scene.items))
        label_image = scene.label_image()
        covered = np.zeros((128, 128), bool)
        for item in scene.items:
            ys, xs = np.nonzero(item.mask)
            # the mask: pixels >= 32 of the pasted item, a canvas pixel belongs to one item only
            assert (scene.image[item.mask] >= MASK_THRESHOLD).all() and not (covered & item.mask).any()
            covered |= item.mask
            assert item.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert item.box[2] - item.box[0] <= 56 and (label_image[item.mask] == item.label + 1).all()
        # outside every mask the canvas is dark (< 32) and labelled background
        assert (label_image[~covered] == 0).all() and (scene.image[~covered] < MASK_THRESHOLD).all()
    assert set(counts) == {1, 2, 3, 4, 5}
    again = free_scene(images, labels, "train", 0, 17)
    assert np.array_equal(again.image, free_scene(images, labels, "train", 0, 17).image)   # a pure function


def test_packed_training_scenes_keep_the_spec_for_validation_and_test():
    """data.scene_items packs the training scenes only; validation and test scenes stay SCENES.md's."""
    from cnnctl.data.segmentation import free_scenes, load_segmentation
    from cnnctl.errors import CnnctlError

    spec = free_scenes((40, 20, 20), seed=0)
    packed = free_scenes((40, 20, 20), seed=0, train_items=(5, 5))
    for split in ("val", "test"):
        assert np.array_equal(spec.splits[split].images, packed.splits[split].images)
        assert np.array_equal(spec.splits[split].labels, packed.splits[split].labels)
    items = lambda data: [int(k.max()) for k in data.splits["train"].instances]     # items per scene
    # five drawn in every packed scene (an item is dropped when 100 placements fail), 1-5 in the spec's
    assert max(items(packed)) == 5 and np.mean(items(packed)) > np.mean(items(spec)) + 0.8
    for bad in ([0, 5], [4, 3], [2]):
        with pytest.raises(CnnctlError, match="scene_items"):
            load_segmentation("scenes:free", (4, 2, 2), 0, bad)
    with pytest.raises(CnnctlError, match="applies to scenes:free"):
        load_segmentation("nuclei", (), 0, [3, 5])


def test_free_scene_items_are_resized_fashion_items_in_disjoint_squares(fashion):
    """Rebuild a scene from its own draws: the items are bilinear resizes by s in [1, 2], pasted with max."""
    from cnnctl.data.scenes import _resized

    images, labels = fashion
    # (8, 8): packed scenes, where many items find no free square in their 100 draws, so both ways the
    # generator consumes a placement's draws (all failed; the first success) are checked one draw at a time
    for index, (fewest, most) in [(i, (1, 5)) for i in range(30)] + [(i, (8, 8)) for i in range(30)]:
        rng = np.random.default_rng([0, 0, index, 1])          # the stream the module documents
        canvas = np.zeros((128, 128), np.uint8)
        squares = []
        for _ in range(int(rng.integers(fewest, most + 1))):
            pick = int(rng.integers(0, len(images)))
            size = round(28 * rng.uniform(1.0, 2.0))
            assert 28 <= size <= 56
            for _attempt in range(100):
                x, y = (int(v) for v in rng.integers(0, 128 - size + 1, size=2))
                if all(x + size <= a or a + s <= x or y + size <= b or b + s <= y for a, b, s in squares):
                    squares.append((x, y, size))
                    np.maximum(canvas[y:y + size, x:x + size], _resized(images[pick], size),
                               out=canvas[y:y + size, x:x + size])
                    break
        scene = free_scene(images, labels, "train", 0, index, (fewest, most))
        assert np.array_equal(canvas, scene.image) and len(scene.items) == len(squares)


# ----------------------------------------------------------------------------- weight map
def test_weight_map_on_two_touching_discs_matches_a_hand_computation():
    yy, xx = np.mgrid[:41, :44]
    a = (yy - 20) ** 2 + (xx - 10) ** 2 <= 100           # disc of radius 10 at x = 10: row 20 spans x 0..20
    b = (yy - 20) ** 2 + (xx - 32) ** 2 <= 100           # at x = 32: row 20 spans x 22..42; x = 21 is the gap
    instances = a.astype(np.int32) + 2 * b.astype(np.int32)
    labels = (instances > 0).astype(np.int64)
    wc = class_balance(labels, 2)
    n, n_bg = labels.size, int((labels == 0).sum())
    assert wc[0] == pytest.approx(n / (2 * n_bg)) and wc[1] == pytest.approx(n / (2 * (n - n_bg)))
    w = weight_map(labels, instances, wc, w0=10.0, sigma=5.0)
    # the gap pixel between the discs: d1 = d2 = 1 -> w_c + 10 exp(-(1 + 1)^2 / (2 * 25))
    assert w[20, 21] == pytest.approx(wc[0] + 10 * np.exp(-4 / 50), rel=1e-6)
    # a corner pixel (0, 43): nearest pixel of each disc by brute force
    pa, pb = np.argwhere(a), np.argwhere(b)
    for y, x in [(0, 43), (5, 21), (35, 2)]:
        d = sorted([np.sqrt(((pa - (y, x)) ** 2).sum(1)).min(), np.sqrt(((pb - (y, x)) ** 2).sum(1)).min()])
        assert w[y, x] == pytest.approx(wc[0] + 10 * np.exp(-((d[0] + d[1]) ** 2) / 50), rel=1e-5)
    assert np.allclose(w[a], wc[1]) and np.allclose(w[b], wc[1])       # inside the cells: class weight only
    assert border_term(a.astype(np.int32)).max() == 0                   # one cell: no border to separate


# ----------------------------------------------------------------------------- scores
def test_palette_images_are_read_as_colour_unless_their_palette_is_grey(tmp_path):
    """Photos saved as palette PNGs (sahi's terrain2.png is one) must keep their colours; a palette of
    greys reads as one channel, like an "L" image."""
    from cnnctl.data.segmentation import read_image

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(colour).quantize(8).save(tmp_path / "colour.png")
    expected = np.asarray(Image.open(tmp_path / "colour.png").convert("RGB"))
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) > 1
    np.testing.assert_array_equal(read_image(tmp_path / "colour.png"), expected)
    grey = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    Image.fromarray(grey).convert("RGB").quantize(8).save(tmp_path / "grey.png")
    assert Image.open(tmp_path / "grey.png").mode == "P"
    got = read_image(tmp_path / "grey.png")
    assert got.shape == (12, 16, 1)
    np.testing.assert_array_equal(got[..., 0], np.asarray(Image.open(tmp_path / "grey.png").convert("L")))


def test_semantic_scores_by_hand():
    truth = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]]])
    pred = np.array([[[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0]]])
    s = semantic_scores(truth, pred, ["bg", "a", "b"])
    # bg: TP 3, FP 2, FN 1 -> 3/6; a: TP 4, FP 1 -> 4/5; b: TP 2, FN 2 -> 2/4
    assert [c["iou"] for c in s["per_class"]] == pytest.approx([0.5, 0.8, 0.5])
    assert s["miou"] == pytest.approx(0.6) and s["pixel_accuracy"] == pytest.approx(9 / 12)
    assert s["dice"] == pytest.approx((8 / 9 + 4 / 6) / 2)            # foreground classes only


def test_instance_scores_merge_and_split():
    truth = np.zeros((1, 10, 20), np.int32)
    truth[0, 2:8, 2:8] = 1
    truth[0, 2:8, 10:16] = 2
    exact = (truth > 0).astype(np.uint8)
    s = instance_scores(truth, exact)
    assert s["instance_f1"] == 1.0 and s["dsb_score"] == 1.0 and s["instances_predicted"] == 2
    merged = exact.copy()
    merged[0, 2:8, 8:10] = 1                              # a bridge: one component covering both (IoU 36/84)
    s = instance_scores(truth, merged)
    assert s["instances_predicted"] == 1 and s["instance_f1"] == 0.0 and s["dsb_score"] == 0.0
    half = exact.copy()
    half[0, 2:8, 13:16] = 0                               # the second cell half found: IoU 0.5, not > 0.5
    s = instance_scores(truth, half)
    assert s["instance_tp"] == 1 and s["instance_fp"] == 1 and s["instance_fn"] == 1
    assert s["dsb_score"] == pytest.approx(np.mean([1 / 3] * 10))


# ----------------------------------------------------------------------------- overlap-tile
def test_tiled_prediction_equals_whole_image_prediction_on_a_same_padding_unet():
    from cnnctl.models.unet import unet
    from cnnctl.segmenter import predict_tiled

    options = {"num_classes": 3, "base_filters": 4, "depth": 2, "padding": "same"}
    whole = unet(input_shape=(160, 200, 1), **options)
    tile = unet(input_shape=(96, 96, 1), **options)
    rng = np.random.default_rng(0)
    tile.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in whole.get_weights()])
    whole.set_weights(tile.get_weights())
    image = rng.integers(0, 256, (160, 200, 1)).astype(np.uint8)
    want = np.asarray(whole.predict_on_batch(image[None].astype(np.float32)))[0]
    got = predict_tiled(tile, image, margin=32)           # 3 x 4 tiles of 96 px, cores of 32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    # a margin smaller than the receptive field (about 26 px here) shows at the seams
    assert np.abs(predict_tiled(tile, image, margin=8) - want).max() > 1e-3


def test_valid_unet_tiles_see_the_mirrored_image():
    from cnnctl.models.unet import output_size, unet
    from cnnctl.segmenter import predict_tiled

    model = unet(num_classes=2, input_shape=(92, 92, 1), base_filters=4, depth=2)
    o = output_size(92, 2)
    m = (92 - o) // 2
    image = np.random.default_rng(1).integers(0, 256, (o, o, 1)).astype(np.uint8)
    want = np.asarray(model.predict_on_batch(np.pad(image, ((m, m), (m, m), (0, 0)), mode="reflect")[None]
                                             .astype(np.float32)))[0]
    np.testing.assert_allclose(predict_tiled(model, image), want, atol=1e-5)


# ----------------------------------------------------------------------------- decoding: flip TTA, object vote
def test_the_object_vote_gives_each_connected_region_its_most_probable_class():
    from cnnctl.segmenter import vote_objects

    probs = np.zeros((6, 10, 4), np.float32)
    probs[..., 0] = 1.0                                   # background everywhere ...
    # region A, columns 1-3 of rows 1-2: four pixels lean to class 1 (0.4 against 0.35), two are surely
    # class 2 (0.9): the pixel majority says 1, the summed probability says 2 (4 x 0.35 + 1.8 > 4 x 0.4 + 0.1)
    a = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    for y, x in a[:4]:
        probs[y, x] = [0.25, 0.4, 0.35, 0.0]
    for y, x in a[4:]:
        probs[y, x] = [0.05, 0.05, 0.9, 0.0]
    # region B: two blocks touching only at a corner (8-connected: one region), class 3 surely in one
    probs[1:3, 6:8] = [0.0, 0.0, 0.1, 0.9]
    probs[3:5, 8:10] = [0.0, 0.55, 0.0, 0.45]
    got = vote_objects(probs)
    assert (got[tuple(np.array(a).T)] == 2).all()
    assert (got[1:3, 6:8] == 3).all() and (got[3:5, 8:10] == 3).all()   # 4 x 0.9 + 4 x 0.45 > 4 x 0.55
    background = probs.argmax(-1) == 0
    assert (got[background] == 0).all() and (got[~background] > 0).all()
    # the plain argmax, which the vote changes
    assert (probs.argmax(-1)[tuple(np.array(a[:4]).T)] == 1).all()


def test_objects_of_the_foreground_keep_a_two_class_item_whole():
    from cnnctl.metrics.segmentation import components, instance_scores

    predicted = np.zeros((8, 12), np.uint8)
    predicted[1:5, 1:3], predicted[1:5, 3:5] = 4, 7        # one item, its halves in two classes
    predicted[6:8, 8:11] = 2                                # a second item
    truth = np.zeros((8, 12), np.int32)
    truth[1:5, 1:5], truth[6:8, 8:11] = 1, 2
    assert components(predicted).max() == 3                 # by class: the first item in two pieces
    whole = components(predicted, "foreground")
    assert whole.max() == 2 and len(np.unique(whole[1:5, 1:5])) == 1
    # by class: each half has IoU 0.5 with the item, not above it: 1 match, 2 false, 1 missed: F1 = 2 / 5
    assert instance_scores(truth[None], predicted[None])["instance_f1"] == pytest.approx(0.4)
    assert instance_scores(truth[None], predicted[None], by="foreground")["instance_f1"] == 1.0


def test_flip_decoding_is_mirror_symmetric():
    from cnnctl.models.unet import unet
    from cnnctl.segmenter import Decoding, predict_labels, predict_probs

    rng = np.random.default_rng(3)
    model = unet(num_classes=4, input_shape=(32, 32, 1), base_filters=4, depth=2, padding="same")
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    image = rng.integers(0, 256, (32, 32, 1)).astype(np.uint8)
    mirror = image[:, ::-1]
    # with flip TTA the mirror image gets the mirrored probabilities; without it, not
    np.testing.assert_allclose(predict_probs(model, mirror, flip=True)[:, ::-1],
                               predict_probs(model, image, flip=True), atol=1e-5)
    assert np.abs(predict_probs(model, mirror)[:, ::-1] - predict_probs(model, image)).max() > 1e-3
    # the batched path (images of the tile's size) decodes as the one-image path does; at most 2 of the
    # 2,048 pixels may differ (a near tie that batch 2 and batch 1 round apart); leaving out the flip in
    # one path changes 7 of them, leaving out the vote about 670
    both = np.stack([image, mirror])
    decoding = Decoding(flip=True, vote=True)
    batched = predict_labels(model, both, decoding=decoding)
    one = predict_labels(model, [image, mirror], decoding=decoding)
    assert (batched != np.stack(one)).sum() <= 2


# ----------------------------------------------------------------------------- the task and the command
@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("segruns")
    r = runner.invoke(app, ["train", "segment-scenes", "--out-dir", str(out), "--epochs", "1", "--batch-size", "16",
                            "--set", "data.scene_counts=[96, 16, 24]", "--set", "model.base_filters=4",
                            "--set", "model.depth=3", "--precision", "float32", "--strategy", "default"])
    assert r.exit_code == 0, r.output
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_a_segment_run_writes_its_scores(scene_run):
    metrics = json.loads((scene_run / "metrics.json").read_text())
    assert json.loads((scene_run / "classes.json").read_text())[:2] == ["background", "t-shirt"]
    for key in ("test_miou", "test_pixel_accuracy", "test_dice", "test_instance_f1", "test_dsb_score"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["test_per_class"]) == 11 and metrics["test_images"] == 24
    assert metrics["paper_iou_reference"]["PhC-U373"] == 0.9203


def test_cnnctl_segment_writes_masks_and_overlays(scene_run, fashion, tmp_path):
    from cnnctl.data.segmentation import free_scenes
    from cnnctl.metrics.segmentation import semantic_scores as scores
    from cnnctl.segmenter import load_segmenter, predict_labels

    data = free_scenes((0, 0, 6), seed=0)
    test = data.splits["test"]
    files = []
    for name, im in zip(test.names, test.images):
        Image.fromarray(im[..., 0]).save(tmp_path / f"{name}.png")
        files.append(str(tmp_path / f"{name}.png"))
    big = np.tile(test.images[0], (2, 3, 1))                     # 256x384: tiled
    Image.fromarray(big[..., 0]).save(tmp_path / "big.png")
    files.append(str(tmp_path / "big.png"))
    r = runner.invoke(app, ["segment", *files, "--model", str(scene_run), "--out", str(tmp_path / "out"), "--json",
                            "--instances"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    masks = [np.asarray(Image.open(row["mask"])) for row in rows]
    assert masks[-1].shape == (256, 384) and np.asarray(Image.open(rows[-1]["overlay"])).shape == (256, 384, 3)
    # the command's masks are the task's predictions: the same scores as predicting the arrays
    model, _, decoding = load_segmenter(scene_run)
    direct = predict_labels(model, test.images, decoding=decoding)
    assert np.array_equal(np.stack(masks[:-1]), direct)
    assert scores(test.labels, np.stack(masks[:-1]), data.class_names)["miou"] == pytest.approx(
        scores(test.labels, direct, data.class_names)["miou"])
    assert all(isinstance(row["instances"], int) for row in rows)
    # the recipe's objects are components of the foreground, each named by its most probable class
    assert decoding.instances == "foreground"
    for row in rows:
        ids = np.asarray(Image.open(row["instances_file"]))
        assert len(row["objects"]) == row["instances"] == ids.max()
        assert [o["pixels"] for o in row["objects"]] == [int((ids == o["id"]).sum()) for o in row["objects"]]
        assert all(o["class"] in data.class_names[1:] for o in row["objects"])


def test_segment_errors_are_one_clear_message(scene_run, tmp_path):
    r = runner.invoke(app, ["segment", str(tmp_path / "nope.png"), "--model", str(scene_run)])
    assert r.exit_code != 0 and "does not exist" in r.output and "Traceback" not in r.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    r = runner.invoke(app, ["segment", str(bad), "--model", str(scene_run)])
    assert r.exit_code != 0 and "cannot read image" in r.output and "Traceback" not in r.output
    other = tmp_path / "classify-run"
    other.mkdir()
    (other / "config.toml").write_text('task = "classify"\n')
    r = runner.invoke(app, ["segment", str(bad), "--model", str(other)])
    assert r.exit_code != 0 and "not a segmentation run (its task is 'classify')" in r.output


def test_mask_folder_problems_are_reported_by_path(tmp_path):
    from cnnctl.data.segmentation import mask_folder
    from cnnctl.errors import CnnctlError

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("background\ncell\n")
    for name, size, value in [("ok", (8, 8), 1), ("small", (4, 8), 1), ("odd", (8, 8), 7)]:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(np.full(size, value, np.uint8)).save(tmp_path / "masks" / f"{name}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "lonely.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "wide.png")
    Image.fromarray(np.full((8, 8), 300, np.uint16)).save(tmp_path / "masks" / "wide.png")   # 16-bit ids
    with pytest.raises(CnnctlError) as e:
        mask_folder(str(tmp_path))
    text = str(e.value)
    assert "lonely.png: no mask" in text and "small.png: mask is 8x4" in text and "odd.png: mask values [7]" in text
    assert "wide.png: mask value 300 is above 255" in text           # not silently wrapped to 44
    for name in ("small", "odd", "lonely", "wide"):
        (tmp_path / "images" / f"{name}.png").unlink()
    data = mask_folder(str(tmp_path))
    assert data.class_names == ["background", "cell"] and data.splits["train"].labels.max() == 1


def test_nuclei_are_split_by_region_with_their_instances():
    from cnnctl.data.segmentation import NUCLEI, nuclei, read_tiff

    data = nuclei()
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    assert train.images.shape == (1, 384, 384, 1) and val.images.shape == (1, 128, 384, 1)
    assert test.images.shape == (1, 512, 128, 1)
    whole = read_tiff(NUCLEI / "mask2d.tif.gz")
    assert len(np.unique(whole)) - 1 == 125                       # the 125 nuclei DATA.md names
    # the three regions tile the image without overlap: every pixel is in exactly one split
    assert train.labels.size + val.labels.size + test.labels.size == 512 * 512
    assert np.array_equal(test.instances[0], whole[:, 384:]) and np.array_equal(test.labels[0], whole[:, 384:] > 0)
    assert data.class_names == ["background", "nucleus"]


def test_instance_tiff_folders_keep_their_ids(tmp_path):
    import tifffile

    from cnnctl.data.segmentation import mask_folder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    ids = np.zeros((20, 30), np.uint16)
    ids[2:8, 2:8], ids[10:18, 5:25] = 7, 300
    tifffile.imwrite(tmp_path / "images" / "a.tif", (np.arange(600).reshape(20, 30) * 50).astype(np.uint16))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", ids)
    data = mask_folder(str(tmp_path))
    sp = data.splits["train"]
    assert np.array_equal(sp.instances[0], ids) and np.array_equal(sp.labels[0], ids > 0)
    assert sp.images.dtype == np.uint8 and sp.images[0, 0, 0, 0] == 0 and sp.images[0, -1, -1, 0] == 255
    assert data.class_names == ["background", "class_1"]


def test_segnet_unpools_by_the_encoders_switches(tmp_path):
    import keras

    from cnnctl import models
    from cnnctl.layers import MaxPoolWithSwitches, MaxUnpool

    x = np.random.default_rng(0).normal(size=(2, 6, 8, 3)).astype(np.float32)
    inp = keras.Input((6, 8, 3))
    pooled, switches = MaxPoolWithSwitches(2)(inp)
    back = keras.Model(inp, MaxUnpool()([pooled, switches, inp]))(x).numpy()
    windows = x.reshape(2, 3, 2, 4, 2, 3)
    is_max = windows == windows.max(axis=(2, 4), keepdims=True)
    # each window's maximum stays where it was, everything else is zero
    np.testing.assert_array_equal(back, np.where(is_max, windows, 0).reshape(2, 6, 8, 3))
    model = models.build("segnet_small", num_classes=5, input_shape=(32, 32, 1), base_filters=4, depth=3)
    assert model.output_shape == (None, 32, 32, 5)
    assert [la.name for la in model.layers if isinstance(la, MaxUnpool)] == ["unpool3", "unpool2", "unpool1"]
    model.save(tmp_path / "segnet.keras")
    img = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "segnet.keras").predict_on_batch(img),
                                  model.predict_on_batch(img))


# ----------------------------------------------------------------------------- elastic deformation
def test_elastic_field_is_bicubic_through_a_3x3_gaussian_grid():
    from cnnctl.data.elastic import displacement_field

    field = displacement_field((61, 81), np.random.default_rng([7, 1, 3]), sigma=10.0)
    nodes = np.random.default_rng([7, 1, 3]).normal(0.0, 10.0, size=(2, 3, 3))
    # the grid's nodes sit on the corners, the middle and the edge midpoints of the tile
    np.testing.assert_allclose(field[:, ::30, ::40], nodes, atol=1e-4)
    assert np.abs(np.diff(field, axis=1)).max() < 3.0          # smooth: no jumps between neighbours
    assert np.array_equal(field, displacement_field((61, 81), np.random.default_rng([7, 1, 3])))
    assert not np.allclose(field, displacement_field((61, 81), np.random.default_rng([7, 2, 3])))
    assert np.abs(displacement_field((20, 20), np.random.default_rng(0), sigma=0.0)).max() == 0
    # the field is the spline fitted to this draw's nodes (the basis maps are that spline, precomputed)
    from scipy.ndimage import zoom

    direct = np.stack([zoom(nodes[i], (61 / 3, 81 / 3), order=3, mode="mirror", grid_mode=False)[:61, :81]
                       for i in range(2)])
    np.testing.assert_allclose(field, direct, atol=1e-4)


def test_warp_samples_as_scipy_map_coordinates_does():
    """The numpy warp gives scipy's bilinear / nearest resampling with edge-clamped sample points."""
    from scipy.ndimage import map_coordinates

    from cnnctl.data.elastic import displacement_field, warp

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (40, 56, 2)).astype(np.uint8)
    labels = rng.integers(0, 11, (40, 56)).astype(np.uint8)
    field = displacement_field((40, 56), rng, sigma=12.0)          # large: many points land outside
    coords = np.stack([np.arange(40)[:, None] + field[0], np.arange(56)[None, :] + field[1]])
    assert ((coords[0] < 0) | (coords[0] > 39) | (coords[1] < 0) | (coords[1] > 55)).mean() > 0.05
    for c in range(2):
        want = map_coordinates(image[..., c], coords, order=1, mode="nearest")
        assert np.abs(warp(image, field, order=1)[..., c].astype(int) - want).max() <= 1
    assert np.array_equal(warp(labels, field, order=0), map_coordinates(labels, coords, order=0, mode="nearest"))
    ramp = np.tile(np.arange(56, dtype=np.float32), (40, 1))
    np.testing.assert_allclose(warp(ramp, field, order=1), map_coordinates(ramp, coords, order=1, mode="nearest"),
                               atol=1e-3)


def test_windows_deform_image_labels_and_weights_together():
    from cnnctl.data.elastic import displacement_field
    from cnnctl.tasks.segment import Windows

    yy, xx = np.mgrid[:60, :60]
    labels = (((yy // 12) + (xx // 12)) % 3).astype(np.uint8)[None]          # a 3-class checkerboard
    images = (labels * 100).astype(np.uint8)[..., None]
    weights = (labels + 1).astype(np.float32)
    w = Windows(images, labels, weights, in_side=48, out_side=32)
    rows = np.array([[0, 10, 20]])
    x0, y0, w0 = w.batch(rows)
    assert np.array_equal(x0[0, 8:40, 8:40, 0], y0[0] * 100) and np.array_equal(w0[0], y0[0] + 1)
    field = displacement_field((48, 48), np.random.default_rng(3), sigma=6.0)
    x1, y1, w1 = w.batch(rows, fields=[field])
    assert not np.array_equal(y1, y0)                                    # it moved
    assert np.array_equal(w1[0], y1[0] + 1)                              # weights go with the labels
    # away from class borders (where bilinear and nearest may disagree) the image is its labels x 100
    img, lab = x1[0, 8:40, 8:40, 0].astype(int), y1[0].astype(int)
    interior = np.ones_like(lab, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior[1:-1, 1:-1] &= lab[1:-1, 1:-1] == lab[1 + dy:lab.shape[0] - 1 + dy, 1 + dx:lab.shape[1] - 1 + dx]
    interior[[0, -1]] = interior[:, [0, -1]] = False
    assert interior.mean() > 0.5 and np.abs(img - lab * 100)[interior].max() <= 1


def test_a_killed_segment_run_resumes_bit_identical(tmp_path, kill_at_first_backup):
    """Windows, flips and elastic fields are functions of (seed, epoch, position): a run killed after
    its first mid-epoch backup and resumed ends with the uninterrupted run's weights."""
    import subprocess
    import sys

    import keras

    import cnnctl.models
    import cnnctl.tasks.segment  # noqa: F401  (the compiled metrics' classes)

    common = [sys.executable, "-m", "cnnctl", "train", "segment-scenes", "--epochs", "2", "--batch-size", "8",
              "--deterministic", "--checkpoint-every", "2", "--out-dir", str(tmp_path), "--precision", "float32",
              "--set", "data.scene_counts=[48, 8, 8]", "--set", "model.base_filters=4", "--set", "model.depth=2",
              "--set", "data.augment=['flip', 'elastic']", "--set", "segment.class_balance=true"]

    def start(*extra):
        return subprocess.Popen([*common, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    ref = start("--name", "ref")
    text, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, text
    kill_at_first_backup(start("--name", "victim"), tmp_path / "victim")
    resumed = subprocess.run([sys.executable, "-m", "cnnctl", "train", "--resume", str(tmp_path / "victim")],
                             check=False, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout, resumed.stdout + resumed.stderr
    a = keras.models.load_model(tmp_path / "ref" / "model.keras").weights
    b = keras.models.load_model(tmp_path / "victim" / "model.keras").weights
    assert len(a) == len(b) > 10 and all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))
    ma, mb = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("ref", "victim"))
    assert ma["test_miou"] == mb["test_miou"]


def test_a_folder_of_images_of_various_sizes_trains_and_scores(tmp_path):
    """Real folders mix sizes (and grey with colour): windows, prediction and scores work per image."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, sizes in (("train", [(40, 56), (24, 24), (64, 48)]), ("test", [(36, 70), (20, 30)])):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for k, (h, w) in enumerate(sizes):
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4:3 * h // 4, w // 3:2 * w // 3] = 1 + k % 2
            image = (rng.integers(0, 40, (h, w)) + mask * 100).astype(np.uint8)
            if k == 0:
                Image.fromarray(np.stack([image] * 3, axis=-1)).save(root / split / "images" / f"{k}.png")
            else:
                Image.fromarray(image).save(root / split / "images" / f"{k}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{k}.png")
    (root / "classes.txt").write_text("background\nbox\nother box\n")
    r = runner.invoke(app, ["train", "--model", "unet", "--data", str(root), "--out-dir", str(tmp_path / "runs"),
                            "--name", "mixed", "--epochs", "2", "--batch-size", "2", "--precision", "float32",
                            "--strategy", "default", "--set", "task='segment'", "--set", "model.input_shape=[32, 32, 3]",
                            "--set", "model.padding='same'", "--set", "model.base_filters=4", "--set", "model.depth=2",
                            "--set", "data.val_split=0.0", "--set", "optimizer.name='adam'"])
    assert r.exit_code == 0, r.output
    assert "various sizes" in r.output
    m = json.loads((tmp_path / "runs" / "mixed" / "metrics.json").read_text())
    # every test pixel is scored once: 36 x 70 + 20 x 30
    assert sum(c["pixels"] for c in m["test_per_class"]) == 36 * 70 + 20 * 30
    assert 0.0 <= m["test_miou"] <= 1.0


def test_the_oxford_pet_trimap_layout(tmp_path):
    from cnnctl.data.segmentation import load_segmentation
    from cnnctl.errors import CnnctlError

    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    trimaps = {}
    for name, (h, w) in (("Abyssinian_1", (30, 40)), ("beagle_2", (25, 20)), ("pug_3", (16, 16))):
        Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(tmp_path / "images" / f"{name}.jpg")
        tri = np.full((h, w), 2, np.uint8)                  # background
        tri[5:12, 5:12] = 1                                  # the pet
        tri[4, 4:13] = 3                                     # its border
        trimaps[name] = tri
        Image.fromarray(tri).save(tmp_path / "annotations" / "trimaps" / f"{name}.png")
    (tmp_path / "annotations" / "trainval.txt").write_text("Abyssinian_1 1 1 1\nbeagle_2 13 2 1\n")
    (tmp_path / "annotations" / "test.txt").write_text("pug_3 28 2 2\n")
    data = load_segmentation(str(tmp_path))
    assert data.source == "pet" and data.class_names == ["background", "pet", "border"]
    train, test = data.splits["train"], data.splits["test"]
    assert train.names == ["Abyssinian_1", "beagle_2"] and test.names == ["pug_3"]
    assert isinstance(train.labels, list)                   # two sizes
    want = np.select([trimaps["beagle_2"] == 2, trimaps["beagle_2"] == 1], [0, 1], 2)
    assert np.array_equal(train.labels[1], want)
    bad = np.full((16, 16), 7, np.uint8)
    Image.fromarray(bad).save(tmp_path / "annotations" / "trimaps" / "pug_3.png")
    with pytest.raises(CnnctlError, match="pug_3.png: unreadable mask: values \\[7\\]"):
        load_segmentation(str(tmp_path))


def test_coco_polygons_and_rle_become_label_and_instance_maps(tmp_path):
    from pycocotools import mask as mask_utils

    from cnnctl.data.segmentation import load_segmentation

    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    square = np.zeros((20, 30), np.uint8, order="F")
    square[10:15, 20:28] = 1
    rle = mask_utils.encode(square)
    rle["counts"] = rle["counts"].decode()
    doc = {"images": [{"id": 7, "file_name": "a.png", "height": 20, "width": 30}],
           "categories": [{"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}],
           "annotations": [
               {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0,
                "segmentation": [[2, 2, 12, 2, 12, 8, 2, 8]]},        # polygon, x/y pixel corners
               {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": rle}]}
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    data = load_segmentation(str(tmp_path / "instances.json"))
    assert data.class_names == ["background", "cat", "dog"]          # categories in id order
    sp = data.splits["train"]
    lab, ids = sp.labels[0], sp.instances[0]
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[2, 2, 12, 2, 12, 8, 2, 8]], 20, 30))) > 0
    assert np.array_equal(lab == 2, poly) and np.array_equal(lab == 1, square > 0)
    assert set(np.unique(ids).tolist()) == {0, 1, 2} and np.array_equal(ids == 2, square > 0)


def test_255_in_a_class_mask_is_void_and_a_0_255_mask_is_binary(tmp_path):
    from cnnctl.data.segmentation import VOID, mask_folder

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    coded = np.zeros((8, 8), np.uint8)
    coded[:4] = 2
    coded[4:, :2] = VOID
    binary = np.zeros((8, 8), np.uint8)
    binary[2:5, 2:5] = 255
    for name, mask in (("coded", coded), ("binary", binary)):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    data = mask_folder(str(tmp_path))
    assert data.class_names == ["background", "class_1", "class_2"]          # 255 is no class
    labels = dict(zip(data.splits["train"].names, data.splits["train"].labels))
    np.testing.assert_array_equal(labels["coded"], coded)                     # void kept for the task and scores
    np.testing.assert_array_equal(labels["binary"], binary // 255)            # a 0/255 mask: 255 is the object
    (tmp_path / "classes.txt").write_text("background\na\nb\n")
    assert mask_folder(str(tmp_path)).class_names == ["background", "a", "b"]  # 255 passes the class check


def test_the_segment_task_trains_with_the_runs_label_smoothing():
    from types import SimpleNamespace

    import keras

    from cnnctl.config import load
    from cnnctl.models.unet import unet
    from cnnctl.tasks.segment import SegmentTask

    cfg = load("segment-scenes", overrides=["train.label_smoothing=0.1"])
    model = unet(num_classes=3, input_shape=(32, 32, 1), base_filters=4, depth=1, padding="same")
    SegmentTask().compile(model, keras.optimizers.SGD(), cfg, SimpleNamespace(num_classes=3))
    assert model.loss.label_smoothing == 0.1
