"""U-Net's pixel weight map (Ronneberger et al. 2015, sec. 3, eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies; ``d1`` / ``d2`` are the distances to the border of the
nearest and the second-nearest cell (instance). The paper sets w0 = 10 and sigma ~ 5 px. The border
term is applied on background pixels (label 0), where the thin gaps between touching cells are: a
pixel inside a cell is at distance 0 from its own cell, and the paper's Fig. 3d shows the weight
high in the gaps only. Distances are Euclidean, from a pixel centre to the nearest pixel centre of
the instance (``scipy.ndimage.distance_transform_edt``).
"""

from __future__ import annotations

import numpy as np

W0 = 10.0
SIGMA = 5.0


def class_balance(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) weights n / (K * n_c) over the classes present (absent classes get 0): each
    class then carries the same total weight, and the mean weight of a pixel is 1."""
    counts = np.bincount(labels.reshape(-1), minlength=num_classes).astype(np.float64)
    present = counts > 0
    out = np.zeros(num_classes)
    out[present] = counts.sum() / (present.sum() * counts[present])
    return out


def border_term(instances: np.ndarray, w0: float = W0, sigma: float = SIGMA) -> np.ndarray:
    """(H, W) instance ids (0 = background) -> (H, W) float32 ``w0 exp(-(d1 + d2)^2 / 2 sigma^2)`` on
    background pixels (0 inside instances, and 0 everywhere when there are fewer than two)."""
    from scipy.ndimage import distance_transform_edt

    ids = [i for i in np.unique(instances) if i != 0]
    out = np.zeros(instances.shape, np.float32)
    if len(ids) < 2:
        return out
    # For the two smallest distances keep a running (nearest, second nearest) pair: O(instances) memory.
    d1 = np.full(instances.shape, np.inf)
    d2 = np.full(instances.shape, np.inf)
    for i in ids:
        d = distance_transform_edt(instances != i)        # distance to the nearest pixel of instance i
        d2 = np.where(d < d1, d1, np.minimum(d2, d))
        d1 = np.minimum(d1, d)
    background = instances == 0
    out[background] = (w0 * np.exp(-((d1 + d2)[background] ** 2) / (2.0 * sigma**2))).astype(np.float32)
    return out


def weight_map(labels: np.ndarray, instances: np.ndarray | None, class_weights: np.ndarray,
               w0: float = W0, sigma: float = SIGMA) -> np.ndarray:
    """(H, W) -> (H, W) float32 ``w_c(x)`` plus, with instance labels, the border term."""
    w = class_weights[labels].astype(np.float32)
    if instances is not None and w0 > 0:
        w += border_term(instances, w0, sigma)
    return w
