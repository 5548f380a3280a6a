"""Detection on images larger than the network's input: overlapping tiles instead of resizing.

The detectors here are built for one input size (their anchors and RoI grids are fixed). A large
image (a microscope field, an aerial photo) shrunk to that size loses its small objects, so with
``detect.tile = true``:

* training and validation images are cut into input-sized tiles, consecutive tiles overlapping by at
  least ``detect.tile_overlap`` pixels; a box goes into a tile, clipped to it, when at least half of
  its area is inside;
* detection runs on the tiles of each image; every image point belongs to the *core* of exactly one
  tile (the tile's area up to the middle of each overlap), and a tile's detection is kept only when
  its box centre lies in that tile's core. With an overlap at least as large as the objects, each
  object is whole in the tile that keeps it, and no object is kept twice (no cross-tile NMS needed);
* images smaller than a tile are padded at the bottom and right with zeros.

No TensorFlow here.
"""

from __future__ import annotations

import math

import numpy as np


def tile_origins(side: int, tile: int, overlap: int) -> list[int]:
    """Offsets of the tiles of ``tile`` px that cover ``side`` px, spread evenly, the first at 0 and the
    last flush with the far edge, consecutive tiles overlapping by at least ``overlap`` px."""
    if side <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"a tile overlap of {overlap} px does not fit tiles of {tile} px")
    n = math.ceil((side - tile) / (tile - overlap)) + 1
    return [round(i * (side - tile) / (n - 1)) for i in range(n)]


def core_bounds(origins: list[int], tile: int, side: int) -> list[tuple[float, float]]:
    """Each tile's core along one axis, [lo, hi): split at the middle of each overlap; the first core
    starts at -inf and the last ends at +inf, so every point (and every clipped box centre) has one."""
    cuts = [(origins[i + 1] + origins[i] + tile) / 2.0 for i in range(len(origins) - 1)]
    return [(-math.inf if i == 0 else cuts[i - 1], math.inf if i == len(origins) - 1 else cuts[i])
            for i in range(len(origins))]


def tile_grid(height: int, width: int, tile: tuple[int, int], overlap: int) -> list[tuple[int, int, tuple]]:
    """-> [(y0, x0, ((core_y_lo, core_y_hi), (core_x_lo, core_x_hi)))] row by row."""
    ys, xs = tile_origins(height, tile[0], overlap), tile_origins(width, tile[1], overlap)
    cy, cx = core_bounds(ys, tile[0], height), core_bounds(xs, tile[1], width)
    return [(y, x, (cy[i], cx[j])) for i, y in enumerate(ys) for j, x in enumerate(xs)]


def pad_to(image: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """(H, W, c) -> at least tile-sized, zeros added at the bottom and right."""
    h, w = image.shape[:2]
    if h >= tile[0] and w >= tile[1]:
        return image
    return np.pad(image, [(0, max(0, tile[0] - h)), (0, max(0, tile[1] - w)), (0, 0)])


def crop(image: np.ndarray, y0: int, x0: int, tile: tuple[int, int]) -> np.ndarray:
    return image[y0:y0 + tile[0], x0:x0 + tile[1]]


def boxes_in_tile(boxes: np.ndarray, classes: np.ndarray, y0: int, x0: int, tile: tuple[int, int],
                  min_visible: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (g, 4) (y0, x0, y1, x1) of the image -> those with at least ``min_visible`` of their area
    inside the tile, clipped to it, in the tile's pixels; their classes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    shifted = boxes - np.array([y0, x0, y0, x0], np.float32)
    clipped = np.stack([np.clip(shifted[:, 0], 0, tile[0]), np.clip(shifted[:, 1], 0, tile[1]),
                        np.clip(shifted[:, 2], 0, tile[0]), np.clip(shifted[:, 3], 0, tile[1])], axis=1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = inside >= min_visible * np.maximum(area, 1e-9)
    return clipped[keep], np.asarray(classes).reshape(-1)[keep]


def in_core(boxes: np.ndarray, core: tuple) -> np.ndarray:
    """Which boxes (image pixels) have their centre in the core ((y_lo, y_hi), (x_lo, x_hi))."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    cy, cx = (boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0
    (ylo, yhi), (xlo, xhi) = core
    return (cy >= ylo) & (cy < yhi) & (cx >= xlo) & (cx < xhi)
