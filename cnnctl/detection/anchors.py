"""Faster R-CNN's anchors (Ren et al. 2015, sec. 3.1.1): at every position of the last shared feature
map, k = len(scales) x len(ratios) reference boxes centred on that position.

The paper uses scales 128, 256, 512 px and aspect ratios 1:2, 1:1, 2:1 (k = 9) on ~600 px images
with a stride-16 feature map; recipes for small images scale them down (``[detect] anchor_scales``).
"""

from __future__ import annotations


def base_anchors(scales, ratios):
    """(k, 4) anchors centred on (0, 0), ratios outer and scales inner; ratio = height / width, area
    scale^2 (so a ratio-2 anchor of scale 128 is 181 x 91 px)."""
    import numpy as np

    out = []
    for ratio in ratios:
        for scale in scales:
            h = scale * np.sqrt(ratio)
            w = scale / np.sqrt(ratio)
            out.append([-h / 2, -w / 2, h / 2, w / 2])
    return np.asarray(out, np.float32)


def grid_anchors(feature_height: int, feature_width: int, stride: int, scales, ratios):
    """(feature_height * feature_width * k, 4) anchors, position-major (row, then column), then the k
    anchors of ``base_anchors`` -- the order the RPN's (b, fh, fw, k * 4) output reshapes to.

    The anchors of feature cell (i, j) are centred at ((i + 0.5) * stride, (j + 0.5) * stride): the
    centre of the image patch the cell summarises."""
    import numpy as np

    ys = (np.arange(feature_height, dtype=np.float32) + 0.5) * stride
    xs = (np.arange(feature_width, dtype=np.float32) + 0.5) * stride
    cy, cx = np.meshgrid(ys, xs, indexing="ij")                              # (fh, fw)
    centres = np.stack([cy, cx, cy, cx], axis=-1).reshape(-1, 1, 4)          # (fh * fw, 1, 4)
    return (centres + base_anchors(scales, ratios)[None]).reshape(-1, 4)     # (fh * fw * k, 4)
