"""Real photos with real boxes, for showing a detector on photos it was not trained on.

Three Python distributions on PyPI carry annotated real photos (``../shared/DATA.md``):

- labelme 5.11.4 (sdist; GPL-3 code): three Pascal VOC 2011 photos with 12 objects of VOC's classes
  (person, bottle, bus, car, chair, sofa), as a COCO instances file (``cnnctl.data.labelme``);
- sahi 0.12.8 (sdist; MIT): ``demo/demo_data/terrain2.png``, a 1024x682 photo of five cars on a desert track, with a COCO file
  of its 5 cars;
- imgaug 0.4.0 (wheel; MIT): ``quokka.jpg`` (960x643) with one box labelled "animal" in imgaug's own
  JSON (``quokka_annotations.json``).

``fetch_real_photos(out)`` fetches each once (``cnnctl.data.registry``), copies the photos and their
annotation files under ``out/`` with a NOTICE, and writes ``out/photos.csv``: the detection CSV
(``image,x_min,y_min,x_max,y_max,label,split``, every row ``test``) of all 5 photos and 18 boxes with
their original labels, read from the COCO files and imgaug's JSON. Nothing of it ships with cnnctl.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from pathlib import Path

from cnnctl.errors import CnnctlError

SAHI = ("sahi", "0.12.8", "sahi-0.12.8/demo/demo_data/", ("terrain2.png", "terrain2_coco.json"))
IMGAUG = ("imgaug", "0.4.0", "imgaug/", ("quokka.jpg", "quokka_annotations.json"))

NOTICE = """Fetched by `cnnctl data photos` from source and binary distributions on PyPI; for evaluation
and tests, not redistribution.
- labelme/: labelme 5.11.4 sdist, examples/instance_segmentation (labelme: GPL-3,
  https://github.com/wkentaro/labelme); PASCAL VOC 2011 photos (Flickr images under the VOC terms
  of use), polygons drawn by labelme's authors. See labelme/NOTICE.
- sahi/: sahi 0.12.8 sdist, demo/demo_data/terrain2.png and terrain2_coco.json (MIT,
  https://github.com/obss/sahi).
- imgaug/: imgaug 0.4.0 wheel, imgaug/quokka.jpg and quokka_annotations.json (MIT,
  https://github.com/aleju/imgaug).
photos.csv: all their boxes in cnnctl's detection CSV, with the original labels.
"""


def fetch_real_photos(out: str | Path, log=print) -> Path:
    """-> ``out/photos.csv`` (see the module docstring), fetching what is not in the cache."""
    from cnnctl.data.labelme import fetch_labelme_examples
    from cnnctl.data.registry import distribution
    from cnnctl.files import atomic_write_text

    out = Path(out)
    coco = fetch_labelme_examples(out / "labelme", log=log)["coco"]
    rows = _coco_rows(coco / "annotations.json", "labelme/coco")
    sahi = distribution(SAHI[0], SAHI[1], sdist=True, why="(5 MB, once) for its annotated terrain photo", log=log)
    _copy_members(sahi, SAHI[2], SAHI[3], out / "sahi")
    rows += _coco_rows(out / "sahi" / "terrain2_coco.json", "sahi")
    imgaug = distribution(IMGAUG[0], IMGAUG[1], sdist=False, why="(1 MB, once) for its annotated photo", log=log)
    _copy_members(imgaug, IMGAUG[2], IMGAUG[3], out / "imgaug")
    rows += _imgaug_rows(out / "imgaug" / "quokka_annotations.json", "imgaug/quokka.jpg")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "x_min", "y_min", "x_max", "y_max", "label", "split"])
    writer.writerows(rows)
    atomic_write_text(out / "photos.csv", buf.getvalue())
    (out / "NOTICE").write_text(NOTICE)
    return out / "photos.csv"


def _number(v: float) -> str:
    return f"{float(v):g}"


def _coco_rows(path: Path, folder: str) -> list[list[str]]:
    """COCO ``bbox`` = [x, y, width, height] in pixels -> CSV rows (x_min, y_min, x_max, y_max)."""
    try:
        doc = json.loads(path.read_text())
        files = {im["id"]: im["file_name"] for im in doc["images"]}
        names = {c["id"]: c["name"] for c in doc["categories"]}
        return [[f"{folder}/{files[a['image_id']]}", _number(a["bbox"][0]), _number(a["bbox"][1]),
                 _number(a["bbox"][0] + a["bbox"][2]), _number(a["bbox"][1] + a["bbox"][3]),
                 names[a["category_id"]], "test"] for a in doc["annotations"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise CnnctlError(f"cannot read the COCO boxes in {path} ({type(e).__name__}: {e})",
                          hint="delete the folder and run again") from None


def _imgaug_rows(path: Path, image: str) -> list[list[str]]:
    """imgaug's ``bounding_boxes`` [{"x1", "y1", "x2", "y2", "label"}] -> CSV rows."""
    try:
        boxes = json.loads(path.read_text())["bounding_boxes"]
        return [[image, _number(b["x1"]), _number(b["y1"]), _number(b["x2"]), _number(b["y2"]), b["label"], "test"]
                for b in boxes]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CnnctlError(f"cannot read the boxes in {path} ({type(e).__name__}: {e})",
                          hint="delete the folder and run again") from None


def _copy_members(archive: Path, prefix: str, names: tuple[str, ...], into: Path) -> None:
    """Copy ``prefix + name`` for each name from a .tar.gz or a wheel (zip) into ``into/name``."""
    into.mkdir(parents=True, exist_ok=True)
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                for name in names:
                    (into / name).write_bytes(z.read(prefix + name))
        else:
            with tarfile.open(archive) as tar:
                for name in names:
                    member = tar.extractfile(prefix + name)
                    if member is None:
                        raise KeyError(prefix + name)
                    (into / name).write_bytes(member.read())
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CnnctlError(f"cannot read {prefix}... from {archive} ({type(e).__name__}: {e})",
                          hint=f"delete {archive} and run again") from None
