"""Segmenting images of any size with a trained network: overlap-tile prediction (Ronneberger et al.
2015, Fig. 2), run loading, and the mask / overlay files of ``cnnctl segment``.

Overlap-tile (``predict_tiled``): a valid-padding network sees the image mirrored at its borders, as
in the paper; a same-padding network sees overlapping tiles inside the image whose seams are
cropped by a context margin. Tile origins are multiples of the network's total stride, so every
tile pools on the grid the whole image would: on a same-padding network, tiled prediction equals
whole-image prediction once the margin covers the receptive field (``tests/test_segment.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError
from cnnctl.inference import logits_of


def total_stride(model) -> int:
    """The product of the strides of every downsampling layer (2 ** depth for a U-Net)."""
    import keras

    stride = 1
    for layer in model.layers:
        if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)) or isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.Conv2DTranspose):
            stride *= int(layer.strides[0])
    return stride


def _sides(model) -> tuple[int, int]:
    return int(model.input_shape[1]), int(model.output_shape[1])


def default_margin(model) -> int:
    """Context margin of a same-padding network: an eighth of the tile, a multiple of its stride."""
    t, o = _sides(model)
    if t != o:
        return 0
    s = total_stride(model)
    return (t // 8) // s * s


def predict_tiled(model, image: np.ndarray, margin: int | None = None, batch: int = 8) -> np.ndarray:
    """(H, W, c) uint8 -> (H, W, k) float32 logits of the whole image, tile by tile.

    Valid-padding network (output side O < input side T): the image is mirrored by (T - O) / 2 at
    every border and tiled by O x O output squares (the paper's Fig. 2). Same-padding network: tiles
    of side T lie inside the image (mirrored up to a multiple of the network's stride, or up to T,
    when it is smaller); each keeps its output but ``margin`` pixels at the sides that face another
    tile, so the seams see real neighbours and the image borders see what whole-image prediction
    sees. ``margin`` (default ``default_margin``) must be a multiple of the network's stride."""
    t, o = _sides(model)
    if t == o:
        return _tiled_same(model, image, default_margin(model) if margin is None else int(margin), batch)
    m0 = (t - o) // 2                                     # the context a valid-padding network eats
    h, w = image.shape[:2]
    ny, nx = -(-h // o), -(-w // o)
    # the last tile's input starts at (n - 1) * o of the padded image and spans t pixels
    padded = np.pad(image, ((m0, (ny - 1) * o + t - h - m0), (m0, (nx - 1) * o + t - w - m0), (0, 0)),
                    mode=_mode(image))
    origins = [(y * o, x * o) for y in range(ny) for x in range(nx)]
    out = np.zeros((ny * o, nx * o, int(model.output_shape[-1])), np.float32)
    for chunk, logits in _run(model, padded, origins, t, batch):
        for (y, x), tile in zip(chunk, logits):
            out[y:y + o, x:x + o] = tile
    return out[:h, :w]


def _mode(image) -> str:
    return "reflect" if min(image.shape[:2]) > 1 else "edge"


def _run(model, padded, origins, t, batch):
    for s in range(0, len(origins), batch):
        chunk = origins[s:s + batch]
        tiles = np.stack([padded[y:y + t, x:x + t] for y, x in chunk]).astype(np.float32)
        yield chunk, logits_of(model, tiles, len(tiles))


def _origins(size: int, t: int, core: int) -> list[int]:
    """Tile origins along one axis of ``size`` >= t: every ``core`` pixels, the last flush with the end."""
    out = [0]
    while out[-1] + t < size:
        out.append(min(out[-1] + core, size - t))
    return out


def _tiled_same(model, image, c: int, batch: int) -> np.ndarray:
    t = _sides(model)[0]
    stride = total_stride(model)
    core = t - 2 * c
    if c < 0 or core <= 0:
        raise CnnctlError(f"a margin of {c} px leaves nothing of a {t}-pixel tile", hint=f"use a margin below {t // 2}")
    if c % stride:
        raise CnnctlError(f"the margin {c} is not a multiple of the network's stride {stride}",
                          hint=f"use a multiple of {stride}")
    h, w = image.shape[:2]
    hp, wp = (max(t, -(-v // stride) * stride) for v in (h, w))
    padded = np.pad(image, ((0, hp - h), (0, wp - w), (0, 0)), mode=_mode(image)) if (hp, wp) != (h, w) else image
    ys, xs = _origins(hp, t, core), _origins(wp, t, core)
    out = np.zeros((hp, wp, int(model.output_shape[-1])), np.float32)
    for chunk, logits in _run(model, padded, [(y, x) for y in ys for x in xs], t, batch):
        for (y, x), tile in zip(chunk, logits):
            top, left = (c if y > 0 else 0), (c if x > 0 else 0)
            bottom, right = (t - c if y + t < hp else t), (t - c if x + t < wp else t)
            out[y + top:y + bottom, x + left:x + right] = tile[top:bottom, left:right]
    return out[:h, :w]


@dataclass(frozen=True)
class Decoding:
    """How a network's per-pixel scores become labels: the run's ``[segment]`` table, read the same way
    for the task's test scores and for ``cnnctl segment``.

    ``flip`` (``segment.tta = "flip"``): the softmax is averaged over the image and its mirror image.
    ``vote`` (``segment.vote = "objects"``): every connected foreground region of the argmax map takes
    one class, the one with the most probability summed over the region (``vote_objects``) -- for
    data whose objects are each one class, as scene items are. ``instances`` (``segment.instances``):
    objects are the connected components of each predicted class ("classes") or of the predicted
    foreground ("foreground"; ``cnnctl.metrics.segmentation.components``)."""

    flip: bool = False
    vote: bool = False
    instances: str = "classes"

    @classmethod
    def of(cls, segment_cfg) -> Decoding:
        return cls(flip=segment_cfg.tta == "flip", vote=segment_cfg.vote == "objects",
                   instances=segment_cfg.instances)

    def describe(self) -> str:
        parts = (["flip TTA"] if self.flip else []) + (["one class per object"] if self.vote else [])
        objects = "" if self.vote else f"; objects: components of {'the foreground' if self.instances == 'foreground' else 'each class'}"
        return (", ".join(parts) or "per-pixel argmax") + objects


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def vote_objects(probs: np.ndarray) -> np.ndarray:
    """(H, W, k) class probabilities (class 0 = background) -> (H, W) uint8 labels: the argmax map, then
    each 8-connected region of its foreground pixels relabelled with the foreground class whose
    probabilities sum highest over the region. Background pixels keep label 0."""
    from scipy.ndimage import label

    k = probs.shape[-1]
    labels = probs.argmax(axis=-1).astype(np.uint8)
    regions, n = label(labels > 0, structure=np.ones((3, 3), bool))
    if n == 0 or k < 3:
        return labels
    winner = np.concatenate([[0], object_classes(probs, regions)]).astype(np.uint8)   # region 0 = background
    return winner[regions]


def object_classes(probs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(H, W, k) probabilities and (H, W) object ids 1..n -> (n,) the foreground class whose
    probabilities sum highest over each object."""
    n, k = int(ids.max()), probs.shape[-1]
    if n == 0:
        return np.zeros(0, np.int64)
    flat = ids.reshape(-1)
    mass = np.stack([np.bincount(flat, weights=probs[..., c].reshape(-1), minlength=n + 1)
                     for c in range(1, k)], axis=1)
    return mass[1:].argmax(axis=1) + 1


def _mirror_averaged(logits, x: np.ndarray, flip: bool, axis: int) -> np.ndarray:
    """``softmax(logits(x))``; with ``flip``, averaged with the prediction of ``x`` mirrored along ``axis``
    (its width), mirrored back."""
    probs = softmax(logits(x))
    if flip:
        probs = (probs + np.flip(softmax(logits(np.flip(x, axis))), axis)) / 2
    return probs


def _batch_probs(model, images: np.ndarray, batch: int, flip: bool) -> np.ndarray:
    """(b, H, W, c) -> (b, H, W, k) class probabilities, whole images in batches."""
    return _mirror_averaged(lambda x: logits_of(model, x, batch), images.astype(np.float32), flip, axis=2)


def predict_probs(model, image: np.ndarray, margin: int | None = None, batch: int = 8, flip: bool = False
                  ) -> np.ndarray:
    """(H, W, c) uint8 -> (H, W, k) float32 class probabilities, overlap-tile (``predict_tiled``);
    ``flip``: averaged with the prediction of the mirror image, mirrored back."""
    return _mirror_averaged(lambda x: predict_tiled(model, x, margin, batch), image, flip, axis=1)


def labels_of(probs: np.ndarray, decoding: Decoding) -> np.ndarray:
    """(H, W, k) probabilities -> (H, W) uint8 labels as ``decoding`` says."""
    return vote_objects(probs) if decoding.vote else probs.argmax(axis=-1).astype(np.uint8)


def predict_labels(model, images, batch: int = 32, margin: int | None = None, decoding: Decoding = Decoding()):
    """(n, H, W, c) uint8 (or a list of (H_i, W_i, c)) -> (n, H, W) uint8 class labels (or a list).
    Images of exactly the network's tile size on a same-padding network go through in batches,
    whole; others tile by tile. ``decoding``: flip TTA and the object vote (the run's ``[segment]``)."""
    t, o = _sides(model)
    if isinstance(images, np.ndarray) and t == o and images.shape[1:3] == (t, t):
        out = np.zeros(images.shape[:3], np.uint8)
        for s in range(0, len(images), batch):
            probs = _batch_probs(model, images[s:s + batch], batch, decoding.flip)
            out[s:s + batch] = [labels_of(p, decoding) for p in probs]
        return out
    labels = [labels_of(predict_probs(model, im, margin, max(1, batch // 4), decoding.flip), decoding)
              for im in images]
    return np.stack(labels) if isinstance(images, np.ndarray) else labels


# ----------------------------------------------------------------------------- a run, files out
def load_segmenter(folder: str | Path, best: bool = True):
    """-> (the run's network, its class names, its ``Decoding``). ``best``: best.keras (highest val mIoU)
    when present."""
    from cnnctl.config import load_run_config
    from cnnctl.inference import load_keras_file
    from cnnctl.train.rundir import RunDir

    folder = Path(folder)
    if not folder.is_dir():
        raise CnnctlError(f"{folder}: no such run directory", hint="give a folder written by `cnnctl train`")
    run = RunDir.open(folder)
    cfg = load_run_config(folder)
    if cfg.task != "segment":
        raise CnnctlError(f"{folder} is not a segmentation run (its task is {cfg.task!r})",
                          hint="give a run trained with task = \"segment\" (e.g. `cnnctl train segment-scenes`)")
    which = "best" if best and run.file("best.keras").is_file() else "model"
    path = run.file(f"{which}.keras")
    if not path.is_file():
        raise CnnctlError(f"{path} does not exist", hint="the run has not finished an epoch yet")
    model = load_keras_file(path, hint="the file is damaged; use the run's other .keras file (--last)")
    return model, run.read_json("classes.json"), Decoding.of(cfg.segment)


def palette(k: int) -> np.ndarray:
    """(k, 3) uint8 colours: background black, then well-separated hues (tab10, then golden-angle hues)."""
    import colorsys

    tab10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
             (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    out = [(0, 0, 0)]
    for i in range(1, k):
        if i - 1 < len(tab10):
            out.append(tab10[i - 1])
        else:
            r, g, b = colorsys.hsv_to_rgb(((i * 0.618034) % 1.0), 0.8, 0.95)
            out.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(out, np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, k: int, alpha: float = 0.5) -> np.ndarray:
    """(H, W, c) uint8 image and (H, W) labels -> (H, W, 3) uint8: class colours blended over the image."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    colours = palette(k)[labels].astype(np.float32)
    mix = np.where(labels[..., None] > 0, (1 - alpha) * rgb + alpha * colours, rgb)
    return np.clip(np.rint(mix), 0, 255).astype(np.uint8)
