"""Human-written captions on photo-like images, from Tux Paint's stamps (Debian ``tuxpaint-stamps-default``).

The package installs 950 stamps under ``/usr/share/tuxpaint/stamps/<category>/...``: a PNG or SVG
picture and a ``.txt`` whose first line is an English sentence a person wrote for it ("A brown hen.",
"A bunch of grapes."). About 390 of the PNGs are photo cut-outs with transparency. ``build_tuxpaint``
writes, under ``out/tuxpaint/``:

* every stamp on a white square (``plain/``), captioned with its sentence;
* each photo cut-out pasted ``composites`` times onto real photos (``photo/``): a random crop of one
  of the scikit-image / scikit-learn sample photos, the cut-out scaled to 45-90% of the side at a
  random place. The sentence stays the cut-out's, so the images look like photos and the captions
  are human-written.

Its rows go to ``out/tuxpaint.csv`` (``image,caption,split``, caption-disjoint split by the
sentence's words, as for openclipart) and ``out/captions.csv`` becomes the union of every source
built into ``out``.

Licence: the stamps are GPL-2. They are read from the installed package and never copied into
cnnctl; a model trained on them says so (see the README's default-captioner model card).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from cnnctl.errors import CnnctlError

TUXPAINT = Path("/usr/share/tuxpaint/stamps")

# The real photos in the scikit-image and scikit-learn wheels used as backgrounds (scenes, objects
# and textures; the microscope, text and synthetic test images are left out).
BACKGROUNDS = {
    "skimage": ["data/astronaut.png", "data/brick.png", "data/camera.png", "data/chelsea.png", "data/coffee.png",
                "data/grass.png", "data/gravel.png", "data/hubble_deep_field.jpg", "data/moon.png",
                "data/motorcycle_left.png", "data/motorcycle_right.png", "data/rocket.jpg"],
    "sklearn": ["datasets/images/china.jpg", "datasets/images/flower.jpg"],
}


def sentence_of(txt: Path) -> str | None:
    """The stamp's English sentence: the first line that is not a translation (``xx.utf8=...``)."""
    try:
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip()
        if line and ".utf8=" not in line:
            return line
    return None


def is_photo_cutout(rgba: np.ndarray) -> bool:
    """A photo cut out along its outline: >= 2% fully transparent pixels and > 1,500 distinct colours
    among the opaque ones (drawings have a few hundred). 384 of the package's PNGs pass."""
    alpha = rgba[..., 3]
    opaque = rgba[alpha == 255][:, :3]
    return bool((alpha == 0).mean() > 0.02 and len(opaque) and len(np.unique(opaque, axis=0)) > 1500)


def background_photos() -> list[Path]:
    """The sample photos of whichever of scikit-image / scikit-learn is installed (not imported)."""
    found = []
    for package, files in BACKGROUNDS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        found += [root / f for f in files if (root / f).is_file()]
    return found


def _stamp_rgba(picture: Path, size: int):
    """The stamp as an RGBA PIL image (SVGs rasterised to fit ``size``), or None when unreadable."""
    from PIL import Image

    try:
        if picture.suffix.lower() == ".svg":
            out = subprocess.run(["rsvg-convert", "-w", str(size), "-h", str(size), "--keep-aspect-ratio",
                                  str(picture)], check=True, capture_output=True, timeout=60).stdout
            import io

            return Image.open(io.BytesIO(out)).convert("RGBA")
        with Image.open(picture) as img:
            return img.convert("RGBA")
    except (subprocess.SubprocessError, OSError):
        return None


def _fit(stamp, side: int):
    """``stamp`` scaled so its longer side is ``side`` pixels."""
    from PIL import Image

    scale = side / max(stamp.size)
    return stamp.resize((max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale))),
                        Image.Resampling.LANCZOS)


