"""Detection: VOC AP on a hand-worked case, COCO mAP through pycocotools, the three box formats users
have (and what each reports when a box is bad), Faster R-CNN's training step, `cnnctl train` /
`cnnctl detect` end to end, and a killed detection run resuming bit-identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app
from cnnctl.data.detection import load_detection
from cnnctl.errors import CnnctlError
from cnnctl.metrics.detection import (
    average_precision,
    coco_map,
    proposal_recall,
    voc_ap,
)

runner = CliRunner()
TINY = ["--set", "data.scene_counts=[48, 8, 8]", "--set", "train.batch_size=8", "--set", "model.widths=[8, 16, 16, 32]",
        "--set", "model.rpn_width=32", "--set", "model.head_width=64"]


# ----------------------------------------------------------------------------- metrics
def _one_class_case():
    # image 0 holds A, image 1 holds B and C. Detections by score: A (TP), A again (FP: taken), B (TP),
    # nothing (FP); C is never found. PR points: (1/3, 1), (1/3, 1/2), (2/3, 2/3), (2/3, 1/2).
    gt = [{"boxes": [[0, 0, 10, 10]], "classes": [1]},
          {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "classes": [1, 1]}]
    found = [{"boxes": [[0, 0, 10, 10], [1, 0, 10, 10]], "scores": [0.9, 0.8], "classes": [1, 1]},
             {"boxes": [[0, 0, 10, 9], [50, 50, 60, 60]], "scores": [0.7, 0.6], "classes": [1, 1]}]
    return gt, found


def test_voc_ap_of_a_hand_worked_case():
    gt, found = _one_class_case()
    # area: precision 1 up to recall 1/3, then 2/3 up to recall 2/3 -> 1/3 + 2/9 = 5/9
    assert voc_ap(gt, found, 1)["map"] == pytest.approx(5 / 9)
    # 11-point: recall thresholds 0-0.3 give 1, 0.4-0.6 give 2/3, 0.7-1 give 0 -> (4 + 2) / 11
    assert voc_ap(gt, found, 1, eleven_point=True)["map"] == pytest.approx(6 / 11)
    # at IoU 0.95 the box [0, 0, 10, 9] (IoU 0.9) stops matching B: one TP only
    assert voc_ap(gt, found, 1, iou_threshold=0.95)["map"] == pytest.approx(1 / 3)


def test_voc_ap_difficult_boxes_are_neither_hits_nor_misses_and_classes_are_separate():
    gt, found = _one_class_case()
    gt[1]["difficult"] = [False, True]                # C is difficult: 2 positives, B and A both found
    assert voc_ap(gt, found, 1)["map"] == pytest.approx(1 / 2 * 1 + 1 / 2 * 2 / 3)
    found[1]["classes"] = [2, 2]                      # B's detection now says class 2: class 1 loses B
    result = voc_ap(gt, found, 2)
    assert result["ap"][0] == pytest.approx(1 / 2) and np.isnan(result["ap"][1]) and result["map"] == result["ap"][0]


def test_average_precision_edge_cases():
    assert average_precision([1.0], [1.0]) == 1.0
    assert average_precision([0.5, 1.0], [1.0, 0.5]) == pytest.approx(0.75)


def test_coco_map_by_pycocotools():
    gt, _ = _one_class_case()
    perfect = [{"boxes": g["boxes"], "scores": [0.9] * len(g["boxes"]), "classes": g["classes"]} for g in gt]
    scores = coco_map(gt, perfect, ["thing"], [(64, 64), (64, 64)])
    assert scores["coco_map"] == pytest.approx(1.0) and scores["coco_map50"] == pytest.approx(1.0)
    # one box 1 px short on a 10 px side: IoU 0.9 -> a hit at thresholds 0.5..0.9, a miss at 0.95
    shifted = [dict(perfect[0], boxes=[[0, 0, 10, 9]]), perfect[1]]
    got = coco_map(gt, shifted, ["thing"], [(64, 64), (64, 64)])["coco_map"]
    assert 0.8 < got < 1.0
    assert coco_map(gt, [{"boxes": [], "scores": [], "classes": []}] * 2, ["thing"], [(64, 64)] * 2)["coco_map"] == 0.0


def test_proposal_recall_counts_covered_boxes():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)]
    assert proposal_recall(gt, [np.array([[0, 0, 10, 10], [20, 20, 30, 26]], np.float32)], 0.5) == 1.0
    assert proposal_recall(gt, [np.array([[0, 0, 10, 10], [20, 20, 30, 26]], np.float32)], 0.7) == 0.5


# ----------------------------------------------------------------------------- the formats users have
BOXES = {"a.png": [(2, 3, 12, 20, "cat"), (20, 5, 30, 15, "dog")], "b.png": [(0, 0, 31, 31, "dog")]}


def _write_images(folder: Path, sub: str = "") -> None:
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in BOXES:
        Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(folder / sub / name)


def _voc(folder: Path, boxes=BOXES) -> Path:
    _write_images(folder, "JPEGImages")
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    for name, rows in boxes.items():
        objects = "".join(f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
                          f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                          for x0, y0, x1, y1, label in rows)
        (folder / "Annotations" / f"{Path(name).stem}.xml").write_text(
            f"<annotation><filename>{name}</filename>{objects}</annotation>")
    return folder


def _coco(folder: Path, boxes=BOXES) -> Path:
    _write_images(folder, "images")
    names = sorted({r[4] for rows in boxes.values() for r in rows})
    doc = {"categories": [{"id": 7 + i, "name": n} for i, n in enumerate(names)],
           "images": [{"id": i, "file_name": name, "height": 32, "width": 32} for i, name in enumerate(boxes)],
           "annotations": [{"id": 100 * i + j, "image_id": i, "category_id": 7 + names.index(label),
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}
                           for i, rows in enumerate(boxes.values()) for j, (x0, y0, x1, y1, label) in enumerate(rows)]}
    (folder / "instances.json").write_text(json.dumps(doc))
    return folder / "instances.json"


def _csv(folder: Path, boxes=BOXES) -> Path:
    _write_images(folder)
    lines = ["image,x_min,y_min,x_max,y_max,label"]
    lines += [f"{name},{x0},{y0},{x1},{y1},{label}" for name, rows in boxes.items() for x0, y0, x1, y1, label in rows]
    (folder / "boxes.csv").write_text("\n".join(lines) + "\n")
    return folder / "boxes.csv"


def test_voc_coco_and_csv_give_the_same_boxes(tmp_path):
    from cnnctl.data.detection import voc_xml

    voc = voc_xml(_voc(tmp_path / "voc"), ["cat", "dog"])
    coco = load_detection(str(_coco(tmp_path / "coco")))
    table = load_detection(str(_csv(tmp_path / "csv")))
    for data in (voc, coco, table):
        assert data.class_names == ["cat", "dog"]
        sp = data.splits["train"]
        assert sp.names == ["a", "b"] and sp.images[0].shape == (32, 32, 3)
        np.testing.assert_array_equal(sp.boxes[0], [[3, 2, 20, 12], [5, 20, 15, 30]])   # (y0, x0, y1, x1)
        np.testing.assert_array_equal(sp.boxes[1], [[0, 0, 31, 31]])
        assert sp.classes[0].tolist() == [1, 2] and sp.classes[1].tolist() == [2]


def test_a_csv_split_column_splits_the_images_and_a_bad_split_is_named(tmp_path):
    _write_images(tmp_path)
    (tmp_path / "boxes.csv").write_text("image,x_min,y_min,x_max,y_max,label,split\n"
                                        "a.png,2,3,12,20,cat,test\na.png,20,5,30,15,dog,test\nb.png,0,0,31,31,dog,\n")
    data = load_detection(str(tmp_path / "boxes.csv"))
    assert data.splits["train"].names == ["b"] and data.splits["test"].names == ["a"] and data.splits["val"] is None
    assert data.splits["test"].classes[0].tolist() == [1, 2]
    (tmp_path / "boxes.csv").write_text("image,x_min,y_min,x_max,y_max,label,split\n"
                                        "a.png,2,3,12,20,cat,test\na.png,20,5,30,15,dog,train\nb.png,0,0,31,31,dog,dev\n")
    with pytest.raises(CnnctlError) as e:
        load_detection(str(tmp_path / "boxes.csv"))
    assert "boxes.csv line 3: a.png is in split 'train' here and 'test' above" in str(e.value)
    assert "boxes.csv line 4: split 'dev' is not train, val or test" in str(e.value)


@pytest.mark.parametrize("writer", [_voc, _coco, _csv])
def test_bad_boxes_are_reported_by_file(writer, tmp_path):
    from cnnctl.data.detection import voc_xml

    def load(path):
        return voc_xml(path, ["cat", "dog"]) if writer is _voc else load_detection(str(path))

    outside = {"a.png": [(2, 3, 40, 20, "cat")], "b.png": [(0, 0, 31, 31, "dog")]}
    with pytest.raises(CnnctlError, match=r"lies outside a.png \(32x32\)"):
        load(writer(tmp_path / "outside", outside))
    flat = {"a.png": [(2, 3, 2, 20, "cat")], "b.png": [(0, 0, 31, 31, "dog")]}
    with pytest.raises(CnnctlError, match="has zero area"):
        load(writer(tmp_path / "flat", flat))
    if writer is not _csv:                            # a CSV's labels are whatever it names
        path = writer(tmp_path / "unknown", {"a.png": [(2, 3, 12, 20, "cat")], "b.png": [(0, 0, 31, 31, "dog")]})
        if writer is _voc:
            with pytest.raises(CnnctlError, match="unknown label 'cat'"):
                voc_xml(path, ["dog"])
        else:
            doc = json.loads(path.read_text())
            doc["annotations"][0]["category_id"] = 99
            path.write_text(json.dumps(doc))
            with pytest.raises(CnnctlError, match="unknown category_id 99"):
                load(path)
    root = tmp_path / "missing"
    missing = writer(root)
    next(root.rglob("b.png")).unlink()
    with pytest.raises(CnnctlError, match="b.png: image is missing"):
        load(missing)


def test_an_image_without_boxes_is_named_and_kept(tmp_path):
    data = load_detection(str(_csv(tmp_path, {"a.png": [(2, 3, 12, 20, "cat")], "b.png": []})))
    assert data.splits["train"].count == 1                     # the CSV lists no row for b.png at all
    path = tmp_path / "boxes.csv"
    path.write_text(path.read_text() + "b.png,,,,,\n")
    data = load_detection(str(path))
    assert data.splits["train"].count == 2 and len(data.splits["train"].boxes[1]) == 0
    assert data.notes and "b.png" in data.notes[0] and "without boxes" in data.notes[0]


def test_scene_boxes_are_the_scene_items_boxes():
    from cnnctl.data.scenes import free_scene
    from cnnctl.data.sources import fashion_mnist

    data = load_detection("scenes:free", (5, 0, 3))
    test = fashion_mnist("")["test"]
    for i in range(3):
        scene = free_scene(test.images[..., 0], test.labels, "test", 0, i)
        got = data.splits["test"].boxes[i]
        assert got.tolist() == [[b[1], b[0], b[3], b[2]] for b in (it.box for it in scene.items)]
        assert data.splits["test"].classes[i].tolist() == [it.label + 1 for it in scene.items]


def test_unknown_detection_data_is_one_message(tmp_path):
    with pytest.raises(CnnctlError, match="is not detection data"):
        load_detection(str(tmp_path))
    with pytest.raises(CnnctlError, match="does not exist"):
        load_detection(str(tmp_path / "nope"))


# ----------------------------------------------------------------------------- the model
def test_faster_rcnn_learns_a_fixed_batch_and_round_trips(tmp_path):
    import keras

    from cnnctl import models

    data = load_detection("scenes:free", (8, 0, 0))
    sp = data.splits["train"]
    x = np.stack(sp.images)
    boxes = -np.ones((8, 5, 4), np.float32)
    classes = np.zeros((8, 5), np.int32)
    for j in range(8):
        boxes[j, :len(sp.boxes[j])], classes[j, :len(sp.boxes[j])] = sp.boxes[j], sp.classes[j]
    keras.utils.set_random_seed(0)
    model = models.build("faster_rcnn", num_classes=10, input_shape=(128, 128, 1), widths=[8, 16, 16, 32],
                         rpn_width=32, head_width=64, anchor_scales=[27, 55, 109], min_size=4, post_nms_train=100)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    first = model.test_on_batch(x, boxes, classes, return_dict=True)
    for _ in range(15):
        model.train_on_batch(x, boxes, classes)
    after = model.test_on_batch(x, boxes, classes, return_dict=True)
    assert after["loss"] < 0.7 * first["loss"] and after["rpn_cls"] < first["rpn_cls"], (first, after)
    det = model(x[:2])
    assert det["boxes"].shape == (2, 100, 4) and det["classes"].dtype == "int32"
    count = int(det["count"][0])
    assert (det["classes"][0, :count].numpy() >= 1).all() and (det["classes"][0, :count].numpy() <= 10).all()
    assert (np.diff(det["scores"][0, :count].numpy()) <= 0).all()                # best first
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    other = again(x[:2])
    for key in ("boxes", "scores", "classes", "count"):
        np.testing.assert_allclose(other[key].numpy(), det[key].numpy(), atol=1e-5)


def test_selective_search_is_a_function_of_the_image_and_finds_the_scene_objects():
    from cnnctl.detection import selective_search as ss

    data = load_detection("scenes:free", (6, 0, 0))
    sp = data.splits["train"]
    found = [ss.selective_search(img) for img in sp.images]
    ss._CACHE.clear()                                           # OpenCV orders its regions at random: recomputed,
    again = [ss.selective_search(img) for img in sp.images]     # the proposals come in the same order
    for a, b, img in zip(found, again, sp.images):
        np.testing.assert_array_equal(a, b)
        assert len(a) > 5 and (a[:, 2] > a[:, 0]).all() and (a[:, 3] > a[:, 1]).all()
        assert a.min() >= 0 and a[:, 2].max() <= img.shape[0] and a[:, 3].max() <= img.shape[1]
    # objects on a black background: every one is a region of the first segmentation (x/y swapped or
    # (x, y, w, h) read as corners would miss most of them)
    assert proposal_recall(sp.boxes, found, 0.7) == 1.0
    cut = ss.selective_search(sp.images[0], max_proposals=4)
    np.testing.assert_array_equal(cut, found[0][:4])


def test_fast_rcnn_learns_a_fixed_batch_on_selective_search_and_round_trips(tmp_path):
    import keras

    from cnnctl import models

    data = load_detection("scenes:free", (4, 0, 0))
    sp = data.splits["train"]
    x = np.stack(sp.images)
    boxes = -np.ones((4, 5, 4), np.float32)
    classes = np.zeros((4, 5), np.int32)
    for j in range(4):
        boxes[j, :len(sp.boxes[j])], classes[j, :len(sp.boxes[j])] = sp.boxes[j], sp.classes[j]
    keras.utils.set_random_seed(0)
    # no batch norm: 30 steps leave BN's moving averages (which test_on_batch uses) near their start
    model = models.build("fast_rcnn", num_classes=10, input_shape=(128, 128, 1), widths=[8, 16, 16, 32],
                         head_width=64, batch_norm=False)
    assert model.metric_keys() == ("loss", "cls", "box") and not hasattr(model, "rpn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    first = model.test_on_batch(x, boxes, classes, return_dict=True)
    for _ in range(30):
        model.train_on_batch(x, boxes, classes)
    after = model.test_on_batch(x, boxes, classes, return_dict=True)
    assert after["cls"] < 0.8 * first["cls"], (first, after)
    proposals, valid = model.propose(x[:2])
    from cnnctl.detection.selective_search import selective_search

    np.testing.assert_array_equal(proposals[0, :int(valid[0])].numpy(), selective_search(x[0]))
    det = model(x[:2])
    model.save(tmp_path / "m.keras")
    other = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)(x[:2])
    for key in ("boxes", "scores", "classes", "count"):
        np.testing.assert_allclose(other[key].numpy(), det[key].numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect_runs")
    r = runner.invoke(app, ["train", "detect-scenes", "--epochs", "2", "--out-dir", str(out), "--name", "scenes", *TINY])
    assert r.exit_code == 0, r.output
    return out / "scenes", r.output


def test_a_detection_run_writes_its_files_and_scores(scene_run):
    run, output = scene_run
    for name in ("classes.json", "model.keras", "best.keras", "metrics.json", "history.csv", "curves.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_map50", "test_map50_voc07", "test_coco_map", "test_coco_map50", "test_ap50_per_class",
                "test_proposal_recall50", "test_proposal_recall70", "test_seconds_per_image", "val_map50"):
        assert key in metrics, key
    assert set(metrics["test_ap50_per_class"]) <= set(json.loads((run / "classes.json").read_text()))
    assert "rpn_cls" in output and "val_mAP50" in output and "test_accuracy" not in metrics


def test_cnnctl_detect_writes_boxes_and_json(scene_run, tmp_path):
    from cnnctl.data.scenes import free_scene
    from cnnctl.data.sources import fashion_mnist

    run, _ = scene_run
    test = fashion_mnist("")["test"]
    scene = tmp_path / "scene.png"
    Image.fromarray(free_scene(test.images[..., 0], test.labels, "test", 0, 0).image).save(scene)
    big = tmp_path / "big.jpg"                      # another size and RGB: resized in, boxes mapped back
    Image.fromarray(np.repeat(np.asarray(Image.open(scene).resize((256, 192)))[..., None], 3, -1)).save(big)
    r = runner.invoke(app, ["detect", str(scene), str(big), "--model", str(run), "--score", "0", "--json",
                            "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["image"] for row in rows] == [str(scene), str(big)]
    classes = json.loads((run / "classes.json").read_text())
    for row, (w, h) in zip(rows, [(128, 128), (256, 192)]):
        for d in row["detections"]:
            x0, y0, x1, y1 = d["box"]
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h and d["label"] in classes and 0 <= d["score"] <= 1
    assert (tmp_path / "out" / "scene.boxes.png").is_file() and (tmp_path / "out" / "big.boxes.png").is_file()


def test_a_fast_rcnn_run_scores_selective_search_proposals_and_detects(tmp_path):
    from cnnctl.data.scenes import free_scene
    from cnnctl.data.sources import fashion_mnist

    r = runner.invoke(app, ["train", "detect-scenes-fast", "--epochs", "1", "--out-dir", str(tmp_path), "--name", "fast",
                            "--set", "data.scene_counts=[16, 4, 8]", "--set", "model.widths=[8, 16, 16, 32]",
                            "--set", "model.head_width=64"])
    assert r.exit_code == 0, r.output
    assert "rpn_cls" not in r.output and "cls" in r.output
    metrics = json.loads((tmp_path / "fast" / "metrics.json").read_text())
    # selective search finds every object of a scene (see the selective search test): its recall is the
    # proposals', whatever the network learnt in one epoch
    assert metrics["test_proposal_recall70"] == 1.0 and metrics["test_proposals_per_image"] > 5
    test = fashion_mnist("")["test"]
    scene = tmp_path / "scene.png"
    Image.fromarray(free_scene(test.images[..., 0], test.labels, "test", 0, 0).image).save(scene)
    r = runner.invoke(app, ["detect", str(scene), "--model", str(tmp_path / "fast"), "--score", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["image"] == str(scene)


def test_detect_user_errors_are_one_message(scene_run, tmp_path):
    run, _ = scene_run
    r = runner.invoke(app, ["detect", str(tmp_path / "nope.png"), "--model", str(run)])
    assert r.exit_code == 2 and "nope.png does not exist" in r.output
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = runner.invoke(app, ["detect", str(broken), "--model", str(run)])
    assert r.exit_code == 2 and "cannot read image" in r.output and "Traceback" not in r.output
    other = tmp_path / "classifier"
    other.mkdir()
    (other / "config.toml").write_text((run / "config.toml").read_text().replace('task = "detect"', 'task = "classify"'))
    r = runner.invoke(app, ["detect", str(broken), "--model", str(other)])
    assert r.exit_code == 2 and "is not a detection run" in r.output
    r = runner.invoke(app, ["detect", str(broken), "--model", str(run), "--score", "2"])
    assert r.exit_code == 2 and "is not a probability" in r.output


def _cnnctl(*args):
    return subprocess.Popen([sys.executable, "-m", "cnnctl", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_a_killed_detection_run_resumes_bit_identical(tmp_path, kill_at_first_backup):
    import keras

    import cnnctl.models  # noqa: F401

    common = ["train", "detect-scenes", "--epochs", "2", "--deterministic", "--checkpoint-every", "2",
              "--out-dir", tmp_path, *TINY]
    ref = _cnnctl(*common, "--name", "ref")
    text, _ = ref.communicate(timeout=900)
    assert ref.returncode == 0, text
    kill_at_first_backup(_cnnctl(*common, "--name", "victim"), tmp_path / "victim")
    latest = tmp_path / "victim" / "backup" / "LATEST"
    state = json.loads((tmp_path / "victim" / "backup" / latest.read_text().strip() / "state.json").read_text())
    assert state["epoch"] == 0 and state["step_in_epoch"] > 0
    resumed = _cnnctl("train", "--resume", tmp_path / "victim")
    text, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0 and "resuming" in text, text
    a = keras.models.load_model(tmp_path / "ref" / "model.keras", safe_mode=True).weights
    b = keras.models.load_model(tmp_path / "victim" / "model.keras", safe_mode=True).weights
    assert len(a) == len(b) and all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))
    ma = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "victim" / "metrics.json").read_text())
    assert ma["test_map50"] == mb["test_map50"] and ma["test_coco_map"] == mb["test_coco_map"]
