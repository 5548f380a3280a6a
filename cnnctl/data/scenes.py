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
    local = item >= MASK_THRESHOLD                                   # (h, w): the mask on the item
    mask = np.zeros(canvas.shape, bool)
    mask[y:y + h, x:x + w] = local
    rows, cols = np.flatnonzero(local.any(axis=1)), np.flatnonzero(local.any(axis=0))
    box = ((x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1) if len(rows)
           else (x, y, x, y))
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
        at = _free_position(rng, squares, size)
        if at is not None:
            x, y = at
            squares.append((x, y, size))
            items.append(_item(canvas, _resized(images[pick], size), int(labels[pick]), x, y))
    return Scene(canvas, tuple(items), "")


def _free_position(rng: np.random.Generator, squares: list[tuple[int, int, int]], size: int):
    """SCENES.md's placement: up to 100 draws of (x, y), each ``rng.integers(0, 128 - size + 1, size=2)``;
    the first whose size x size square overlaps none of ``squares`` wins; None when all 100 fail.

    The 100 draws are made in one call, which gives the same numbers as 100 calls of 2 (numpy's bounded
    integers come from the bit generator's one stream of 32-bit words; tests/test_segment.py rebuilds
    scenes draw by draw). When draw k wins, the stream is rewound and exactly k + 1 draws are consumed,
    so every later draw of the scene is the one the spec's loop would make. Packed training scenes drop
    many items, and one call instead of 100 makes them several times faster to draw."""
    state = rng.bit_generator.state
    xy = rng.integers(0, FREE_SIDE - size + 1, size=(100, 2))             # (100, 2): the draws in order
    if squares:
        o = np.asarray(squares)                                            # (n, 3): x, y, side
        x, y = xy[:, :1], xy[:, 1:]
        apart = ((x + size <= o[:, 0]) | (o[:, 0] + o[:, 2] <= x)
                 | (y + size <= o[:, 1]) | (o[:, 1] + o[:, 2] <= y))         # (100, n)
        fits = apart.all(axis=1)
    else:
        fits = np.ones(100, bool)
    if not fits.any():
        return None                                                        # all 100 consumed, as the spec's loop
    k = int(fits.argmax())
    rng.bit_generator.state = state
    rng.integers(0, FREE_SIDE - size + 1, size=(k + 1, 2))                 # consume draws 0..k only
    return int(xy[k, 0]), int(xy[k, 1])
