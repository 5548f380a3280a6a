"""A real caption data set from the openclipart library: drawings with human-written titles.

Debian's ``openclipart-svg`` (public domain) installs ~8,000 SVG drawings under
``/usr/share/openclipart/svg/<category>/``; each file's ``<dc:title>`` (in its
``cc:Work``) is a short description its author wrote ("Chocolate Soft Serve Ice
Cream Cone"). ``build_openclipart`` rasterises every drawing (``rsvg-convert``,
Debian ``librsvg2-bin``) onto a white square and writes ``captions.csv``
(``image,caption,split``) beside the PNGs, readable with ``--data captions.csv``.

The split is caption-disjoint: a title decides its split through a hash of
its tokens, so the same title never lands in two splits (80 / 10 / 10).
Titles are cleaned of what is not a description (``clean_title``): a "Clipart by NAME - "
prefix, file-name digits and underscores, camelCase joins. Titles that are empty, file names
("untitled", "image01"), dated or collection names ("Part of the Flat Icon Collection (Wed Aug 25
2004)", "Lemon SVG theme") are left out, and so is any title that more than ``MAX_SHARED`` drawings
share ("gramastar" names 1,375 different stars): it names a set, not a picture. A title is kept
for at most ``PER_TITLE`` drawings, so no caption dominates the corpus. A third of the titles are
not English ("Uccello bianco e nero", "protection obligatoire tete") or are joined names
("ralfarkinberlinde"): a title is kept only when every word of it is in the system's English word
list (Debian ``wamerican``, ``/usr/share/dict/words``); the build log gives the counts kept.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from cnnctl.errors import CnnctlError

OPENCLIPART = Path("/usr/share/openclipart/svg")
DICTIONARY = Path("/usr/share/dict/words")
_TITLE = re.compile(r"<cc:Work\b.*?<dc:title>\s*([^<]*?)\s*</dc:title>", re.DOTALL)
MAX_SHARED = 20
PER_TITLE = 5
_PREFIX = re.compile(r"^\s*clip\s*art\s+by\s+[^-]+-\s*", re.IGNORECASE)
_SET_NAME = re.compile(r"\b(19|20)\d\d\b|\b(collection|theme|iconset|cliparts?|sibmission|svg)\b|"
                       r"\b(mon|tue|wed|thu|fri|sat|sun)\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)\b",
                       re.IGNORECASE)
_NOT_A_TITLE = re.compile(r"^(untitled|image|drawing|svg|layer|clipart)?[\s_\-]*\d*$|\.(svg|png|jpe?g)$", re.IGNORECASE)


def title_of(svg: Path) -> str | None:
    """The work's ``<dc:title>``, or None when it is missing or only a file name."""
    try:
        text = svg.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = _TITLE.search(text)
    if not m:
        return None
    return clean_title(m.group(1))


def clean_title(raw: str) -> str | None:
    """A drawing's title as a description, or None when it is none (see the module docstring)."""
    import html

    from cnnctl.data.text import tokenize

    title = _PREFIX.sub("", re.sub(r"\s+", " ", html.unescape(html.unescape(raw))).strip())
    if not title or _NOT_A_TITLE.search(title) or _SET_NAME.search(title):
        return None
    title = re.sub(r"([a-z])([A-Z])", r"\1 \2", title)             # BlueMan -> Blue Man
    title = re.sub(r"[_#]+|\d+|(?<=\w)-(?=\w)", " ", title)           # jigsaw_red_10 -> jigsaw red
    title = re.sub(r"\s+", " ", title).strip(" -")
    if not tokenize(title) or _NOT_A_TITLE.search(title):
        return None
    return title


def english_words(path: Path = DICTIONARY) -> set[str]:
    """The lower-cased words of a system word list (one per line; possessives dropped)."""
    if not path.is_file():
        raise CnnctlError(f"{path} does not exist: the English word list that filters the titles is not installed",
                          hint="sudo apt-get install wamerican")
    return {w.strip().lower().removesuffix("'s") for w in path.read_text(encoding="utf-8", errors="replace").splitlines()}


def is_english(title: str, words: set[str]) -> bool:
    from cnnctl.data.text import tokenize

    return all(t in words or t.isdigit() for t in tokenize(title))


def split_of(title: str) -> str:
    """train / val / test from a hash of the title's tokens (80 / 10 / 10): caption-disjoint."""
    from cnnctl.data.text import tokenize

    h = int(hashlib.sha256(" ".join(tokenize(title)).encode()).hexdigest()[:8], 16) % 10
    return "test" if h == 0 else "val" if h == 1 else "train"


def _rasterise(svg: Path, png: Path, size: int) -> bool:
    from PIL import Image

    tmp = png.with_suffix(".tmp.png")
    try:
        subprocess.run(["rsvg-convert", "-w", str(size), "-h", str(size), "--keep-aspect-ratio", "-b", "white",
                        str(svg), "-o", str(tmp)], check=True, capture_output=True, timeout=60)
        with Image.open(tmp) as img:
            img = img.convert("RGB")
            canvas = Image.new("RGB", (size, size), "white")
            canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
            canvas.save(png)
        return True
    except (subprocess.SubprocessError, OSError):
        return False
    finally:
        tmp.unlink(missing_ok=True)


def build_openclipart(out: str | os.PathLike, size: int = 224, source: Path = OPENCLIPART,
                      dictionary: Path = DICTIONARY, log=print) -> Path:
    """Rasterise the library into ``out`` -> the path of ``captions.csv``."""
    if not source.is_dir():
        raise CnnctlError(f"{source} does not exist: the openclipart library is not installed",
                          hint="sudo apt-get install openclipart-svg librsvg2-bin")
    if shutil.which("rsvg-convert") is None:
        raise CnnctlError("rsvg-convert is not installed", hint="sudo apt-get install librsvg2-bin")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    from cnnctl.data.text import tokenize

    english = english_words(dictionary)
    titled = [(svg, title) for svg in sorted(source.rglob("*.svg")) if (title := title_of(svg)) is not None]
    shared = collections.Counter(" ".join(tokenize(t)) for _, t in titled)
    kept, jobs = collections.Counter(), []
    for svg, title in titled:
        key = " ".join(tokenize(title))
        if shared[key] > MAX_SHARED or kept[key] >= PER_TITLE or not is_english(title, english):
            continue
        kept[key] += 1
        rel = svg.relative_to(source).with_suffix(".png")
        jobs.append((svg, out / "images" / str(rel).replace(os.sep, "__"), title))
    log(f"{len(titled)} titled drawings in {source}; {len(jobs)} kept ({len(kept)} distinct titles, titles "
        f"shared by > {MAX_SHARED} drawings or not in {dictionary} dropped, <= {PER_TITLE} drawings each); "
        f"rasterising at {size}x{size}")

    def one(job):
        svg, png, _ = job
        return png.is_file() or _rasterise(svg, png, size)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        done = list(pool.map(one, jobs))
    rows = [(png.relative_to(out).as_posix(), title, split_of(title))
            for (_, png, title), ok in zip(jobs, done) if ok]
    from cnnctl.data.captions import write_built_source

    union = write_built_source(out, "openclipart.csv", rows)
    log(f"{len(rows)} drawings written ({len(jobs) - len(rows)} failed to rasterise) -> {out / 'openclipart.csv'}")
    return union
