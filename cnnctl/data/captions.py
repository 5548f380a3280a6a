"""Image-caption data sets: the formats users have -> train / val / test lists of (image, captions).

Formats (``detect_format`` picks one from the path):

- ``scenes:grid``: Fashion-MNIST grid scenes (``shared/SCENES.md``; real
  items, synthetic layout and sentences), generated in memory;
- Flickr8k: a folder with ``Flickr8k.token.txt`` (``image#i<TAB>caption``),
  the split files ``Flickr_8k.{train,dev,test}Images.txt`` and the images
  (in the folder itself or a sub-folder);
- COCO captions: ``captions_*.json`` (``images`` + ``annotations``); the
  images lie in a folder beside it named like the file's split
  (``captions_val2014.json`` -> ``val2014/``) or in ``images/``; a sibling
  ``captions_val*.json`` becomes the test split;
- Karpathy's splits: ``dataset_*.json`` (``images[].filepath/filename/split/
  sentences[].raw``; ``restval`` is train);
- CSV: ``image,caption[,split]`` with that header, one caption per row.

Bad data is reported with the file and the line (or JSON position): an empty
caption, a line that is not UTF-8, a caption whose image is missing, an image
with no caption. Training stops on them unless ``data.skip_bad`` is set.
No TensorFlow here.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

SPLITS = ("train", "val", "test")
SCENE_COUNTS = (10_000, 1_000, 1_000)   # train / val / test scenes unless data.scene_counts says otherwise


@dataclass
class CaptionSplit:
    """One split: images (file paths, or uint8 ``(n, h, w, c)`` in memory) and each image's captions."""

    images: list[str] | np.ndarray
    captions: list[list[str]]

    @property
    def count(self) -> int:
        return len(self.captions)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.images, np.ndarray)

    def subset(self, index) -> CaptionSplit:
        index = np.asarray(index, dtype=np.int64)
        images = self.images[index] if self.in_memory else [self.images[i] for i in index]
        return CaptionSplit(images, [self.captions[i] for i in index])


@dataclass
class CaptionData:
    """What a caption source found: its splits (val / test may be None) and the problems in its files."""

    source: str
    splits: dict[str, CaptionSplit | None]
    problems: list[tuple[str, str]] = field(default_factory=list)   # (file:line, why)


