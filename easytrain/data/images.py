"""Image files: which ones count, and their size read from the header only.

`probe_image` never decodes pixels for a healthy file. It reads the header
(size, EXIF orientation) and looks at the end of the file for the marker a
complete file ends with; only a file whose ending looks wrong is decoded once,
to tell a truncated file from one that merely carries extra bytes.
Stdlib + PIL only.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 turn the picture by 90 degrees: width and height swap.
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"


class ImageProblem(Exception):
    """An image that cannot be used; the message says why in a few words."""


def is_image_name(name: str) -> bool:
    if name.startswith("."):
        return False
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_SUFFIXES


def probe_image(path: Path, file_size: int | None = None) -> tuple[int, int]:
    """(width, height) as the picture will be shown (EXIF rotation applied).

    Raises ImageProblem for a file that is empty, not an image, or truncated.
    """
    if file_size is None:
        file_size = path.stat().st_size
    if file_size == 0:
        raise ImageProblem("empty file (0 bytes)")
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fh) as image:
                width, height = image.size
                image_format = image.format
                orientation = _orientation(image)
            ending_ok = _ending_looks_complete(fh, image_format, file_size)
    except UnidentifiedImageError:
        raise ImageProblem("not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageProblem("too many pixels to be a training image") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        raise ImageProblem(f"cannot be read ({exc})") from None
    if width < 1 or height < 1:
        raise ImageProblem(f"has no pixels ({width}x{height})")
    if not ending_ok:
        _confirm_decodes(path)
    if orientation in SWAPPING_ORIENTATIONS:
        return height, width
    return width, height


def _orientation(image: Image.Image) -> int:
    # A PNG's EXIF may sit after the pixel data; reading it would decode the
    # image, so only EXIF already seen in the header counts for PNG.
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not cost the image
        return 1


def _ending_looks_complete(fh, image_format: str | None, file_size: int) -> bool:
    """Cheap check from the file's last bytes (or declared length)."""
    if image_format == "PNG":
        fh.seek(max(0, file_size - len(PNG_END)))
        return fh.read() == PNG_END
    if image_format == "JPEG":
        fh.seek(max(0, file_size - 2))
        return fh.read() == JPEG_END
    if image_format == "WEBP":
        fh.seek(0)
        head = fh.read(8)
        return len(head) == 8 and struct.unpack("<I", head[4:8])[0] + 8 <= file_size
    if image_format == "BMP":
        fh.seek(0)
        head = fh.read(6)
        declared = struct.unpack("<I", head[2:6])[0] if len(head) == 6 else 0
        return declared == 0 or declared <= file_size
    return True


def _confirm_decodes(path: Path) -> None:
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as exc:  # any decoder failure means the file is unusable
        raise ImageProblem(f"truncated or corrupt ({exc})") from None
