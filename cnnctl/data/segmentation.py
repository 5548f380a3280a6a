"""Segmentation data: images with per-pixel class labels (and, where known, instance labels).

Sources (``data.path``):

- ``scenes:free`` -- Fashion-MNIST ``free`` scenes (``shared/SCENES.md``): 128x128 grey canvases of
  1-5 real Fashion-MNIST items; label image 0 = background, ``label + 1`` on each item's mask. The
  layout is synthetic, the objects are real. Counts and seed: ``data.scene_counts`` /
  ``data.scene_seed``; validation scenes are train-pool scenes after the train ones.
- ``nuclei`` -- the bundled 2018 Data Science Bowl image (512x512, 125 labelled nuclei; BSD-3, see
  ``bundled/nuclei/NOTICE``), split by region so that no test pixel is seen in training: test = the
  right quarter (columns 384-511, 512x128), validation = the bottom quarter of the rest (rows
  384-511 of columns 0-383), train = the top-left 384x384. Classes: background, nucleus; the
  instance ids are kept (nuclei cut by a split line count as one instance on each side).
- instance-label TIFFs: ``DIR/images/NAME.tif`` with ``DIR/masks/NAME.tif`` holding instance ids
  (read with ``tifffile``): every id > 0 is the foreground class, and the ids are kept.
- the Oxford-IIIT Pet layout: ``DIR/images/NAME.jpg`` with ``DIR/annotations/trimaps/NAME.png``
  (1 = pet, 2 = background, 3 = border), split by ``DIR/annotations/trainval.txt`` and ``test.txt``
  when they exist. Classes: background, pet, border.
- a COCO instances file (``--data DIR/instances.json``): polygon and RLE masks, decoded with
  ``pycocotools``; classes = background + the categories in id order; later annotations paint over
  earlier ones; ``iscrowd`` regions are kept as their class (no instance id). Images are found
  beside the JSON file or in ``images/`` beside it; all of them go into the training split.
- a folder of image/mask pairs: ``DIR/images/NAME.png`` with ``DIR/masks/NAME.png`` (any image
  extension; the mask a PNG of class indices, or a binary 0/255 mask), optionally split into
  ``DIR/train``, ``DIR/val``, ``DIR/test``. ``DIR/classes.txt`` names the classes one per line,
  background first; without it the classes are ``background`` and ``class_1`` ... up to the largest
  mask value.

A split is held in memory: ``images`` (n, H, W, c) uint8, ``labels`` (n, H, W) uint8 and, for data
with instances, ``instances`` (n, H, W) int32 (0 = none); images of various sizes are lists of
per-image arrays. Problems (a missing mask, a mask whose size differs from its image's, a mask
value beyond the class list, an unreadable file) are collected by path and reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

VOID = 255                          # Pascal VOC's "void" (object borders, unlabelled): never trained on or scored
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
SCENE_COUNTS = (6000, 500, 500)     # free scenes: train / val / test unless data.scene_counts says otherwise
TIFF = (".tif", ".tiff")


@dataclass
class SegSplit:
    # One size: arrays. Images of various sizes: lists of per-image arrays of the same layouts.
    images: np.ndarray | list             # (n, H, W, c) uint8
    labels: np.ndarray | list             # (n, H, W) uint8 class indices
    instances: np.ndarray | list | None = None   # (n, H, W) int32 instance ids, 0 = no instance
    names: list[str] = field(default_factory=list)   # one per image (file stem or scene index)

    @property
    def count(self) -> int:
        return len(self.images)


@dataclass
class SegData:
    source: str
    class_names: list[str]                # index 0 = background
    splits: dict[str, SegSplit | None]


def free_scenes(counts=SCENE_COUNTS, seed: int = 0, train_items: tuple[int, int] = (1, 5)) -> SegData:
    """``counts`` = (train, val, test) ``free`` scenes with their label images and item instances;
    ``train_items`` = (fewest, most) items in the training scenes only (validation and test scenes
    keep SCENES.md's 1-5)."""
    from cnnctl.data.scenes import SCENE_CLASSES, free_scene
    from cnnctl.data.sources import fashion_mnist

    fm = fashion_mnist("")
    pools = {"train": (fm["train"].images[..., 0], fm["train"].labels),
             "test": (fm["test"].images[..., 0], fm["test"].labels)}
    n_train, n_val, n_test = (int(c) for c in counts)

    def make(split: str, start: int, n: int, items=(1, 5)) -> SegSplit | None:
        if n == 0:
            return None
        images, labels = pools[split]
        scenes = [free_scene(images, labels, split, seed, i, items) for i in range(start, start + n)]
        instances = np.zeros((n, 128, 128), np.int32)
        for j, scene in enumerate(scenes):
            for k, item in enumerate(scene.items):
                instances[j][item.mask] = k + 1
        return SegSplit(np.stack([s.image for s in scenes])[..., None],
                        np.stack([s.label_image() for s in scenes]), instances,
                        [f"{split}-{i:06d}" for i in range(start, start + n)])

    splits = {"train": make("train", 0, n_train, train_items), "val": make("train", n_train, n_val),
              "test": make("test", 0, n_test)}
    return SegData("scenes:free", ["background", *SCENE_CLASSES], splits)


# ----------------------------------------------------------------------------- image/mask folders
def read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """An image file -> (H, W, c) uint8 (16-bit images are scaled by their 0.1-99.9 percentiles)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I", "F"):
            a = np.asarray(im, dtype=np.float64)
            lo, hi = np.percentile(a, (0.1, 99.9))
            a = np.clip((a - lo) / max(hi - lo, 1e-9) * 255.0, 0, 255)
            a = np.rint(a).astype(np.uint8)[..., None]
        else:
            want = {1: "L", 3: "RGB"}.get(channels or 0) or ("L" if im.mode in ("L", "1", "LA") else "RGB")
            a = np.asarray(im.convert(want))
            if not channels and im.mode == "P" and np.array_equal(a[..., 0], a[..., 1]) \
                    and np.array_equal(a[..., 0], a[..., 2]):
                a = a[..., 0]                   # a palette of greys is a grey image; a coloured one stays RGB
            a = a[..., None] if a.ndim == 2 else a
    if channels == 3 and a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif channels == 1 and a.shape[-1] == 3:
        a = np.rint(a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)[..., None]
    return a


def read_mask(path: Path, binary: bool = True) -> np.ndarray:
    """A mask PNG -> (H, W) int64 class indices; a binary 0/255 mask becomes 0/1 (``binary``)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:        # an RGB(A) mask must be grey in disguise (all channels equal)
        if not (a[..., :3] == a[..., :1]).all():
            raise ValueError("a colour mask: masks must hold class indices (a palette or grey PNG)")
        a = a[..., 0]
    a = a.astype(np.int64)
    values = np.unique(a)
    if binary and len(values) <= 2 and values.max(initial=0) == 255:
        a = (a == 255).astype(np.int64)
    return a


def _pairs(folder: Path) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    from cnnctl.data.images import IMAGE_EXTENSIONS

    images, masks = folder / "images", folder / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise CnnctlError(f"{folder} has no images/ and masks/ folders",
                          hint="lay the data out as DIR/images/NAME.png with DIR/masks/NAME.png")
    by_stem = {p.stem: p for p in masks.iterdir() if p.is_file()}
    pairs, problems = [], []
    for p in sorted(images.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        m = by_stem.get(p.stem)
        if m is None:
            problems.append((str(p), f"no mask: expected {masks / (p.stem + '.png')}"))
        else:
            pairs.append((p, m))
    return pairs, problems


def _load_pairs(pairs, class_count: int | None, problems: list, remap: dict[int, int] | None = None,
                void: bool = False, binary: bool = True, objects: dict[str, Path] | None = None) -> SegSplit:
    """``void``: mask value 255 marks pixels to ignore (Pascal VOC's convention), unless ``binary`` and
    the mask holds only 0 and 255 (a binary mask: 255 is the object); ``objects``: image stem -> an
    instance-id PNG (VOC's SegmentationObject, 255 = void)."""
    images, labels, names, instances = [], [], [], []
    for img_path, mask_path in pairs:
        try:
            img = (to_uint8(read_tiff(img_path))[..., None] if img_path.suffix.lower() in TIFF
                   else read_image(img_path))
            if img.ndim != 3:
                raise ValueError(f"a {img.ndim - 1}-D image (one 2-D page expected)")
        except Exception as e:  # noqa: BLE001 - every unreadable file is reported by path
            problems.append((str(img_path), f"unreadable image: {e}"))
            continue
        try:
            if mask_path.suffix.lower() in TIFF:          # instance ids: every id > 0 is foreground
                ids = read_tiff(mask_path).astype(np.int64)
                mask = (ids > 0).astype(np.int64)
            elif remap is not None:                       # a coded mask (Pet trimaps): values -> classes
                ids, raw = None, read_mask(mask_path, binary=False)
                unknown = sorted(set(np.unique(raw).tolist()) - set(remap))
                if unknown:
                    raise ValueError(f"values {unknown[:5]} are not among {sorted(remap)}")
                mask = np.vectorize(remap.get, otypes=[np.int64])(raw) if raw.size else raw
            else:
                ids, mask = None, read_mask(mask_path, binary=binary)
            if objects is not None:
                ids = read_mask(objects[img_path.stem], binary=False)
                ids[ids == VOID] = 0
        except Exception as e:  # noqa: BLE001
            problems.append((str(mask_path), f"unreadable mask: {e}"))
            continue
        if mask.shape != img.shape[:2]:
            problems.append((str(mask_path), (f"mask is {mask.shape[1]}x{mask.shape[0]}, "
                                             f"its image {img.shape[1]}x{img.shape[0]}")))
            continue
        if mask.max(initial=0) > 255:
            problems.append((str(mask_path), (f"mask value {int(mask.max())} is above 255: class masks hold "
                                             "class indices (instance ids belong in a TIFF mask)")))
            continue
        if class_count is not None and mask[mask != VOID if void else slice(None)].max(initial=0) >= class_count:
            bad = sorted(int(v) for v in np.unique(mask) if v >= class_count and not (void and v == VOID))
            problems.append((str(mask_path), (f"mask values {bad[:5]} are outside the {class_count} classes "
                                             "of classes.txt")))
            continue
        images.append(img)
        labels.append(mask.astype(np.uint8))
        names.append(img_path.stem)
        instances.append(None if ids is None else ids.astype(np.int32))
    if not images:
        return SegSplit(np.zeros((0, 1, 1, 1), np.uint8), np.zeros((0, 1, 1), np.uint8))
    channels = {a.shape[-1] for a in images}
    if len(channels) > 1:                 # grey and colour images mixed: all become colour
        images = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in images]
    with_ids = all(i is not None for i in instances)
    if len({a.shape for a in images}) == 1:       # one size: arrays; else lists of per-image arrays
        return SegSplit(np.stack(images), np.stack(labels), np.stack(instances) if with_ids else None, names)
    return SegSplit(images, labels, instances if with_ids else None, names)


def mask_folder(path: str) -> SegData:
    root = Path(path)
    if not root.is_dir():
        raise CnnctlError(f"segmentation data {root} is not a folder",
                          hint="point --data at DIR with images/ and masks/ (or train/, val/, test/ of them), "
                               "or use scenes:free")
    names_file = root / "classes.txt"
    class_names = ([ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
                   if names_file.is_file() else None)
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s / "images").is_dir()}
    if not split_dirs:
        split_dirs = {"train": root}
    problems: list[tuple[str, str]] = []
    splits: dict[str, SegSplit | None] = {"train": None, "val": None, "test": None}
    for s, d in split_dirs.items():
        pairs, missing = _pairs(d)
        problems += missing
        splits[s] = _load_pairs(pairs, len(class_names) if class_names else None, problems, void=True)
    _raise_problems(problems)
    if splits["train"] is None or splits["train"].count == 0:
        raise CnnctlError(f"{root} has no training image/mask pairs", hint="add DIR/images and DIR/masks")
    if class_names is None:
        top = max(int(lab[lab != VOID].max(initial=0)) for sp in splits.values() if sp is not None
                  for lab in sp.labels)
        class_names = ["background", *[f"class_{i}" for i in range(1, max(top, 1) + 1)]]
    return SegData("mask_folder", class_names, splits)


