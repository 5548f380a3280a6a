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

import numpy as np

SIGMA = 10.0
GRID = 3


def displacement_field(shape: tuple[int, int], rng: np.random.Generator, sigma: float = SIGMA,
                       grid: int = GRID) -> np.ndarray:
    """(2, H, W) float32 per-pixel (dy, dx) from a ``grid`` x ``grid`` Gaussian grid, bicubic in between
    (a cubic spline through the nodes, which sit on the tile's corners and evenly between them)."""
    from scipy.ndimage import zoom

    h, w = shape
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid))
    out = np.stack([zoom(coarse[i], (h / grid, w / grid), order=3, mode="mirror", grid_mode=False)
                    for i in range(2)])
    return out[:, :h, :w].astype(np.float32)


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
