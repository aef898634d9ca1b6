"""Looking at one image file: format, size, mode, transparency, animation, hashes.

`inspect_image` runs in worker processes (see image_report), so it takes and
returns plain picklable values and imports only PIL and numpy.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from easytrain.data.images import ImageProblem, probe_image

HASH_SIZE = 8  # 8x8 low frequencies: a 64-bit perceptual hash
HASH_SOURCE = 32  # greyscale picture the DCT runs on
GREYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
PALETTE_MODES = frozenset({"P", "PA"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    size_bytes: int
    problem: Optional[str] = None  # set when the file cannot be used; the rest is then empty
    format: str = ""
    width: int = 0  # as shown (EXIF rotation applied)
    height: int = 0
    mode: str = ""
    frames: int = 1
    transparent: bool = False  # has pixels that are not fully opaque
    sha256: str = ""
    phash: int = 0

    @property
    def readable(self) -> bool:
        return self.problem is None

    @property
    def animated(self) -> bool:
        return self.frames > 1

    @property
    def colour_kind(self) -> str:
        """"greyscale", "cmyk", "palette" or "" for plain RGB(A)."""
        if self.mode in GREYSCALE_MODES:
            return "greyscale"
        if self.mode == "CMYK":
            return "cmyk"
        if self.mode in PALETTE_MODES:
            return "palette"
        return ""


def inspect_image(path) -> ImageInfo:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageInfo(path, 0, f"cannot be read ({exc.strerror or exc})")
    try:
        width, height = probe_image(path, len(data))
    except ImageProblem as problem:
        return ImageInfo(path, len(data), str(problem))
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as image:
            warnings.simplefilter("ignore")
            image_format, mode = image.format or "", image.mode
            frames = getattr(image, "n_frames", 1)
            if image_format == "JPEG":  # no alpha to look at: decode at 1/8 scale or so, much faster
                image.draft("RGB", (HASH_SOURCE * 2, HASH_SOURCE * 2))
            image.load()
            upright = ImageOps.exif_transpose(image)
            transparent = has_transparency(upright)
            phash = perceptual_hash(flatten(upright, (255, 255, 255)))
    except Exception as exc:  # any decoder failure is the file's fault
        return ImageInfo(path, len(data), f"cannot be decoded ({exc})")
    return ImageInfo(path, len(data), None, image_format, width, height, mode, frames, transparent, digest, phash)


def has_transparency(image: Image.Image) -> bool:
    if image.mode in ALPHA_MODES:
        alpha = image.getchannel("A")
    elif "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
    else:
        return False
    return alpha.getextrema()[0] < 255


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """The picture as RGB, see-through parts laid over `background`."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(HASH_SOURCE)
_BITS = (1 << np.arange(HASH_SIZE * HASH_SIZE, dtype=np.uint64)).astype(np.uint64)


def perceptual_hash(image: Image.Image) -> int:
    """pHash: the signs of the low DCT frequencies of a small greyscale copy, against their median.

    Survives resizing and re-compression; different pictures land about 32 bits apart.
    """
    grey = image.convert("L").resize((HASH_SOURCE, HASH_SOURCE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT @ pixels @ _DCT.T)[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) would skew the median
    return int(_BITS[bits].sum())
