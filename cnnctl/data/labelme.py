"""Real photos with masks in standard formats, for evaluation and loader tests: labelme's examples.

The labelme sdist on PyPI (``labelme==5.11.4``; GPL-3 code) carries, in
``examples/instance_segmentation/``, three Pascal VOC 2011 photos (VOC / Flickr terms) annotated
with polygons and exported by labelme's own converters to
- ``data_dataset_voc/``: the Pascal VOC segmentation layout (JPEGImages/, SegmentationClass/ and
  SegmentationObject/ palette PNGs with 255 = void, class_names.txt with VOC's 20 classes);
- ``data_dataset_coco/``: a COCO instances file (polygons) over the same photos.

``fetch_labelme_examples(out)`` fetches the sdist once with pip (the package registry) and copies
those two folders to ``out/voc`` and ``out/coco`` with a NOTICE. Nothing of it ships with cnnctl.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from cnnctl.errors import CnnctlError

PACKAGE, VERSION = "labelme", "5.11.4"
EXAMPLE = f"{PACKAGE}-{VERSION}/examples/instance_segmentation"
PARTS = {"voc": ("data_dataset_voc", ("JPEGImages", "SegmentationClass", "SegmentationObject", "class_names.txt")),
         "coco": ("data_dataset_coco", ("JPEGImages", "annotations.json"))}
NOTICE = f"""Copied by `cnnctl data labelme` from the {PACKAGE} {VERSION} source distribution on PyPI,
{EXAMPLE}/ (labelme: GPL-3, https://github.com/wkentaro/labelme).
The photos are from the PASCAL VOC 2011 data set (Flickr images under the VOC terms of use:
http://host.robots.ox.ac.uk/pascal/VOC/voc2011/); labelme's authors drew the polygons and exported
them with labelme2voc.py and labelme2coco.py. For evaluation and tests, not redistribution.
"""


def fetch_labelme_examples(out: str | Path, log=print) -> dict[str, Path]:
    """-> {"voc": out/voc, "coco": out/coco}, fetched and copied once."""
    from cnnctl.data.registry import distribution

    out = Path(out)
    sdist = distribution(PACKAGE, VERSION, sdist=True, why="(12 MB, once) for its annotated photos", log=log)
    try:
        with tarfile.open(sdist) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, (folder, entries) in PARTS.items():
                for entry in entries:
                    prefix = f"{EXAMPLE}/{folder}/{entry}"
                    wanted = [m for n, m in members.items() if (n == prefix or n.startswith(prefix + "/")) and m.isfile()]
                    if not wanted:
                        raise CnnctlError(f"{sdist} has no {prefix}", hint=f"delete {sdist} and run again")
                    for m in wanted:
                        target = out / name / m.name[len(f"{EXAMPLE}/{folder}/"):]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with tar.extractfile(m) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CnnctlError(f"cannot read {sdist} ({type(e).__name__}: {e})", hint="delete it and run again") from None
    (out / "NOTICE").write_text(NOTICE)
    return {name: out / name for name in PARTS}