NUCLEI = Path(__file__).resolve().parent / "bundled" / "nuclei"


def read_tiff(path: Path) -> np.ndarray:
    """A TIFF (optionally gzip-compressed, ``.tif.gz``) -> its first page as an array."""
    import gzip
    import io

    import tifffile

    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return tifffile.imread(io.BytesIO(data))


def to_uint8(a: np.ndarray) -> np.ndarray:
    """A grey image of any integer or float type -> uint8: unchanged when it already fits 0-255,
    else scaled by its 0.1-99.9 percentiles."""
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.integer) and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    lo, hi = np.percentile(a, (0.1, 99.9))
    return np.rint(np.clip((a.astype(np.float64) - lo) / max(hi - lo, 1e-9) * 255.0, 0, 255)).astype(np.uint8)


def nuclei() -> SegData:
    image = to_uint8(read_tiff(NUCLEI / "img2d.tif.gz"))
    inst = read_tiff(NUCLEI / "mask2d.tif.gz").astype(np.int32)

    def region(rows, cols, name):
        ids = inst[rows, cols]
        return SegSplit(image[rows, cols][None, ..., None], (ids > 0).astype(np.uint8)[None], ids[None], [name])

    splits = {"train": region(slice(0, 384), slice(0, 384), "nuclei-train"),
              "val": region(slice(384, 512), slice(0, 384), "nuclei-val"),
              "test": region(slice(0, 512), slice(384, 512), "nuclei-test")}
    return SegData("nuclei", ["background", "nucleus"], splits)


