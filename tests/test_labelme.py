"""Real photos with real masks in standard formats: labelme's annotated Pascal VOC 2011 photos, as a
VOC segmentation folder and as a COCO instances file (`cnnctl data labelme`, fetched once from the
package registry). The two exports of the same polygons must agree through cnnctl's two loaders."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cnnctl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def labelme(tmp_path_factory):
    out = tmp_path_factory.mktemp("labelme")
    r = runner.invoke(app, ["data", "labelme", str(out)])
    assert r.exit_code == 0, r.output
    assert "PASCAL VOC 2011" in (out / "NOTICE").read_text()
    return out


def test_voc_and_coco_exports_of_the_same_polygons_agree(labelme):
    from cnnctl.data.segmentation import VOID, load_segmentation

    voc = load_segmentation(str(labelme / "voc"))
    coco = load_segmentation(str(labelme / "coco" / "annotations.json"))
    assert voc.source == "voc" and coco.source == "coco"
    # labelme's class_names.txt / COCO categories: its "_background_" is the background, then VOC's 20
    assert voc.class_names == coco.class_names and len(voc.class_names) == 21
    assert voc.class_names[15] == "person"
    v, c = voc.splits["train"], coco.splits["train"]
    assert sorted(v.names) == sorted(c.names) == ["2011_000003", "2011_000006", "2011_000025"]
    void_pixels = 0
    for i, name in enumerate(v.names):
        j = c.names.index(name)
        assert v.images[i].shape == c.images[j].shape and v.images[i].shape[-1] == 3
        labelled = v.labels[i] != VOID
        void_pixels += int((~labelled).sum())
        # the same polygons rasterised by two exporters: the classes agree but for edge pixels
        assert (v.labels[i][labelled] == c.labels[j][labelled]).mean() > 0.99
        assert set(np.unique(v.labels[i][labelled])) == set(np.unique(c.labels[j]))
        # SegmentationObject's instances and COCO's annotations: the same objects
        assert len(np.unique(v.instances[i])) == len(np.unique(c.instances[j]))
    assert void_pixels > 0


def test_void_pixels_are_neither_trained_on_nor_scored(labelme):
    from cnnctl.config import load
    from cnnctl.data.segmentation import VOID
    from cnnctl.metrics.segmentation import semantic_scores
    from cnnctl.tasks.segment import SegmentDataModule

    cfg = load("segment-scenes", [f"data.path='{labelme / 'voc'}'", "model.input_shape=[64, 64, 3]",
                                  "model.depth=3", "model.base_filters=4", "segment.class_balance=true"])
    data = SegmentDataModule(cfg, 4, 0, log=lambda *a: None)
    windows = data.windows["train"]
    for k, raw in enumerate(data.train.labels):
        void = raw == VOID
        h, w = raw.shape
        m = windows.margin
        assert (windows.weights[k][m:m + h, m:m + w][void] == 0).all()
        assert (windows.labels[k][m:m + h, m:m + w][void] == 0).all()
        assert (windows.weights[k][m:m + h, m:m + w][~void] > 0).all()
    labels = data.train.labels[0]
    perfect = np.where(labels == VOID, 0, labels)
    wrong_on_void = np.where(labels == VOID, 7, labels)      # whatever is predicted on void does not count
    assert semantic_scores(labels, perfect, data.class_names)["miou"] == 1.0
    assert semantic_scores(labels, wrong_on_void, data.class_names)["miou"] == 1.0


def test_coco_boxes_of_the_real_photos_are_their_instance_masks_boxes(labelme):
    """The detection loader on the COCO export (``bbox`` fields) against the tight boxes of the VOC
    export's instance masks: two exporters, two loaders, the same objects (IoU > 0.9: the rasterised
    masks lose a few edge pixels to VOC's void border)."""
    from cnnctl.data.detection import load_detection
    from cnnctl.data.segmentation import VOID, load_segmentation

    det = load_detection(str(labelme / "coco" / "annotations.json"))
    seg = load_segmentation(str(labelme / "voc"))
    assert det.class_names == seg.class_names[1:]            # detection has no background class
    d, s = det.splits["train"], seg.splits["train"]
    assert sorted(d.names) == sorted(s.names)
    for i, name in enumerate(s.names):
        j = d.names.index(name)
        assert d.images[j].shape == s.images[i].shape
        expected = []
        for instance in np.unique(s.instances[i]):
            if instance == 0 or instance == VOID:
                continue
            ys, xs = np.nonzero(s.instances[i] == instance)
            labels = s.labels[i][ys, xs]
            cls = int(np.bincount(labels[labels != VOID]).argmax())
            expected.append((cls, ys.min(), xs.min(), ys.max() + 1, xs.max() + 1))
        got = sorted((int(c), *b) for c, b in zip(d.classes[j], d.boxes[j]))
        expected.sort()
        assert [g[0] for g in got] == [e[0] for e in expected], name
        a, b = np.array([g[1:] for g in got], float), np.array([e[1:] for e in expected], float)
        inter = np.prod(np.clip(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]), 0, None), axis=1)
        union = np.prod(a[:, 2:] - a[:, :2], axis=1) + np.prod(b[:, 2:] - b[:, :2], axis=1) - inter
        assert np.all(inter / union > 0.9), (name, inter / union)
