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
    bilinear (images), 0: nearest (labels, weights)."""
    from scipy.ndimage import map_coordinates

    h, w = array.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    coords = np.stack([yy + field[0], xx + field[1]])
    if array.ndim == 2:
        return map_coordinates(array, coords, order=order, mode="nearest").astype(array.dtype)
    return np.stack([map_coordinates(array[..., c], coords, order=order, mode="nearest")
                     for c in range(array.shape[-1])], axis=-1).astype(array.dtype)
