"""Scenes built elsewhere from shared/SCENES.md alone (benchmarks/independent_scenes.py: its own random
stream, bilinear resize and placement loop, nothing imported from cnnctl) come from the same
distribution as cnnctl's ``scenes:free``. Sample statistics of the two agree within 4 standard errors
of their difference; a generator that broke one rule -- a scale range other than [1, 2], a count
other than 1..5, overlapping squares, a mask threshold other than 32, items from the wrong split --
moves at least one of them by more than that."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCENES = 1500


@pytest.fixture(scope="module")
def independent():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "independent_scenes.py"
    spec = importlib.util.spec_from_file_location("independent_scenes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _agree(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) < 4 * se, f"{what}: cnnctl {a.mean():.4f}, independent {b.mean():.4f}, SE {se:.4f}"


def test_the_independent_generator_reads_the_same_items_and_resizes_alike(independent):
    from cnnctl.data.scenes import _resized
    from cnnctl.data.sources import fashion_mnist

    fm = fashion_mnist("")
    for split, ours in (("train", fm["train"]), ("test", fm["test"])):
        images, labels = independent.fashion(split)
        assert np.array_equal(images, ours.images[..., 0]) and np.array_equal(labels, ours.labels)
    items = fm["train"].images[:40, ..., 0]
    # two bilinear implementations (Pillow's, numpy's with half-pixel centres) differ by rounding only
    assert max(int(np.abs(independent.bilinear(it, s).astype(int) - _resized(it, s).astype(int)).max())
               for it in items for s in range(28, 57)) <= 1
    np.testing.assert_array_equal(independent.bilinear(items[0], 28), items[0])


@pytest.mark.parametrize("split", ["train", "test"])
def test_independent_scenes_have_cnnctls_statistics(independent, split):
    from cnnctl.data.scenes import free_scene
    from cnnctl.data.sources import fashion_mnist

    fm = fashion_mnist("")
    ours_images, ours_labels = fm[split].images[..., 0], fm[split].labels
    theirs_images, theirs_labels = independent.fashion(split)
    count, fg, area, classes = ([], []), ([], []), ([], []), ([], [])
    for i in range(SCENES):
        s = free_scene(ours_images, ours_labels, split, 0, i)
        count[0].append(len(s.items))
        fg[0].append((s.label_image() > 0).mean())
        area[0].extend([int(it.mask.sum()) for it in s.items])
        classes[0].extend([it.label for it in s.items])
        canvas, label_image, items = independent.scene(theirs_images, theirs_labels, split, 0, i)
        assert ((canvas >= 32) == (label_image > 0)).all()      # masks: exactly the pixels >= 32
        count[1].append(len(items))
        fg[1].append((label_image > 0).mean())
        area[1].extend([int(m.sum()) for _, m in items])
        classes[1].extend([label for label, _ in items])
    _agree(*count, "items per scene")
    _agree(*fg, "foreground fraction")
    _agree(*area, "mask area per item")
    for k in range(10):
        _agree(np.equal(classes[0], k), np.equal(classes[1], k), f"share of class {k}")
