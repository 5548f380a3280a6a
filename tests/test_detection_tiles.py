"""Detection on images larger than the network's input: overlapping tiles (cnnctl.detection.tiles)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cnnctl.detection import tiles


@pytest.mark.parametrize("side, tile, overlap", [(384, 128, 96), (512, 128, 32), (300, 128, 40), (128, 128, 32),
                                                 (100, 128, 32), (129, 128, 0)])
def test_tiles_cover_the_side_overlap_enough_and_cores_partition_it(side, tile, overlap):
    origins = tiles.tile_origins(side, tile, overlap)
    assert origins[0] == 0 and origins[-1] + tile == max(side, tile)
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(origins))          # overlap at least
    cores = tiles.core_bounds(origins, tile, side)
    points = np.arange(side) + 0.5
    owners = np.array([[lo <= p < hi for lo, hi in cores] for p in points])
    assert (owners.sum(1) == 1).all()                                                 # one core per point
    for (lo, hi), o in zip(cores, origins):    # a core keeps half the overlap away from inner tile edges
        assert lo == -np.inf or lo - o >= overlap / 2
        assert hi == np.inf or o + tile - hi >= overlap / 2


def test_boxes_go_to_tiles_where_half_of_them_is_and_are_clipped():
    boxes = np.array([[10, 10, 30, 30], [0, 110, 20, 150], [0, 120, 20, 180]], np.float32)
    kept, classes = tiles.boxes_in_tile(boxes, np.array([1, 2, 3]), 0, 0, (128, 128))
    # the second box is 18 of 40 px inside (45%): out; the third 8 of 60: out
    np.testing.assert_array_equal(classes, [1])
    kept, classes = tiles.boxes_in_tile(boxes, np.array([1, 2, 3]), 0, 100, (128, 128))
    np.testing.assert_array_equal(classes, [2, 3])
    np.testing.assert_array_equal(kept, [[0, 10, 20, 50], [0, 20, 20, 80]])


def test_every_object_is_kept_once_whole_by_the_tile_whose_core_holds_its_centre():
    from cnnctl.detector import in_tiles

    rng = np.random.default_rng(0)
    image = np.zeros((300, 420, 1), np.uint8)
    objects = []
    for _ in range(40):                                 # squares of 8-30 px anywhere in the image
        s = int(rng.integers(8, 31))
        y, x = int(rng.integers(0, 300 - s)), int(rng.integers(0, 420 - s))
        objects.append([y, x, y + s, x + s])
    objects = np.array(objects, np.float32)

    grid = tiles.tile_grid(300, 420, (128, 128), 32)
    order = iter(grid)

    def in_order(batch):
        """An exact detector of the objects wholly inside each tile: in_tiles crops the tiles in grid
        order, so the n-th tile it runs is the grid's n-th."""
        out = []
        for _ in batch:
            y0, x0, _ = next(order)
            inside = ((objects[:, 0] >= y0) & (objects[:, 1] >= x0) & (objects[:, 2] <= y0 + 128)
                      & (objects[:, 3] <= x0 + 128))
            out.append({"boxes": objects[inside] - np.array([y0, x0, y0, x0], np.float32),
                        "scores": np.ones(int(inside.sum()), np.float32)})
        return out

    found = in_tiles([image], (128, 128), 1, 32, in_order, batch=5)[0]
    key = lambda b: sorted(map(tuple, np.round(b).astype(int).tolist()))
    assert key(found["boxes"]) == key(objects)            # each object once, whole


def test_a_tiled_nuclei_run_scores_whole_regions_and_cnnctl_detect_tiles_too(tmp_path):
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from cnnctl.cli import app
    from cnnctl.data.detection import nuclei
    from cnnctl.detector import detect_images, load_detector

    runner = CliRunner()
    r = runner.invoke(app, ["train", "detect-nuclei", "--epochs", "1", "--out-dir", str(tmp_path), "--name", "bad",
                            "--set", "detect.tile_overlap=128"])
    assert r.exit_code == 2 and "detect.tile_overlap = 128 px does not fit tiles of 128x128" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["train", "detect-nuclei", "--epochs", "1", "--out-dir", str(tmp_path), "--name", "nuc",
                            "--set", "model.widths=[8, 16, 16, 32]", "--set", "model.rpn_width=32",
                            "--set", "model.head_width=64"])
    assert r.exit_code == 0, r.output
    # 384 px with 128 px tiles overlapping by >= 96: 9 x 9 training tiles; no region is resized
    assert "81 train tiles, 9 val tiles, 13 test tiles at 128x128" in r.output
    metrics = json.loads((tmp_path / "nuc" / "metrics.json").read_text())
    assert metrics["test_images"] == 1                          # the strip is scored whole, not per tile
    strip = nuclei().splits["test"].images[0]                   # (512, 128, 1)
    path = tmp_path / "strip.png"
    Image.fromarray(strip[..., 0]).save(path)
    r = runner.invoke(app, ["detect", str(path), "--model", str(tmp_path / "nuc"), "--score", "0", "--json"])
    assert r.exit_code == 0, r.output
    found = json.loads(r.output)[0]["detections"]
    model, _ = load_detector(tmp_path / "nuc")
    direct = detect_images(model, [strip], tile_overlap=96)[0]
    assert len(found) == len(direct["scores"]) > 0
    boxes = np.array([d["box"] for d in found])                 # x_min, y_min, x_max, y_max of the strip
    assert boxes[:, 2].max() <= 128 and boxes[:, 3].max() <= 512 and boxes[:, 3].max() > 128