def on_white(stamp, size: int):
    """The stamp centred on a white ``size`` square, filling 80% of it."""
    from PIL import Image

    canvas = Image.new("RGB", (size, size), "white")
    s = _fit(stamp, int(0.8 * size))
    canvas.paste(s, ((size - s.width) // 2, (size - s.height) // 2), s)
    return canvas


def on_photo(stamp, photo, size: int, rng: np.random.Generator, mask: bool = False):
    """The stamp pasted onto a random square crop of ``photo`` (40-100% of its shorter side),
    scaled to 45-90% of ``size``, at a random place, mirrored half the time. With ``mask``:
    (image, (size, size) bool mask of the pixels where the pasted stamp's alpha is >= 128)."""
    from PIL import Image, ImageOps

    side = min(photo.size)
    crop = int(side * rng.uniform(0.4, 1.0))
    x0, y0 = (int(rng.integers(0, d - crop + 1)) for d in photo.size)
    canvas = photo.crop((x0, y0, x0 + crop, y0 + crop)).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    s = _fit(stamp, int(size * rng.uniform(0.45, 0.9)))
    if rng.random() < 0.5:
        s = ImageOps.mirror(s)
    place = (int(rng.integers(0, size - s.width + 1)), int(rng.integers(0, size - s.height + 1)))
    canvas.paste(s, place, s)
    if not mask:
        return canvas
    alpha = Image.new("L", (size, size), 0)
    alpha.paste(s.getchannel("A"), place)
    return canvas, np.asarray(alpha) >= 128


def build_tuxpaint(out: str | os.PathLike, size: int = 224, composites: int = 4, seed: int = 0,
                   source: Path = TUXPAINT, backgrounds: list[Path] | None = None, log=print,
                   segmentation: bool = False, detection: bool = False) -> Path:
    """Write the stamps (and their photo composites) into ``out`` -> the path of ``captions.csv``.

    ``segmentation``: also a segmentation data set of the composites in ``out/tuxpaint-segment/``
    (``images/NAME.png``, ``masks/NAME.png``, ``classes.txt``): the cut-out's exact mask from its
    alpha channel, labelled with its category (the stamp's folder: mammals, birds, fruit, ...),
    background 0; split by the caption split into ``train/`` and ``test/`` (``val`` joins train).

    ``detection``: also ``out/tuxpaint-detect.csv`` (``image,x_min,y_min,x_max,y_max,label,split``, the
    ``--data`` CSV of ``cnnctl train`` for detection): each composite with the exact box of its
    cut-out's alpha (>= 128), labelled with its top-level stamp folder (animals, food, ...: few
    images per fine folder), in the caption split."""

    from PIL import Image

    from cnnctl.data.captions import write_built_source
    from cnnctl.data.clipart import split_of

    if not source.is_dir():
        raise CnnctlError(f"{source} does not exist: Tux Paint's stamps are not installed",
                          hint="sudo apt-get install tuxpaint-stamps-default librsvg2-bin")
    photos = background_photos() if backgrounds is None else list(backgrounds)
    if composites and not photos:
        raise CnnctlError("no background photos: neither scikit-image nor scikit-learn is installed",
                          hint="pip install scikit-image scikit-learn (only to build this data), "
                               "--backgrounds DIR of your own photos, or --composites 0")
    if shutil.which("rsvg-convert") is None and any(source.rglob("*.svg")):
        raise CnnctlError("rsvg-convert is not installed (the SVG stamps need it)", hint="sudo apt-get install librsvg2-bin")
    out = Path(out)
    backgrounds = []
    for p in photos:
        try:
            with Image.open(p) as img:
                backgrounds.append(img.convert("RGB"))
        except OSError as e:
            raise CnnctlError(f"cannot read background photo {p}: {e}", hint="give JPEG or PNG photos") from None
    rows, boxes, unreadable, cutouts = [], [], 0, 0
    stamps = sorted(source.rglob("*.txt"))
    categories = sorted({txt.parent.name for txt in stamps})      # the stamps' folders: the mask classes
    for i, txt in enumerate(stamps):
        sentence = sentence_of(txt)
        picture = next((p for p in (txt.with_suffix(".png"), txt.with_suffix(".svg")) if p.is_file()), None)
        if sentence is None or picture is None:
            continue
        stamp = _stamp_rgba(picture, 4 * size)
        if stamp is None:
            unreadable += 1
            continue
        name = str(txt.relative_to(source).with_suffix("")).replace(os.sep, "__")
        split = split_of(sentence)
        plain = out / "tuxpaint" / "plain" / f"{name}.png"
        plain.parent.mkdir(parents=True, exist_ok=True)
        on_white(stamp, size).save(plain)
        rows.append((plain.relative_to(out).as_posix(), sentence, split))
        if picture.suffix == ".png" and composites and is_photo_cutout(np.asarray(stamp)):
            cutouts += 1
            rng = np.random.default_rng([seed, i])                # a function of (seed, stamp)
            for k in range(composites):
                path = out / "tuxpaint" / "photo" / f"{name}-{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                photo = backgrounds[int(rng.integers(len(backgrounds)))]
                image, where = on_photo(stamp, photo, size, rng, mask=True)
                image.save(path)
                rows.append((path.relative_to(out).as_posix(), sentence, split))
                if detection:
                    ys, xs = np.nonzero(where)
                    boxes.append((path.relative_to(out).as_posix(), int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                  int(ys.max()) + 1, txt.relative_to(source).parts[0], split))
                if segmentation:
                    _write_segment_pair(out / "tuxpaint-segment" / ("test" if split == "test" else "train"),
                                        f"{name}-{k}", image, where, 1 + categories.index(txt.parent.name))
    if segmentation:
        (out / "tuxpaint-segment").mkdir(parents=True, exist_ok=True)
        (out / "tuxpaint-segment" / "classes.txt").write_text("\n".join(["background", *categories]) + "\n")
    if detection:
        import csv
        import io

        from cnnctl.files import atomic_write_text

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "x_min", "y_min", "x_max", "y_max", "label", "split"])
        writer.writerows(boxes)
        atomic_write_text(out / "tuxpaint-detect.csv", buf.getvalue())
    union = write_built_source(out, "tuxpaint.csv", rows)
    log(f"{len(rows)} images from {len(rows) - cutouts * composites} stamps ({cutouts} photo cut-outs x "
        f"{composites} photos from {len(backgrounds)} backgrounds; {unreadable} unreadable) -> {out / 'tuxpaint.csv'}")
    return union


def _write_segment_pair(folder: Path, name: str, image, where: np.ndarray, label: int) -> None:
    """``folder/images/NAME.png`` and ``folder/masks/NAME.png`` (uint8: 0 background, ``label`` on the mask)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    image.save(folder / "images" / f"{name}.png")
    Image.fromarray(np.where(where, label, 0).astype(np.uint8)).save(folder / "masks" / f"{name}.png")
