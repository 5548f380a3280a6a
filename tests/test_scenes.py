"""Fashion-MNIST grid scenes against the rules of shared/SCENES.md."""

import numpy as np

from cnnctl.data.scenes import SCENE_CLASSES, grid_scene
from cnnctl.data.sources import fashion_mnist


def _split(name):
    ex = fashion_mnist("")[name]
    return ex.images[..., 0], ex.labels


def test_grid_scenes_follow_every_rule_of_the_spec():
    images, labels = _split("test")
    relations = set()
    for index in range(200):
        scene = grid_scene(images, labels, "test", 0, index)
        assert scene.image.shape == (64, 64) and scene.image.dtype == np.uint8
        assert len(scene.items) == 2
        cells = []
        for item in scene.items:
            x0, y0, x1, y1 = item.box
            cell = (y0 // 32, x0 // 32)
            cells.append(cell)
            # The 28x28 item sits at an offset in [0, 4]: its box stays inside its own 32x32 cell.
            assert x1 <= 32 * (cell[1] + 1) and y1 <= 32 * (cell[0] + 1)
            ys, xs = np.nonzero(item.mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)   # tight, max exclusive
            assert np.all(scene.image[item.mask] >= 32)
        assert cells[0] != cells[1] and cells == sorted(cells)        # A is earlier in reading order
        a, b = (SCENE_CLASSES[i.label] for i in scene.items)
        relation = "left of" if cells[0][0] == cells[1][0] else "above"
        assert scene.sentence == f"a {a} {relation} a {b}"
        relations.add(relation)
        labels_img = scene.label_image()
        assert set(np.unique(labels_img)) <= {0, scene.items[0].label + 1, scene.items[1].label + 1}
        assert np.all(scene.image[labels_img == 0] < 32)
    assert relations == {"left of", "above"}


def test_a_scene_is_a_pure_function_of_split_seed_and_index_and_uses_real_items():
    images, labels = _split("train")
    one = grid_scene(images, labels, "train", 3, 17)
    again = grid_scene(images, labels, "train", 3, 17)
    other = grid_scene(images, labels, "train", 3, 18)
    assert np.array_equal(one.image, again.image) and one.sentence == again.sentence
    assert not np.array_equal(one.image, other.image)
    # Every pasted item is one of the split's real 28x28 images of its label, unscaled.
    for item in one.items:
        cell_row, cell_col = item.box[1] // 32, item.box[0] // 32
        found = False
        for dy in range(5):
            for dx in range(5):
                y, x = 32 * cell_row + dy, 32 * cell_col + dx
                patch = one.image[y:y + 28, x:x + 28]
                if patch.shape == (28, 28) and np.any(np.all(images[labels == item.label] == patch, axis=(1, 2))):
                    found = True
        assert found
