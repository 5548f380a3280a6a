"""Selective search (Uijlings et al., IJCV 2013) region proposals, as R-CNN and Fast R-CNN use them:
OpenCV-contrib's ``ximgproc.segmentation`` implementation (the field's standard one), "fast" mode
(R-CNN sec. 2.1: about 2k proposals per image).

OpenCV ranks the regions with an unseeded random number per region (the paper's "level x random"),
so the same image gives the same set of boxes in a different order on every call. To keep training
and evaluation reproducible the set is taken in a fixed order: sorted, then shuffled by a generator
seeded with the image's bytes alone, and cut to ``max_proposals`` (the same random-rank idea, made a
function of the image; fewer proposals are a prefix of more).

Proposals of an image are memoised for the life of the process (keyed by the image's bytes), so a
training run computes each training image's proposals once, in its first epoch, as the papers
precompute them.
"""

from __future__ import annotations

import hashlib

import numpy as np

MODES = ("fast", "quality", "single")
_CACHE: dict[bytes, np.ndarray] = {}
_CACHE_LIMIT = 200_000


def _opencv_segmentation():
    try:
        import cv2

        return cv2, cv2.ximgproc.segmentation
    except (ImportError, AttributeError):
        from cnnctl.errors import CnnctlError

        raise CnnctlError("selective search needs OpenCV's contrib modules (cv2.ximgproc)",
                          hint="pip install opencv-contrib-python-headless (it is in cnnctl's dependencies; "
                               "a plain opencv-python installed beside it hides the contrib modules)") from None


def selective_search(image: np.ndarray, max_proposals: int = 2000, mode: str = "fast",
                     min_size: int = 0) -> np.ndarray:
    """One image (H, W, c) uint8, c in {1, 3} -> proposals (n, 4) float32 (y0, x0, y1, x1), n <= max_proposals,
    boxes with a side under ``min_size`` pixels dropped."""
    if mode not in MODES:
        raise ValueError(f"selective search mode {mode!r}: valid modes are {', '.join(MODES)}")
    image = np.ascontiguousarray(image if image.shape[-1] == 3 else np.repeat(image[..., :1], 3, axis=-1))
    image_key = hashlib.sha1(image.tobytes() + repr(image.shape).encode()).digest()
    key = image_key + repr((max_proposals, mode, min_size)).encode()
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    cv2, seg = _opencv_segmentation()
    cv2.setNumThreads(1)
    search = seg.createSelectiveSearchSegmentation()
    search.setBaseImage(image)
    {"fast": search.switchToSelectiveSearchFast, "quality": search.switchToSelectiveSearchQuality,
     "single": search.switchToSingleStrategy}[mode]()
    rects = np.unique(np.asarray(search.process(), np.int64).reshape(-1, 4), axis=0)     # (x, y, w, h), sorted
    rects = rects[(rects[:, 2] >= max(1, min_size)) & (rects[:, 3] >= max(1, min_size))]
    order = np.random.default_rng(np.frombuffer(image_key[:8], np.uint64)).permutation(len(rects))[:max_proposals]
    x, y, w, h = rects[order].T
    out = np.stack([y, x, y + h, x + w], axis=1).astype(np.float32)
    if len(_CACHE) < _CACHE_LIMIT:
        _CACHE[key] = out
    return out


def batch_proposals(images: np.ndarray, max_proposals: int, mode: str = "fast", min_size: int = 0):
    """images (b, H, W, c) -> (boxes (b, max_proposals, 4) zero-padded, valid (b,) int32)."""
    boxes = np.zeros((len(images), max_proposals, 4), np.float32)
    valid = np.zeros((len(images),), np.int32)
    for i, image in enumerate(np.asarray(images)):
        found = selective_search(image, max_proposals, mode, min_size)
        boxes[i, :len(found)], valid[i] = found, len(found)
    return boxes, valid
