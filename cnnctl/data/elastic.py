"""U-Net's elastic deformation augmentation (Ronneberger et al. 2015, sec. 3.1).

"We generate smooth deformations using random displacement vectors on a coarse 3 by 3 grid. The
displacements are sampled from a Gaussian distribution with 10 pixels standard deviation. Per-pixel
displacements are then computed using bicubic interpolation."

``displacement_field`` draws the 3x3 grid of (dy, dx) vectors and interpolates them bicubically
over the tile; ``warp`` resamples an array by the field: bilinear for images, nearest-neighbour
for label maps and weights, so that labels stay labels. Points that land outside the tile take the
nearest edge value. A draw is a function of the ``rng`` it is given; the segment task seeds it with
(seed, epoch, position).
"""

from __future__ import annotations

import functools

import numpy as np

SIGMA = 10.0
GRID = 3


def displacement_field(shape: tuple[int, int], rng: np.random.Generator, sigma: float = SIGMA,
                       grid: int = GRID) -> np.ndarray:
    """(2, H, W) float32 per-pixel (dy, dx) from a ``grid`` x ``grid`` Gaussian grid, bicubic in between
    (a cubic spline through the nodes, which sit on the tile's corners and evenly between them).

    The spline is linear in the nodes, so the field is the nodes' weighted sum of ``grid * grid``
    fixed basis maps (``_spline_basis``, made once per shape): 0.3 ms a field instead of 12 ms for a
    spline fitted per draw, the same field to float rounding (``tests/test_segment.py``)."""
    h, w = shape
    coarse = rng.normal(0.0, sigma, size=(2, grid * grid))
    return np.tensordot(coarse, _spline_basis(h, w, grid), axes=1).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _spline_basis(h: int, w: int, grid: int) -> np.ndarray:
    """(grid * grid, H, W) float64: the bicubic spline (``scipy.ndimage.zoom``, order 3, mirrored
    ends, nodes on the corners) through a grid with one node at 1 and the others at 0, per node."""
    from scipy.ndimage import zoom

    unit = np.eye(grid * grid).reshape(grid * grid, grid, grid)
    return np.stack([zoom(u, (h / grid, w / grid), order=3, mode="mirror", grid_mode=False)[:h, :w]
                     for u in unit])


def warp(array: np.ndarray, field: np.ndarray, order: int) -> np.ndarray:
    """(H, W) or (H, W, c) -> the same shape: out[y, x] = array at (y + dy, x + dx). ``order`` 1:
    bilinear (images), 0: nearest (labels, weights). Points beyond the edge take the edge's value
    (the sample point is clamped to the array). Integer arrays are rounded back to their type.

    Plain numpy gathers, the values of ``scipy.ndimage.map_coordinates`` with ``mode="nearest"``
    (``tests/test_segment.py``): as fast for a 128x128 image and 3.5x faster (0.1 ms) for a label
    map, whose nearest-neighbour lookup scipy runs through its general spline code."""
    h, w = array.shape[:2]
    y = np.clip(np.arange(h, dtype=np.float32)[:, None] + field[0], 0, h - 1)      # (H, W) sample rows
    x = np.clip(np.arange(w, dtype=np.float32)[None, :] + field[1], 0, w - 1)      # (H, W) sample columns
    if order == 0:
        return array[np.floor(y + 0.5).astype(np.intp), np.floor(x + 0.5).astype(np.intp)]
    y0, x0 = np.floor(y), np.floor(x)
    fy, fx = y - y0, x - x0
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    if array.ndim == 3:
        fy, fx = fy[..., None], fx[..., None]
    a = array.astype(np.float32, copy=False)
    out = ((a[y0, x0] * (1 - fx) + a[y0, x1] * fx) * (1 - fy)
           + (a[y1, x0] * (1 - fx) + a[y1, x1] * fx) * fy)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(array.dtype)
