"""Decoding an image into training pixels: upright RGB, resized, cropped, flipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from easytrain.data.augment import crop_box_at
from easytrain.data.buckets import Size
from easytrain.errors import UserError

WHITE = (255, 255, 255)


def load_rgb(path: Path) -> Image.Image:
    """The picture upright (EXIF applied), as RGB; transparency composited on white."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except UserError:
        raise
    except Exception as exc:  # any decoder failure is the file's fault, not a bug
        raise UserError(
            f"{path}: the image cannot be decoded ({exc}); remove or replace it and start again") from None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits first, a plain convert would clip to white
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def cover_size(size: Size, bucket: Size) -> Size:
    """The smallest resize of `size` (aspect kept) that covers `bucket`."""
    width, height = size
    scale = max(bucket[0] / width, bucket[1] / height)
    return max(bucket[0], int(width * scale + 0.5)), max(bucket[1], int(height * scale + 0.5))


def prepare(image: Image.Image, bucket: Size, resized: Size | None = None,
            crop_at: tuple[float, float] | None = None) -> Image.Image:
    """Resize to cover the bucket, then crop to it: centred, or at ``crop_at`` (see augment.crop_box_at)."""
    if resized is None or resized[0] < bucket[0] or resized[1] < bucket[1]:
        resized = cover_size(image.size, bucket)
    if image.size != resized:
        image = image.resize(resized, Image.Resampling.LANCZOS)
    if resized != bucket:
        image = image.crop(crop_box_at(resized, bucket, crop_at))
    return image


def to_tensor(images: list[Image.Image], flips: list[bool]) -> torch.Tensor:
    """Bx3xHxW float32 in [-1, 1]; flipped ones mirrored left-right."""
    arrays = []
    for image, flip in zip(images, flips):
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[:, ::-1] if flip else array)
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))
    return stacked.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def mask_tensor(masks: list[Image.Image | None], flips: list[bool], bucket: Size) -> torch.Tensor:
    """BxHxW float32 in [0, 1] from greyscale masks (None: all ones); flipped ones mirrored."""
    width, height = bucket
    arrays = []
    for mask, flip in zip(masks, flips):
        array = np.full((height, width), 255, np.uint8) if mask is None else np.asarray(mask, dtype=np.uint8)
        arrays.append(array[:, ::-1] if flip else array)
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).float().div_(255.0)
