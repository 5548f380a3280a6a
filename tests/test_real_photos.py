"""Real annotated photos from three PyPI distributions as one detection CSV (`cnnctl data photos`):
labelme's VOC photos, sahi's terrain photo, imgaug's quokka. Every box must reach the CSV unchanged,
and each source's own file read by cnnctl's own loader must agree with the CSV."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnctl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    out = tmp_path_factory.mktemp("photos")
    r = runner.invoke(app, ["data", "photos", str(out)])
    assert r.exit_code == 0, r.output
    notice = (out / "NOTICE").read_text()
    assert "sahi 0.12.8" in notice and "imgaug 0.4.0" in notice and "labelme 5.11.4" in notice
    return out


def _sorted_boxes(boxes) -> np.ndarray:
    return np.array(sorted(map(tuple, np.asarray(boxes).tolist())), np.float32)


def test_the_csv_holds_every_box_of_the_three_sources(photos):
    from cnnctl.data.detection import load_detection

    det = load_detection(str(photos / "photos.csv"))
    assert det.splits["train"] is None and det.splits["val"] is None
    sp = det.splits["test"]
    assert sorted(sp.names) == ["2011_000003", "2011_000006", "2011_000025", "quokka", "terrain2"]
    labels = Counter(det.class_names[k - 1] for cs in sp.classes for k in cs)
    assert labels == {"person": 6, "car": 6, "bus": 2, "bottle": 1, "chair": 1, "sofa": 1, "animal": 1}

    # sahi's COCO file through the COCO loader (x, y, width, height) against the CSV's corners
    sahi = load_detection(str(photos / "sahi" / "terrain2_coco.json")).splits["train"]
    i = sp.names.index("terrain2")
    np.testing.assert_array_equal(_sorted_boxes(sp.boxes[i]), _sorted_boxes(sahi.boxes[0]))
    np.testing.assert_array_equal(sp.images[i], sahi.images[0])
    assert sp.images[i].shape == (682, 1024, 3)               # a colour palette PNG stays colour

    # labelme's COCO export through the COCO loader: the same photos, boxes and labels
    voc = load_detection(str(photos / "labelme" / "coco" / "annotations.json"))
    v = voc.splits["train"]
    for j, name in enumerate(v.names):
        k = sp.names.index(name)
        np.testing.assert_array_equal(sp.images[k], v.images[j])
        assert sorted(zip((det.class_names[c - 1] for c in sp.classes[k]), map(tuple, sp.boxes[k].tolist()))) == \
            sorted(zip((voc.class_names[c - 1] for c in v.classes[j]), map(tuple, v.boxes[j].tolist())))

    # imgaug's own JSON (x1, y1, x2, y2) -> cnnctl's (y0, x0, y1, x1), on the 960x643 photo
    q = sp.names.index("quokka")
    assert sp.images[q].shape == (643, 960, 3)
    source = json.loads((photos / "imgaug" / "quokka_annotations.json").read_text())["bounding_boxes"]
    assert [b["label"] for b in source] == ["animal"]
    np.testing.assert_array_equal(sp.boxes[q], [[b["y1"], b["x1"], b["y2"], b["x2"]] for b in source])
    np.testing.assert_array_equal(sp.boxes[q], [[50, 148, 642, 550]])      # imgaug 0.4.0's box, as published
    np.testing.assert_array_equal(sp.images[q], np.asarray(Image.open(photos / "imgaug" / "quokka.jpg").convert("RGB")))


def test_a_damaged_download_is_named_with_the_fix(photos, tmp_path, monkeypatch):
    """A truncated sahi archive in the cache: one message naming the file and how to recover, exit 2 (a user error)."""
    from cnnctl.data.registry import downloads

    source = downloads()                                    # where the fixture's fetch left them
    monkeypatch.setenv("CNNCTL_CACHE", str(tmp_path / "cache"))
    target = downloads()
    target.mkdir(parents=True)
    shutil.copy(source / "labelme-5.11.4.tar.gz", target)
    data = (source / "sahi-0.12.8.tar.gz").read_bytes()
    (target / "sahi-0.12.8.tar.gz").write_bytes(data[: len(data) // 3])
    r = runner.invoke(app, ["data", "photos", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "sahi-0.12.8.tar.gz" in r.output and "delete" in r.output and "run again" in r.output
    assert "Traceback" not in r.output
