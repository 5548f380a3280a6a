"""Fashion-MNIST ``grid`` (captioning) and ``free`` (segmentation, detection) scenes, exactly as
``shared/SCENES.md`` specifies them.

A scene is composed of real Fashion-MNIST items (train scenes from the 60k
training images, test scenes from the 10k test images); the layout and the
sentence are synthetic. Each scene is a pure function of (split, seed, index):
its random draws come from ``np.random.default_rng([seed, split_id, index])``.

``grid``: a 64x64 grey canvas (background 0) of four 32x32 cells, (row 0,
col 0) top left ... (row 1, col 1) bottom right. Exactly 2 items in 2
different cells chosen uniformly, each pasted unscaled with ``max`` at a
uniform offset (dx, dy) in [0, 4] x [0, 4] inside its cell. A is the item in
the earlier cell in reading order, B the other; the sentence is
``a {A} left of a {B}`` when the cells share a row, else ``a {A} above a {B}``.

``free``: a 128x128 canvas with 1..5 items (uniform). Each item is resized by s ~ U[1, 2] to
``round(28 s)`` pixels a side (bilinear: PIL's, half-pixel centres), then placed at a uniform
position inside the canvas whose square does not overlap an earlier item's square (squares may
touch); after 100 failed draws the item is dropped. The rest of the draw order (which this text
leaves to the implementation): the item count, then per item its source image, s, and its
position draws. ``free`` scenes use the random stream ``[seed, split_id, index, 1]`` so that a
``free`` scene and a ``grid`` scene of the same index are unrelated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# SCENES.md: class names, lower case, in label order ("ankle boot" is two tokens).
SCENE_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle boot")
MASK_THRESHOLD = 32          # an item's mask: its pixels >= 32 (after any scaling)
_SPLIT_ID = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SceneItem:
    label: int
    box: tuple[int, int, int, int]   # [x_min, y_min, x_max, y_max], max exclusive, canvas pixels
    mask: np.ndarray                 # (h, w) bool on the canvas


@dataclass(frozen=True)
class Scene:
    image: np.ndarray                # (h, w) uint8, background 0
    items: tuple[SceneItem, ...]     # in paste order
    sentence: str

    def label_image(self) -> np.ndarray:
        """Segmentation labels: uint8, 0 = background, label + 1 on each item's mask."""
        out = np.zeros(self.image.shape, np.uint8)
        for item in self.items:
            out[item.mask] = item.label + 1
        return out


def _item(canvas: np.ndarray, item: np.ndarray, label: int, x: int, y: int) -> SceneItem:
    """Paste ``item`` (h, w) uint8 at (x, y) with max; -> its mask and tight box on the canvas."""
    h, w = item.shape
    region = canvas[y:y + h, x:x + w]
    np.maximum(region, item, out=region)
    mask = np.zeros(canvas.shape, bool)
    mask[y:y + h, x:x + w] = item >= MASK_THRESHOLD
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (x, y, x, y)
    return SceneItem(label, box, mask)


def grid_scene(images: np.ndarray, labels: np.ndarray, split: str, seed: int, index: int) -> Scene:
    """Scene ``index`` of ``split`` drawn from ``images`` (n, 28, 28) uint8 / ``labels`` (n,) of that split."""
    rng = np.random.default_rng([seed, _SPLIT_ID[split], index])
    cells = sorted(rng.choice(4, size=2, replace=False).tolist())   # reading order: cell = 2 * row + col
    picks = rng.integers(0, len(images), size=2)
    offsets = rng.integers(0, 5, size=(2, 2))                       # (dx, dy) in [0, 4]
    canvas = np.zeros((64, 64), np.uint8)
    items = []
    for cell, pick, (dx, dy) in zip(cells, picks, offsets):
        row, col = divmod(cell, 2)
        items.append(_item(canvas, images[pick], int(labels[pick]), 32 * col + int(dx), 32 * row + int(dy)))
    a, b = (SCENE_CLASSES[item.label] for item in items)
    relation = "left of" if cells[0] // 2 == cells[1] // 2 else "above"
    return Scene(canvas, tuple(items), f"a {a} {relation} a {b}")


FREE_SIDE = 128


def _resized(item: np.ndarray, size: int) -> np.ndarray:
    """(28, 28) uint8 -> (size, size) uint8, bilinear (PIL)."""
    from PIL import Image

    if size == item.shape[0]:
        return item
    return np.asarray(Image.fromarray(item).resize((size, size), Image.BILINEAR))


def free_scene(images: np.ndarray, labels: np.ndarray, split: str, seed: int, index: int,
               item_range: tuple[int, int] = (1, 5)) -> Scene:
    """``free`` scene ``index`` of ``split`` from ``images`` (n, 28, 28) uint8 / ``labels`` (n,) of that split.

    ``item_range`` = (fewest, most) items drawn, uniformly; SCENES.md's (1, 5) is the default, and any other
    range is an option on top of the spec (training scenes packed with more items), drawn from the same
    random stream. The sentence is empty: free scenes carry label images and boxes, not captions."""
    rng = np.random.default_rng([seed, _SPLIT_ID[split], index, 1])
    canvas = np.zeros((FREE_SIDE, FREE_SIDE), np.uint8)
    squares: list[tuple[int, int, int]] = []             # (x, y, side) of the placed items
    items = []
    for _ in range(int(rng.integers(item_range[0], item_range[1] + 1))):   # SCENES.md: 1..5 items
        pick = int(rng.integers(0, len(images)))
        size = round(28 * rng.uniform(1.0, 2.0))
        for _attempt in range(100):
            x, y = (int(v) for v in rng.integers(0, FREE_SIDE - size + 1, size=2))
            if all(x + size <= ox or ox + oside <= x or y + size <= oy or oy + oside <= y
                   for ox, oy, oside in squares):
                squares.append((x, y, size))
                items.append(_item(canvas, _resized(images[pick], size), int(labels[pick]), x, y))
                break
    return Scene(canvas, tuple(items), "")
