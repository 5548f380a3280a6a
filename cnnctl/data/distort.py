"""The distorted data of the Spatial Transformer paper's experiments, made from real images.

Jaderberg et al. 2015, sec. 4.1, distort MNIST digits; here the same
distortions are applied to the bundled Fashion-MNIST (real 28x28 photographs
of clothing, MIT licence), every draw seeded (a function of seed, kind and
split), so a data set is the same on every machine:

- ``R``: rotation by an angle uniform in [-90, 90] degrees (28x28);
- ``RTS``: rotation in [-45, 45] degrees, scale in [0.7, 1.2] and a random
  translation, on a 42x42 canvas (the object stays inside it);
- ``P``: projective: the image scaled by 0.75 and its four corners moved by
  N(0, 4 pixels) each, clipped to 8 pixels so that the quadrilateral does not fold (28x28);
- ``E``: elastic (Simard et al. 2003): a random displacement field, uniform
  in [-1, 1] per pixel, smoothed by a Gaussian of sigma 4 and scaled by 34
  pixels (28x28);
- ``cluttered``: the object at a random place on a 60x60 canvas with 8
  random 8x8 crops of other images of the split as clutter.

Warps are inverse maps (output pixel -> input point) sampled bilinearly by
the same ``bilinear_sample`` the SpatialTransformer layer uses.
"""

from __future__ import annotations

import numpy as np

KINDS = {"r": "R", "rts": "RTS", "p": "P", "e": "E", "cluttered": "cluttered"}
SIZES = {"R": 28, "RTS": 42, "P": 28, "E": 28, "cluttered": 60}
CHUNK = 4096


def parse_kind(text: str) -> str:
    key = text.strip().lower()
    key = key.removeprefix("distorted:")
    if key not in KINDS:
        from cnnctl.errors import CnnctlError

        raise CnnctlError(f"unknown distortion {text!r}", hint="choose distorted:R, distorted:RTS, distorted:P, "
                          "distorted:E or distorted:cluttered")
    return KINDS[key]


def _warp(images: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """uint8 (n, h, w) images sampled at normalised grids (n, H, W, 2) -> uint8 (n, H, W)."""
    from cnnctl.layers.spatial_transformer import bilinear_sample

    out = np.empty(grids.shape[:3], np.uint8)
    for i in range(0, len(images), CHUNK):
        x = images[i:i + CHUNK, ..., None].astype(np.float32)
        y = np.asarray(bilinear_sample(x, grids[i:i + CHUNK].astype(np.float32)))[..., 0]
        out[i:i + CHUNK] = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return out


def _canvas_grid(size: int, src: int, matrices: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Grids for output canvases of ``size``: input pixel offset (from the centre) = M @ (u - t).

    ``matrices`` (n, 2, 2) and ``shifts`` (n, 2) are in pixels; the result is normalised to the
    ``src``-pixel input.
    """
    c = (np.arange(size) - (size - 1) / 2.0)
    ux, uy = np.meshgrid(c, c)                                              # (size, size)
    u = np.stack([ux, uy], axis=-1)[None] - shifts[:, None, None, :]         # (n, size, size, 2)
    v = np.einsum("nij,nhwj->nhwi", matrices, u)                            # input pixel offsets
    return v / ((src - 1) / 2.0)


def _rotation(angles: np.ndarray) -> np.ndarray:
    c, s = np.cos(angles), np.sin(angles)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)      # (n, 2, 2)


def rotate(images, rng):
    n, src = len(images), images.shape[1]
    angles = np.radians(rng.uniform(-90, 90, n))
    return _warp(images, _canvas_grid(src, src, _rotation(-angles), np.zeros((n, 2))))


def rotate_translate_scale(images, rng, size: int = 42):
    n, src = len(images), images.shape[1]
    angles = np.radians(rng.uniform(-45, 45, n))
    scales = rng.uniform(0.7, 1.2, n)
    room = np.maximum(0.0, (size - src * scales) / 2.0)                     # the object stays on the canvas
    shifts = rng.uniform(-1, 1, (n, 2)) * room[:, None]
    return _warp(images, _canvas_grid(size, src, _rotation(-angles) / scales[:, None, None], shifts))


def _homography(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """3x3 H with H @ (dst, 1) ~ (src, 1) for 4 point pairs (normalised coordinates)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    h = np.linalg.solve(np.array(rows), np.array(rhs))
    return np.append(h, 1.0).reshape(3, 3)


def projective(images, rng, scale: float = 0.75, sigma_px: float = 4.0):
    n, src = len(images), images.shape[1]
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    half = (src - 1) / 2.0
    c = (np.arange(src) - half) / half
    gx, gy = np.meshgrid(c, c)
    base = np.stack([gx.ravel(), gy.ravel(), np.ones(src * src)], axis=1)   # (p, 3)
    grids = np.empty((n, src, src, 2))
    for i in range(n):
        moved = corners * scale + np.clip(rng.normal(0.0, sigma_px, (4, 2)), -2 * sigma_px, 2 * sigma_px) / half
        try:
            h = _homography(moved, corners)
        except np.linalg.LinAlgError:
            h = np.diag([1 / scale, 1 / scale, 1.0])
        pts = base @ h.T
        w = np.where(np.abs(pts[:, 2:]) < 1e-6, 1e-6, pts[:, 2:])
        grids[i] = (pts[:, :2] / w).reshape(src, src, 2)
    return _warp(images, grids)


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) matrix that smooths a signal with a Gaussian (zero outside), row-normalised."""
    idx = np.arange(size)
    g = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)
    return g / g.sum(axis=1, keepdims=True)


def elastic(images, rng, alpha: float = 34.0, sigma: float = 4.0):
    n, src = len(images), images.shape[1]
    g = _gaussian_matrix(src, sigma)
    fields = rng.uniform(-1, 1, (n, 2, src, src))
    shift_px = alpha * np.einsum("ij,ncjk,lk->ncil", g, fields, g)         # alpha * (G F G^T): pixels
    half = (src - 1) / 2.0
    c = (np.arange(src) - half) / half
    gx, gy = np.meshgrid(c, c)
    grids = np.stack([gx, gy], axis=-1)[None] + np.moveaxis(shift_px, 1, -1) / half
    return _warp(images, grids)


def cluttered(images, rng, size: int = 60, pieces: int = 8, piece: int = 8):
    n, src = len(images), images.shape[1]
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        canvas = out[i]
        for _ in range(pieces):
            other = images[rng.integers(n)]
            y, x = rng.integers(0, src - piece + 1, 2)
            cy, cx = rng.integers(0, size - piece + 1, 2)
            np.maximum(canvas[cy:cy + piece, cx:cx + piece], other[y:y + piece, x:x + piece],
                       out=canvas[cy:cy + piece, cx:cx + piece])
        oy, ox = rng.integers(0, size - src + 1, 2)
        np.maximum(canvas[oy:oy + src, ox:ox + src], images[i], out=canvas[oy:oy + src, ox:ox + src])
    return out


DISTORTIONS = {"R": rotate, "RTS": rotate_translate_scale, "P": projective, "E": elastic, "cluttered": cluttered}


def distort(images: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """uint8 (n, 28, 28) -> uint8 (n, S, S) distorted per ``kind``; a function of (images, kind, seed)."""
    kind = parse_kind(kind)
    rng = np.random.default_rng([seed, list(DISTORTIONS).index(kind), 0x57A])
    return DISTORTIONS[kind](np.asarray(images, np.uint8), rng)