PET_TRIMAP = {2: 0, 1: 1, 3: 2}          # the trimap's values -> background 0, pet 1, border 2


def pet_trimaps(root: Path) -> SegData:
    """The Oxford-IIIT Pet layout (images/, annotations/trimaps/, annotations/{trainval,test}.txt)."""
    from cnnctl.data.images import IMAGE_EXTENSIONS

    trimaps = root / "annotations" / "trimaps"
    names_in = {}
    for split, file in (("train", "trainval.txt"), ("test", "test.txt")):
        listing = root / "annotations" / file
        if listing.is_file():
            names_in[split] = [ln.split()[0] for ln in listing.read_text().splitlines()
                               if ln.strip() and not ln.startswith("#")]
    images = {p.stem: p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    if not names_in:
        names_in = {"train": sorted(images)}
    problems: list[tuple[str, str]] = []
    splits: dict[str, SegSplit | None] = {"train": None, "val": None, "test": None}
    for split, names in names_in.items():
        pairs = _listed_pairs(names, images, root / "images", trimaps, "trimap", "listed in annotations/ but missing",
                              problems)
        splits[split] = _load_pairs(pairs, None, problems, remap=PET_TRIMAP)
    _raise_problems(problems)
    return SegData("pet", ["background", "pet", "border"], splits)


def _listed_pairs(names, images: dict, image_dir: Path, mask_dir: Path, mask_word: str, no_image: str,
                  problems: list) -> list[tuple[Path, Path]]:
    """(image, ``mask_dir/NAME.png``) for each listed name; a name with no image or no mask is a problem."""
    pairs = []
    for n in names:
        if n not in images:
            problems.append((str(image_dir / f"{n}.jpg"), no_image))
        elif not (mask_dir / f"{n}.png").is_file():
            problems.append((str(images[n]), f"no {mask_word}: expected {mask_dir / (n + '.png')}"))
        else:
            pairs.append((images[n], mask_dir / f"{n}.png"))
    return pairs


def voc_folder(root: Path) -> SegData:
    """The Pascal VOC segmentation layout: ``JPEGImages/NAME.jpg``, ``SegmentationClass/NAME.png``
    (palette PNG of class indices, 255 = void), optionally ``SegmentationObject/NAME.png`` (instance
    ids) and ``ImageSets/Segmentation/{train,val,test}.txt``; classes from ``class_names.txt``
    (labelme's ``labelme2voc.py`` writes one, ``_background_`` first), else VOC's 21."""
    from cnnctl.data.images import IMAGE_EXTENSIONS

    names_file = root / "class_names.txt"
    class_names = list(VOC_CLASSES)
    if names_file.is_file():
        class_names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        class_names[0] = "background" if class_names[0] in ("_background_", "__background__") else class_names[0]
    images = {p.stem: p for p in (root / "JPEGImages").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    masks = root / "SegmentationClass"
    sets = root / "ImageSets" / "Segmentation"
    names_in = {split: [ln.strip() for ln in (sets / f"{split}.txt").read_text().splitlines() if ln.strip()]
                for split in ("train", "val", "test") if (sets / f"{split}.txt").is_file()}
    if not names_in:                                       # no split lists: every image with a mask
        names_in = {"train": sorted(p.stem for p in masks.iterdir() if p.suffix.lower() == ".png")}
    object_dir = root / "SegmentationObject"
    problems: list[tuple[str, str]] = []
    splits: dict[str, SegSplit | None] = {"train": None, "val": None, "test": None}
    for split, names in names_in.items():
        pairs = _listed_pairs(names, images, root / "JPEGImages", masks, "mask", "listed or masked, but no image",
                              problems)
        objects = ({p.stem: object_dir / f"{p.stem}.png" for p, _ in pairs}
                   if object_dir.is_dir() and all((object_dir / f"{p.stem}.png").is_file() for p, _ in pairs)
                   else None)
        splits[split] = _load_pairs(pairs, len(class_names), problems, void=True, binary=False, objects=objects)
    _raise_problems(problems)
    return SegData("voc", class_names, splits)


def _raise_problems(problems: list[tuple[str, str]]) -> None:
    """One error naming every problem by path (the first 10), or nothing."""
    if problems:
        shown = "\n".join(f"  {p}: {why}" for p, why in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CnnctlError(f"{len(problems)} problem(s) in the segmentation data:\n{shown}{more}",
                          hint="fix or remove those files")


def _coco_mask(segmentation, h: int, w: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) -> (h, w) bool."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):                    # polygons [[x1, y1, x2, y2, ...], ...]
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation.get("counts"), list):    # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:                                                 # compressed RLE
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
    return mask_utils.decode(rle).astype(bool)


def coco_instances(path: Path) -> SegData:
    import json

    try:
        doc = json.loads(path.read_text())
        categories = sorted(doc["categories"], key=lambda c: c["id"])
        images, annotations = doc["images"], doc.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CnnctlError(f"{path} is not a COCO instances file: {e}",
                          hint="give a JSON with images, annotations and categories") from None
    # labelme2coco writes the background as a category of its own ("_background_", no annotations)
    categories = [c for c in categories if c.get("name") not in ("_background_", "__background__")]
    class_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    by_image: dict[int, list] = {}
    for a in annotations:
        by_image.setdefault(a["image_id"], []).append(a)
    problems: list[tuple[str, str]] = []
    imgs, labels, instances, names = [], [], [], []
    for info in images:
        candidates = [path.parent / info["file_name"], path.parent / "images" / info["file_name"]]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            problems.append((str(candidates[0]), "image listed in the COCO file is missing"))
            continue
        try:
            img = read_image(file)
        except Exception as e:  # noqa: BLE001
            problems.append((str(file), f"unreadable image: {e}"))
            continue
        h, w = img.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            problems.append((str(file), f"image is {w}x{h}, the COCO file says {info['width']}x{info['height']}"))
            continue
        lab = np.zeros((h, w), np.uint8)
        ids = np.zeros((h, w), np.int32)
        for k, a in enumerate(by_image.get(info["id"], [])):
            if a.get("category_id") not in class_of:
                problems.append((str(path), f"annotation {a.get('id')} has an unknown category {a.get('category_id')}"))
                continue
            try:
                m = _coco_mask(a["segmentation"], h, w)
            except Exception as e:  # noqa: BLE001
                problems.append((str(path), f"annotation {a.get('id')}: unreadable segmentation: {e}"))
                continue
            lab[m] = class_of[a["category_id"]]
            if not a.get("iscrowd", 0):
                ids[m] = k + 1
        imgs.append(img)
        labels.append(lab)
        instances.append(ids)
        names.append(Path(info["file_name"]).stem)
    _raise_problems(problems)
    if not imgs:
        raise CnnctlError(f"{path} lists no images", hint="give a COCO file with images and annotations")
    if len({a.shape[-1] for a in imgs}) > 1:
        imgs = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in imgs]
    same = len({a.shape for a in imgs}) == 1
    split = (SegSplit(np.stack(imgs), np.stack(labels), np.stack(instances), names) if same
             else SegSplit(imgs, labels, instances, names))
    return SegData("coco", ["background", *[c["name"] for c in categories]],
                   {"train": split, "val": None, "test": None})


def _item_range(scene_items) -> tuple[int, int]:
    """``data.scene_items`` -> (fewest, most) items per training scene; [] = SCENES.md's 1-5."""
    if not scene_items:
        return (1, 5)
    items = tuple(scene_items)
    if (len(items) != 2 or not all(isinstance(v, int) for v in items)
            or not 1 <= items[0] <= items[1] <= 10):
        raise CnnctlError(f"data.scene_items = {list(items)} is not a range of item counts",
                          hint="give [fewest, most] with 1 <= fewest <= most <= 10, e.g. [3, 5]; [] keeps 1-5")
    return items


def is_free_scenes(path: str) -> bool:
    """Whether a ``data.path`` names the Fashion-MNIST ``free`` scenes (``scenes:free`` or ``scenes``)."""
    return path.lower() in ("scenes:free", "scenes")


def load_segmentation(path: str, scene_counts=(), scene_seed: int = 0, scene_items=()) -> SegData:
    """``scenes:free``, ``nuclei``, a COCO instances file, the Oxford-IIIT Pet layout, the Pascal VOC
    segmentation layout or a folder of image/mask pairs. ``scene_items`` (fewest, most) items per
    training scene of ``scenes:free``."""
    if scene_items and not is_free_scenes(path):
        raise CnnctlError(f"data.scene_items applies to scenes:free, not to {path!r}",
                          hint="remove data.scene_items, or train on --data scenes:free")
    if path.lower() == "nuclei":
        return nuclei()
    if is_free_scenes(path):
        return free_scenes(tuple(scene_counts) if scene_counts else SCENE_COUNTS, scene_seed,
                           _item_range(scene_items))
    if not path:
        raise CnnctlError("segmentation needs data", hint="--data scenes:free, or a folder with images/ and masks/")
    if path.lower().endswith(".json"):
        return coco_instances(Path(path))
    if (Path(path) / "annotations" / "trimaps").is_dir():
        return pet_trimaps(Path(path))
    if (Path(path) / "JPEGImages").is_dir() and (Path(path) / "SegmentationClass").is_dir():
        return voc_folder(Path(path))
    return mask_folder(path)