# ---------------------------------------------------------------------------- reading text files
def _read_lines(path: Path, problems: list) -> list[tuple[int, str]]:
    """(line number, text) of every line that decodes as UTF-8; the others become problems."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CnnctlError(f"cannot read {path}: {e.strerror or e}") from None
    out = []
    for n, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append((f"{path}:{n}", f"not UTF-8 text (byte {e.start}): line skipped"))
            continue
        out.append((n, text.lstrip("\ufeff") if n == 1 else text))
    return out


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CnnctlError(f"{path} is not UTF-8 text (byte {e.start})",
                          hint="save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise CnnctlError(f"{path}:{e.lineno} is not valid JSON ({e.msg})",
                          hint="check the file is complete (a download may have been cut)") from None
    except OSError as e:
        raise CnnctlError(f"cannot read {path}: {e.strerror or e}") from None


def _collect(entries: list[tuple[str, str, str, str]], problems: list) -> dict[str, CaptionSplit | None]:
    """(split, image path, caption, where) rows -> splits; empty captions and missing images are problems."""
    by_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    exists: dict[str, bool] = {}
    for split, image, caption, where in entries:
        if not caption.strip():
            problems.append((where, f"empty caption for {image}"))
            continue
        if image not in exists:
            exists[image] = os.path.isfile(image)
        if not exists[image]:
            problems.append((where, f"the caption's image {image} does not exist"))
            continue
        by_split[split].setdefault(image, []).append(caption.strip())
    return {s: CaptionSplit(list(d), list(d.values())) if d else None for s, d in by_split.items()}


# ---------------------------------------------------------------------------- formats
def flickr8k(root: Path) -> CaptionData:
    problems: list[tuple[str, str]] = []
    tokens = sorted(root.rglob("*.token.txt"))
    token_file = next((t for t in tokens if "lemma" not in t.name.lower()), tokens[0] if tokens else None)
    if token_file is None:
        raise CnnctlError(f"{root} has no Flickr8k.token.txt", hint="give the folder of the Flickr8k text files")
    # The image folder: the one holding the most .jpg files (Flicker8k_Dataset/, Images/, or root itself).
    folders = [root, *[d for d in root.rglob("*") if d.is_dir()]]
    image_dir = max(folders, key=lambda d: sum(1 for _ in d.glob("*.jpg")))
    captions: dict[str, list[tuple[str, str]]] = {}
    for n, line in _read_lines(token_file, problems):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab:
            problems.append((f"{token_file}:{n}", "no TAB between image#i and the caption"))
            continue
        name = key.split("#")[0].strip()
        captions.setdefault(name, []).append((caption, f"{token_file}:{n}"))
    split_names = {}
    for split, word in (("train", "train"), ("val", "dev"), ("test", "test")):
        files = sorted(token_file.parent.glob(f"*.{word}Images.txt")) or sorted(root.rglob(f"*.{word}Images.txt"))
        if files:
            split_names[split] = [(line.strip(), f"{files[0]}:{n}")
                                  for n, line in _read_lines(files[0], problems) if line.strip()]
    if "train" not in split_names:  # no split files: every captioned image is training data
        split_names["train"] = [(name, str(token_file)) for name in captions]
    entries = []
    for split, names in split_names.items():
        for name, where in names:
            if name not in captions:
                problems.append((where, f"image {name} has no caption in {token_file.name}"))
                continue
            entries += [(split, str(image_dir / name), c, w) for c, w in captions[name]]
    return CaptionData("flickr8k", _collect(entries, problems), problems)


def _coco_file(path: Path, split: str, problems: list) -> list[tuple[str, str, str, str]]:
    obj = _read_json(path)
    if not isinstance(obj, dict) or "annotations" not in obj or "images" not in obj:
        raise CnnctlError(f"{path} is not a COCO captions file (no 'images' and 'annotations')",
                          hint="give captions_*.json from the COCO annotations")
    stem = path.stem.removeprefix("captions_")                     # captions_val2014 -> val2014
    candidates = [path.parent / stem, path.parent.parent / stem, path.parent / "images", path.parent]
    folder = next((c for c in candidates if c.is_dir() and any(c.glob("*.jpg"))), candidates[0])
    files = {}
    for i, im in enumerate(obj["images"]):
        try:
            files[im["id"]] = str(folder / im["file_name"])
        except (KeyError, TypeError):
            problems.append((f"{path}: images[{i}]", "an image entry needs 'id' and 'file_name'"))
    entries, captioned = [], set()
    for i, ann in enumerate(obj["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in files:
            problems.append((where, (f"caption of image id {ann.get('image_id') if isinstance(ann, dict) else '?'} "
                                    "that the file's 'images' does not list")))
            continue
        caption = ann.get("caption")
        entries.append((split, files[ann["image_id"]], caption if isinstance(caption, str) else "", where))
        captioned.add(ann["image_id"])
    for i, im in enumerate(obj["images"]):
        if isinstance(im, dict) and im.get("id") in files and im["id"] not in captioned:
            problems.append((f"{path}: images[{i}]", f"image {im.get('file_name')} has no caption"))
    return entries


def coco(path: Path) -> CaptionData:
    problems: list[tuple[str, str]] = []
    entries = _coco_file(path, "train" if "val" not in path.stem and "test" not in path.stem else "test", problems)
    if entries and entries[0][0] == "train":
        siblings = sorted(p for p in path.parent.glob("captions_val*.json"))
        if siblings:
            entries += _coco_file(siblings[0], "test", problems)
    return CaptionData("coco", _collect(entries, problems), problems)


def karpathy(path: Path) -> CaptionData:
    problems: list[tuple[str, str]] = []
    obj = _read_json(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("images"), list):
        raise CnnctlError(f"{path} is not a Karpathy split file (no 'images' list)",
                          hint="give dataset_coco.json, dataset_flickr8k.json or dataset_flickr30k.json")
    roots = [path.parent, path.parent / "images", path.parent / "Images", path.parent / "Flicker8k_Dataset"]
    entries = []
    for i, im in enumerate(obj["images"]):
        where = f"{path}: images[{i}]"
        try:
            rel = os.path.join(im.get("filepath", ""), im["filename"])
            split = {"restval": "train"}.get(im["split"], im["split"])
        except (KeyError, TypeError, AttributeError):
            problems.append((where, "an image entry needs 'filename' and 'split'"))
            continue
        if split not in SPLITS:
            problems.append((where, f"unknown split {split!r} (train, val, test, restval)"))
            continue
        image = next((str(r / rel) for r in roots if (r / rel).is_file()), str(path.parent / rel))
        sentences = im.get("sentences") or []
        if not sentences:
            problems.append((where, f"image {rel} has no caption"))
        for j, s in enumerate(sentences):
            raw = s.get("raw") if isinstance(s, dict) else None
            if raw is None and isinstance(s, dict) and s.get("tokens"):
                raw = " ".join(s["tokens"])
            entries.append((split, image, raw or "", f"{where}.sentences[{j}]"))
    return CaptionData("karpathy", _collect(entries, problems), problems)


def caption_csv(path: Path) -> CaptionData:
    problems: list[tuple[str, str]] = []
    lines = _read_lines(path, problems)
    if not lines:
        raise CnnctlError(f"CSV {path} is empty", hint="first line: image,caption[,split]")
    numbers = [n for n, _ in lines]
    rows = list(csv.reader([text for _, text in lines]))
    header = [h.strip().lower() for h in rows[0]]
    if "image" not in header or "caption" not in header:
        raise CnnctlError(f"CSV {path} needs columns 'image' and 'caption'; its header is {rows[0]}",
                          hint="first line: image,caption[,split]")
    ii, ic = header.index("image"), header.index("caption")
    isplit = header.index("split") if "split" in header else None
    entries = []
    for n, row in zip(numbers[1:], rows[1:]):
        where = f"{path}:{n}"
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(ii, ic):
            problems.append((where, "the row has missing columns"))
            continue
        split = row[isplit].strip().lower() if isplit is not None and len(row) > isplit else "train"
        split = {"": "train", "dev": "val", "validation": "val", "restval": "train"}.get(split, split)
        if split not in SPLITS:
            problems.append((where, f"unknown split {split!r} (train, val, test)"))
            continue
        rel = row[ii].strip()
        entries.append((split, rel if os.path.isabs(rel) else str(path.parent / rel), row[ic], where))
    return CaptionData("csv", _collect(entries, problems), problems)


def grid_scenes(counts=SCENE_COUNTS, seed: int = 0) -> CaptionData:
    """``counts`` = (train, val, test) grid scenes; val scenes are train-pool scenes after the train ones."""
    from cnnctl.data.scenes import grid_scene
    from cnnctl.data.sources import fashion_mnist

    fm = fashion_mnist("")
    pools = {"train": (fm["train"].images[..., 0], fm["train"].labels),
             "test": (fm["test"].images[..., 0], fm["test"].labels)}
    n_train, n_val, n_test = (int(c) for c in counts)

    def make(split, start, n):
        images, labels = pools[split]
        scenes = [grid_scene(images, labels, split, seed, i) for i in range(start, start + n)]
        return CaptionSplit(np.stack([s.image for s in scenes])[..., None] if scenes else
                            np.zeros((0, 64, 64, 1), np.uint8), [[s.sentence] for s in scenes])

    splits = {"train": make("train", 0, n_train), "val": make("train", n_train, n_val) if n_val else None,
              "test": make("test", 0, n_test) if n_test else None}
    return CaptionData("scenes:grid", splits)


def detect_format(path: str) -> str:
    if path.lower() in ("scenes:grid", "scenes"):
        return "scenes:grid"
    p = Path(path)
    if not path or not p.exists():
        raise CnnctlError(f"caption data {path!r} does not exist" if path else "captioning needs --data",
                          hint="give scenes:grid, a Flickr8k folder, a COCO captions_*.json, "
                               "a Karpathy dataset_*.json or a CSV of image,caption[,split]")
    if p.is_dir():
        return "flickr8k"
    if p.suffix.lower() == ".csv":
        return "csv"
    if p.suffix.lower() == ".json":
        return "karpathy" if p.name.startswith("dataset_") else "coco"
    raise CnnctlError(f"{path} is not a caption data set cnnctl can read",
                      hint="give scenes:grid, a Flickr8k folder, captions_*.json, dataset_*.json or a .csv")


BUILT_SOURCES = ("openclipart.csv", "tuxpaint.csv")     # what `cnnctl data openclipart/tuxpaint` write


def write_built_source(out: Path, name: str, rows: list[tuple[str, str, str]]) -> Path:
    """``out/name`` (``image,caption,split`` rows of one source), then ``out/captions.csv``: the union of
    every source built into ``out`` -> the path of ``captions.csv``."""
    import io

    from cnnctl.files import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "caption", "split"])
    writer.writerows(rows)
    atomic_write_text(out / name, buf.getvalue())
    union = ["image,caption,split"]
    for source in BUILT_SOURCES:
        if (out / source).is_file():
            union += (out / source).read_text(encoding="utf-8").splitlines()[1:]
    atomic_write_text(out / "captions.csv", "".join(r + "\n" for r in union))
    return out / "captions.csv"


def load_captions(path: str, scene_counts=(), scene_seed: int = 0) -> CaptionData:
    """Read the caption data at ``path`` in whatever supported format it is."""
    kind = detect_format(path)
    if kind == "scenes:grid":
        return grid_scenes(tuple(scene_counts) or SCENE_COUNTS, scene_seed)
    reader = {"flickr8k": flickr8k, "csv": caption_csv, "coco": coco, "karpathy": karpathy}[kind]
    data = reader(Path(path))
    if data.splits["train"] is None:
        raise CnnctlError(f"{path} has no usable training captions" +
                          (f"; {problem_report(data.problems)}" if data.problems else ""),
                          hint="check the split column / split files and that the images exist")
    return data


def problem_report(problems: list[tuple[str, str]], shown: int = 10) -> str:
    """'N problem(s) in the caption data:' and the first ``shown`` as ``file:line: why`` lines."""
    lines = "\n".join(f"  {where}: {why}" for where, why in problems[:shown])
    more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{len(problems)} problem(s) in the caption data:\n{lines}{more}"
