"""Reading image files robustly with Pillow: the slow, careful path.

Used to scan class folders, to decode small data sets once into memory, by
``cnnctl data inspect`` and by ``cnnctl predict``. Handles what real folders
contain: EXIF-rotated photos, CMYK JPEGs, 16-bit PNGs, palette and alpha
images, animated GIFs (first frame), grey and RGB mixed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Above this many pixels an image is rejected rather than decoded (decompression bombs).
MAX_PIXELS = 178_956_970


class ImageError(Exception):
    """An image file that cannot be used; the message says why."""


@dataclass
class ImageInfo:
    path: str
    format: str
    mode: str
    size: tuple[int, int]  # (width, height)
    frames: int = 1
    exif_rotated: bool = False


_PIL_READY = False


def _pil_image():
    """PIL.Image, with its process-wide bomb limit set once (not per call: threads share it)."""
    global _PIL_READY
    from PIL import Image

    if not _PIL_READY:
        # Our own check below rejects anything over MAX_PIXELS from the header, before a pixel is
        # decoded; Pillow's limit stays as a backstop and its warning (at half its limit) is noise.
        Image.MAX_IMAGE_PIXELS = 2 * MAX_PIXELS
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        _PIL_READY = True
    return Image


def open_image(path: str):
    """Open (header only) ``path`` with Pillow; ImageError for empty, unreadable and too-large files."""
    Image = _pil_image()
    try:
        if os.path.getsize(path) == 0:
            raise ImageError("empty file (0 bytes)")
        img = Image.open(path)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError("permission denied") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"too large: {e} (a decompression bomb?)") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for non-images
        raise ImageError(f"not a readable image ({type(e).__name__}: {e})") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise ImageError(f"too large: {width}x{height} = {width * height:,} pixels is over the "
                         f"{MAX_PIXELS:,}-pixel limit (a decompression bomb?); not decoded")
    return img


def inspect_image(path: str, full: bool = True) -> ImageInfo:
    """Header facts of an image; with ``full`` the pixels are decoded too, to catch truncation."""
    img = open_image(path)
    with img:
        info = ImageInfo(path=path, format=img.format or "?", mode=img.mode, size=img.size,
                         frames=getattr(img, "n_frames", 1))
        try:
            info.exif_rotated = img.getexif().get(0x0112, 1) not in (1, None)
        except Exception:  # noqa: BLE001 - broken EXIF is not fatal
            info.exif_rotated = False
        if full:
            try:
                img.load()
            except Exception as e:  # noqa: BLE001
                raise ImageError(f"corrupt or truncated ({type(e).__name__}: {e})") from None
    return info


def to_array(img, channels: int) -> np.ndarray:
    """A PIL image -> uint8 array ``(h, w, channels)`` with EXIF orientation applied."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale the full range to 8 bits rather than clipping.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency on white: what a viewer shows.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def load_image(path: str, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode ``path`` to uint8 ``(h, w, channels)``, resized to ``size`` = (height, width) if given."""
    from PIL import Image

    img = open_image(path)
    with img:
        try:
            img.seek(0)  # animated GIF/WebP: the first frame
            img.load()
            arr = to_array(img, channels)
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ImageError(f"corrupt or truncated ({type(e).__name__}: {e})") from None
    if size is not None and arr.shape[:2] != tuple(size):
        mode = "L" if channels == 1 else "RGB"
        pil = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
        pil = pil.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(pil, dtype=np.uint8)
        arr = arr[..., None] if arr.ndim == 2 else arr
    return arr


def walk_images(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, str]]]:
    """All image files under ``root`` (sorted), and (path, why) for what was passed over.

    Nothing passed over stops training: hidden files and folders are ignored
    silently; symlinked folders are followed once (a loop is noted, not
    followed forever); files without an image extension (``Thumbs.db``,
    ``desktop.ini``, notes) and broken links are noted as skipped.
    """
    files, skipped = [], []
    seen_dirs: set[str] = set()

    def visit(d: Path):
        real = os.path.realpath(d)
        if real in seen_dirs:
            skipped.append((str(d), "symlink loop or repeated folder: skipped"))
            return
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except PermissionError:
            skipped.append((str(d), "folder not readable (permission denied)"))
            return
        except OSError as e:
            skipped.append((str(d), f"folder not readable ({e.strerror})"))
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                is_dir = e.is_dir()  # follows symlinks
            except OSError:
                skipped.append((str(p), "broken link"))
                continue
            if is_dir:
                visit(p)
            elif p.suffix.lower() in IMAGE_EXTENSIONS:
                if not os.path.exists(p):
                    skipped.append((str(p), "broken link"))
                else:
                    files.append(str(p))
            else:
                skipped.append((str(p), "not an image file: ignored"))

    visit(Path(root))
    return files, skipped
