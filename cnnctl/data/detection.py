"""Detection data: images with labelled boxes.

Sources (``data.path``):

- ``scenes:free`` -- Fashion-MNIST ``free`` scenes (``shared/SCENES.md``): 128x128 grey canvases of 1-5
  real Fashion-MNIST items, each item's box the tight box around its mask (synthetic layout, real
  objects). Counts and seed as for segmentation (``data.scene_counts``, ``data.scene_seed``).
- ``nuclei`` -- the bundled DSB2018 image's nuclei, one box per instance, split by region as the
  segmentation data is (the test quarter is never seen in training).
- a COCO detection file (``--data DIR/instances.json``): ``bbox`` ``[x, y, width, height]``; images
  beside the JSON or in ``images/`` beside it.
- a Pascal VOC folder: ``Annotations/NAME.xml`` with ``JPEGImages/NAME.jpg``, split by
  ``ImageSets/Main/{train,val,test}.txt`` when they exist; ``difficult`` objects are kept and marked.
- a CSV with the header ``image,x_min,y_min,x_max,y_max,label[,split]`` (one row per box; image paths
  relative to the CSV's folder; an image with no boxes has one row with the box fields empty; ``split``
  is train, val or test, all of an image's rows the same; without it every image is for training).

Boxes are held as ``(y0, x0, y1, x1)`` float32 pixels with exclusive far edges (``cnnctl.detection.boxes``);
classes as 1..K with 0 kept for background; ``class_names`` lists the K object classes. Problems --
a box outside its image, a box of zero area, an unknown label, a missing or unreadable image -- are
collected by file and reported together; images without any box are named in a note and kept as
background-only images (they teach the detector what is not an object).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError


@dataclass
class DetSplit:
    images: list                          # per image (H, W, c) uint8
    boxes: list                           # per image (g, 4) float32 (y0, x0, y1, x1)
    classes: list                         # per image (g,) int32 in 1..K
    names: list[str] = field(default_factory=list)
    difficult: list | None = None         # per image (g,) bool (VOC): neither a hit nor a miss in VOC AP

    @property
    def count(self) -> int:
        return len(self.images)


@dataclass
class DetData:
    source: str
    class_names: list[str]                # the K object classes (class index i + 1)
    splits: dict[str, DetSplit | None]
    notes: list[str] = field(default_factory=list)


def free_scenes(counts, seed: int = 0) -> DetData:
    from cnnctl.data.scenes import SCENE_CLASSES, free_scene
    from cnnctl.data.sources import fashion_mnist

    fm = fashion_mnist("")
    pools = {"train": (fm["train"].images[..., 0], fm["train"].labels),
             "test": (fm["test"].images[..., 0], fm["test"].labels)}

    def make(split: str, start: int, n: int) -> DetSplit | None:
        if n == 0:
            return None
        images, labels = pools[split]
        out = DetSplit([], [], [], [])
        for i in range(start, start + n):
            scene = free_scene(images, labels, split, seed, i)
            out.images.append(scene.image[..., None])
            out.boxes.append(np.array([[b[1], b[0], b[3], b[2]] for b in (it.box for it in scene.items)],
                                      np.float32).reshape(-1, 4))
            out.classes.append(np.array([it.label + 1 for it in scene.items], np.int32))
            out.names.append(f"{split}-{i:06d}")
        return out

    n_train, n_val, n_test = (int(c) for c in counts)
    return DetData("scenes:free", list(SCENE_CLASSES),
                   {"train": make("train", 0, n_train), "val": make("train", n_train, n_val),
                    "test": make("test", 0, n_test)})


def boxes_of_instances(instances: np.ndarray) -> np.ndarray:
    """(H, W) instance ids (0 = none) -> (g, 4) tight boxes of ids 1.. in increasing id order."""
    out = []
    for k in np.unique(instances):
        if k == 0:
            continue
        ys, xs = np.nonzero(instances == k)
        out.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return np.array(out, np.float32).reshape(-1, 4)


def nuclei() -> DetData:
    from cnnctl.data import segmentation

    seg = segmentation.nuclei()
    splits = {}
    for name, sp in seg.splits.items():
        if sp is None:
            splits[name] = None
            continue
        boxes = [boxes_of_instances(inst) for inst in sp.instances]
        splits[name] = DetSplit(list(sp.images), boxes, [np.ones(len(b), np.int32) for b in boxes], list(sp.names))
    return DetData("nuclei", ["nucleus"], splits)


# ----------------------------------------------------------------------------- files users have
class _Collector:
    """Gathers the images and boxes of one split, checking each box against its image."""

    def __init__(self, class_names: list[str] | None):
        self.class_names = class_names            # None: classes are learnt in order of appearance
        self.split = DetSplit([], [], [], [], [])
        self.problems: list[tuple[str, str]] = []
        self.empty: list[str] = []

    def class_index(self, label: str, where: str) -> int | None:
        if self.class_names is None:
            raise AssertionError
        if label not in self.class_names:
            self.problems.append((where, f"unknown label {label!r} (known: {', '.join(self.class_names[:12])})"))
            return None
        return self.class_names.index(label) + 1

    def add(self, file: Path, rows: list[tuple[float, float, float, float, int, bool]], where: str) -> None:
        """rows: (x_min, y_min, x_max, y_max, class 1..K, difficult) in pixels."""
        from cnnctl.data.segmentation import read_image

        if not file.is_file():
            self.problems.append((str(file), f"image is missing (listed in {where})"))
            return
        try:
            img = read_image(file)
        except Exception as e:  # noqa: BLE001
            self.problems.append((str(file), f"unreadable image: {e}"))
            return
        h, w = img.shape[:2]
        boxes, classes, difficult = [], [], []
        for x0, y0, x1, y1, cls, diff in rows:
            if x1 <= x0 or y1 <= y0:
                self.problems.append((where, f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] on {file.name} has zero area"))
                continue
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                self.problems.append((where, f"box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] lies outside {file.name} ({w}x{h})"))
                continue
            boxes.append([y0, x0, y1, x1])
            classes.append(cls)
            difficult.append(diff)
        if not rows:
            self.empty.append(file.name)
        self.split.images.append(img)
        self.split.boxes.append(np.array(boxes, np.float32).reshape(-1, 4))
        self.split.classes.append(np.array(classes, np.int32))
        self.split.difficult.append(np.array(difficult, bool))
        self.split.names.append(file.stem)

    def done(self) -> DetSplit | None:
        return self.split if self.split.count else None


def _raise_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        shown = "\n".join(f"  {p}: {why}" for p, why in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise CnnctlError(f"{len(problems)} problem(s) in the detection data:\n{shown}{more}",
                          hint="fix or remove those boxes or files")


def _empty_note(collectors) -> list[str]:
    empty = [n for c in collectors for n in c.empty]
    if not empty:
        return []
    return [f"{len(empty)} image(s) without boxes, kept as background-only images: {', '.join(empty[:8])}"
            + (" ..." if len(empty) > 8 else "")]


def coco_detection(path: Path) -> DetData:
    import json

    try:
        doc = json.loads(path.read_text())
        categories = sorted(doc["categories"], key=lambda c: c["id"])
        images, annotations = doc["images"], doc.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CnnctlError(f"{path} is not a COCO detection file: {e}",
                          hint="give a JSON with images, annotations and categories") from None
    categories = [c for c in categories if c.get("name") not in ("_background_", "__background__")]
    class_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    by_image: dict = {}
    col = _Collector([c["name"] for c in categories])
    for a in annotations:
        by_image.setdefault(a.get("image_id"), []).append(a)
    for info in images:
        candidates = [path.parent / info["file_name"], path.parent / "images" / info["file_name"]]
        file = next((c for c in candidates if c.is_file()), candidates[0])
        rows = []
        for a in by_image.get(info["id"], []):
            where = f"{path.name} annotation {a.get('id')}"
            if a.get("category_id") not in class_of:
                col.problems.append((where, f"unknown category_id {a.get('category_id')}"))
                continue
            try:
                x, y, w, h = (float(v) for v in a["bbox"])
            except (KeyError, TypeError, ValueError):
                col.problems.append((where, "no bbox [x, y, width, height]"))
                continue
            rows.append((x, y, x + w, y + h, class_of[a["category_id"]], bool(a.get("iscrowd", 0))))
        col.add(file, rows, path.name)
    _raise_problems(col.problems)
    return DetData("coco", [c["name"] for c in categories], {"train": col.done(), "val": None, "test": None},
                   _empty_note([col]))


def voc_xml(root: Path, class_names: list[str] | None = None) -> DetData:
    import xml.etree.ElementTree as ET

    from cnnctl.data.segmentation import VOC_CLASSES

    names = class_names or list(VOC_CLASSES[1:])
    listed = {s: (root / "ImageSets" / "Main" / f"{s}.txt") for s in ("train", "val", "test")}
    stems_of = {s: p.read_text().split() for s, p in listed.items() if p.is_file()}
    if not stems_of:
        stems_of = {"train": sorted(p.stem for p in (root / "Annotations").glob("*.xml"))}
    collectors = {}
    for split, stems in stems_of.items():
        col = collectors[split] = _Collector(names)
        for stem in stems:
            stem = stem.split()[0]
            xml = root / "Annotations" / f"{stem}.xml"
            try:
                doc = ET.parse(xml).getroot()
            except (OSError, ET.ParseError) as e:
                col.problems.append((str(xml), f"unreadable annotation: {e}"))
                continue
            rows = []
            for obj in doc.iter("object"):
                cls = col.class_index((obj.findtext("name") or "").strip(), str(xml))
                bb = obj.find("bndbox")
                if cls is None or bb is None:
                    continue
                # VOC coordinates are 1-based and inclusive: pixel columns xmin..xmax -> [xmin - 1, xmax)
                x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                rows.append((x0 - 1, y0 - 1, x1, y1, cls, (obj.findtext("difficult") or "0").strip() == "1"))
            file_name = doc.findtext("filename") or f"{stem}.jpg"
            col.add(root / "JPEGImages" / file_name, rows, str(xml))
    _raise_problems([p for c in collectors.values() for p in c.problems])
    return DetData("voc", names, {s: (collectors[s].done() if s in collectors else None)
                                  for s in ("train", "val", "test")}, _empty_note(collectors.values()))


def csv_boxes(path: Path) -> DetData:
    import csv

    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CnnctlError(f"cannot read {path}: {e}", hint="give a UTF-8 CSV file") from None
    need = ("image", "x_min", "y_min", "x_max", "y_max", "label")
    if not rows or any(k not in rows[0] for k in need):
        raise CnnctlError(f"{path} needs the header {','.join(need)}", hint="one row per box")
    labels = sorted({r["label"].strip() for r in rows if r["label"] and r["label"].strip()})
    cols = {name: _Collector(labels) for name in ("train", "val", "test")}
    problems = cols["train"].problems
    by_image: dict[str, list] = {}
    split_of: dict[str, str] = {}
    for line, r in enumerate(rows, start=2):
        where = f"{path.name} line {line}"
        split = (r.get("split") or "train").strip() or "train"
        if split not in cols:
            problems.append((where, f"split {split!r} is not train, val or test"))
            continue
        if split_of.setdefault(r["image"], split) != split:
            problems.append((where, f"{r['image']} is in split {split!r} here and {split_of[r['image']]!r} above"))
            continue
        by_image.setdefault(r["image"], [])
        if not (r["x_min"] or "").strip():
            continue
        try:
            coords = [float(r[k]) for k in need[1:5]]
        except ValueError:
            problems.append((where, "box coordinates are not numbers"))
            continue
        by_image[r["image"]].append((*coords, cols["train"].class_index(r["label"].strip(), where), False))
    for image, boxes in by_image.items():
        cols[split_of[image]].add(path.parent / image, [b for b in boxes if b[4] is not None], path.name)
    _raise_problems([p for c in cols.values() for p in c.problems])
    return DetData("csv", labels, {name: c.done() for name, c in cols.items()}, _empty_note(cols.values()))


def load_detection(path: str, scene_counts=(), scene_seed: int = 0) -> DetData:
    """``scenes:free``, ``nuclei``, a COCO JSON, a Pascal VOC folder or a CSV of boxes."""
    from cnnctl.data.segmentation import SCENE_COUNTS

    if path.lower() in ("scenes:free", "scenes"):
        return free_scenes(tuple(scene_counts) if scene_counts else SCENE_COUNTS, scene_seed)
    if path.lower() == "nuclei":
        return nuclei()
    if not path:
        raise CnnctlError("detection needs data", hint="--data scenes:free, a COCO JSON, a VOC folder or a CSV")
    p = Path(path)
    if not p.exists():
        raise CnnctlError(f"{path} does not exist", hint="--data scenes:free, a COCO JSON, a VOC folder or a CSV")
    if p.suffix.lower() == ".json":
        return coco_detection(p)
    if p.suffix.lower() == ".csv":
        return csv_boxes(p)
    if (p / "Annotations").is_dir():
        return voc_xml(p)
    raise CnnctlError(f"{path} is not detection data cnnctl reads",
                      hint="give scenes:free, nuclei, a COCO .json, a .csv of boxes, or a VOC folder with Annotations/")
