"""Loss masks: which part of each image the loss counts (kohya's masked loss).

A mask comes from the image's own alpha channel (alpha_mask: opaque = trained)
or from a mask folder holding a file with the same name (any image extension)
per image, whose red channel is the mask (white = trained), as kohya reads a
conditioning_data_dir. Images without a mask train unmasked. Stdlib + PIL only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from PIL import Image, ImageOps

from easytrain.data.images import is_image_name
from easytrain.errors import UserError


def mask_files(folder: Optional[Path]) -> dict[str, Path]:
    """{image stem: mask path} for the images in ``folder`` (empty when there is no such folder)."""
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and is_image_name(entry.name):
            found.setdefault(entry.name[: entry.name.rfind(".")], Path(entry.path))
    return found


def has_alpha(path: Path) -> bool:
    """Whether the file has an alpha channel or a transparent colour (header only, no decoding)."""
    try:
        with Image.open(path) as image:
            return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    except Exception:  # an unreadable file is reported by the scan, not here
        return False


def load_mask(path: Path, *, from_alpha: bool) -> Image.Image:
    """The mask upright (EXIF applied) as an 8-bit greyscale picture: 255 trains, 0 does not."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if from_alpha:
                if image.mode == "P" or "transparency" in image.info:
                    image = image.convert("RGBA")
                return image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
            return image.convert("RGB").getchannel("R")
    except Exception as exc:  # any decoder failure is the file's fault, not a bug
        raise UserError(f"{path}: the mask cannot be decoded ({exc}); fix or remove it") from None
