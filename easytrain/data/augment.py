"""kohya's pixel augmentations beyond flipping: random crop and colour jitter.

Both change an image's pixels from epoch to epoch, so a run that uses either
cannot cache latents (as in kohya). Randomness comes from the caller's
``random.Random``, seeded per epoch and batch, so a resumed run matches.
"""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
from PIL import Image

from easytrain.data.buckets import Size, crop_box

HUE_SHIFT_LIMIT = 8.0  # OpenCV hue units (0-180), as kohya's AugHelper
COLOR_AUG_CHANCE = 0.33


def crop_fraction(rng: random.Random) -> tuple[float, float]:
    """Where a random crop sits: (x, y), each 0 (left/top edge) to 1 (right/bottom edge)."""
    return rng.random(), rng.random()


def crop_box_at(resized: Size, bucket: Size, fraction: Optional[tuple[float, float]]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the bucket-sized crop; None means the centre crop."""
    if fraction is None:
        return crop_box(resized, bucket)
    left = int(round(fraction[0] * (resized[0] - bucket[0])))
    top = int(round(fraction[1] * (resized[1] - bucket[1])))
    return left, top, left + bucket[0], top + bucket[1]


def color_augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """kohya's color_aug: a third of the time, a small hue shift or a gamma change of the pixel values."""
    if rng.random() > COLOR_AUG_CHANCE:
        return image
    if rng.random() > 0.5:
        shift = rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT) * 256.0 / 180.0  # to PIL's 0-255 hue
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[..., 0] = ((hsv[..., 0].astype(np.float64) + shift) % 256).astype(np.uint8)
        return Image.fromarray(hsv, "HSV").convert("RGB")
    gamma = rng.uniform(0.95, 1.05)
    array = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(array ** gamma, 0, 255).astype(np.uint8), "RGB")
