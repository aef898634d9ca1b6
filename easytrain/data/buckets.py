"""Aspect-ratio buckets, made and filled the way kohya's sd-scripts does it.

Stdlib only. `count_epoch` is THE count of one epoch: the plan shows it and
the dataset's batches follow it, so the two can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from easytrain.data.regularization import balanced_reg_repeats
from easytrain.errors import UserError

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketSettings:
    resolution: Size = (512, 512)  # (width, height); the target area is width x height
    enable_bucket: bool = True
    min_reso: int = 256
    max_reso: int = 1024
    step: int = 64
    no_upscale: bool = False

    def __post_init__(self):
        resolution = self.resolution
        if isinstance(resolution, int):
            resolution = (resolution, resolution)
        object.__setattr__(self, "resolution", (int(resolution[0]), int(resolution[1])))
        problems = []
        if min(self.resolution) < 1:
            problems.append(f"resolution: must be positive, got {self.resolution}")
        if self.step < 1:
            problems.append(f"bucket_reso_steps: must be at least 1, got {self.step}")
        elif self.enable_bucket and self.step > min(self.resolution):
            problems.append(f"bucket_reso_steps: must be at most the resolution {min(self.resolution)}, "
                            f"got {self.step}")
        if self.enable_bucket and not self.no_upscale:
            if self.min_reso < 1 or self.min_reso > self.max_reso:
                problems.append(
                    f"min_bucket_reso/max_bucket_reso: need 1 <= min <= max, got {self.min_reso} and {self.max_reso}")
            if self.max_reso < max(self.resolution):
                problems.append(
                    f"max_bucket_reso: must be at least the resolution {max(self.resolution)}, got {self.max_reso}")
        if problems:
            raise UserError("bucket settings are not usable", problems=problems)


@dataclass(frozen=True)
class EpochCount:
    images_per_epoch: int
    steps_per_epoch: int
    bucket_counts: dict  # (width, height) -> images in that bucket per epoch, repeats included


def make_buckets(settings: BucketSettings) -> list[Size]:
    """The predefined bucket sizes (kohya's make_bucket_resolutions), sorted.

    With bucketing off this is the single training resolution. With no-upscale
    the buckets come from each image's own size instead (see assign_bucket) and
    this list is only what the same settings would give without it.
    """
    if not settings.enable_bucket:
        return [settings.resolution]
    width, height = settings.resolution
    area = width * height
    step = settings.step
    square = int(math.sqrt(area) // step) * step
    sizes = {(square, square)}
    side = settings.min_reso
    while side <= settings.max_reso:
        other = min(settings.max_reso, int((area // side) // step) * step)
        if other >= settings.min_reso:
            sizes.add((side, other))
            sizes.add((other, side))
        side += step
    return sorted(sizes)


def assign_bucket(width: int, height: int, settings: BucketSettings,
                  buckets: Sequence[Size]) -> tuple[Size, Size]:
    """((bucket_w, bucket_h), (resized_w, resized_h)) for an image of this size.

    The image is resized to `resized` (which covers the bucket) and centre
    cropped to the bucket.
    """
    aspect = width / height
    if settings.enable_bucket and settings.no_upscale:
        return _no_upscale_bucket(width, height, settings)
    if (width, height) in buckets:
        bucket = (width, height)
    else:
        bucket = min(buckets, key=lambda b: abs(b[0] / b[1] - aspect))  # first of equals, as numpy's argmin
    if aspect > bucket[0] / bucket[1]:
        scale = bucket[1] / height  # wider than the bucket: match the height
    else:
        scale = bucket[0] / width
    resized = (int(width * scale + 0.5), int(height * scale + 0.5))
    return bucket, (max(resized[0], bucket[0]), max(resized[1], bucket[1]))


def _no_upscale_bucket(width: int, height: int, settings: BucketSettings) -> tuple[Size, Size]:
    """kohya's no-upscale rule: shrink only when above the target area, then
    the bucket is the size rounded down to the step (cropping, never padding)."""
    step = settings.step
    area = settings.resolution[0] * settings.resolution[1]
    aspect = width / height
    if width * height > area:
        resized_w = math.sqrt(area * aspect)
        resized_h = area / resized_w
        by_w = _round_to_step(resized_w, step)
        h_for_w = _round_to_step(by_w / aspect, step)
        by_h = _round_to_step(resized_h, step)
        w_for_h = _round_to_step(by_h * aspect, step)
        error_w = abs(by_w / h_for_w - aspect) if h_for_w else math.inf
        error_h = abs(w_for_h / by_h - aspect) if by_h else math.inf
        if error_w < error_h:
            resized = (by_w, int(by_w / aspect + 0.5))
        else:
            resized = (int(by_h * aspect + 0.5), by_h)
    else:
        resized = (width, height)
    # An image smaller than one step would give an empty bucket; one step is the floor.
    bucket = (max(step, resized[0] - resized[0] % step), max(step, resized[1] - resized[1] % step))
    return bucket, (max(resized[0], bucket[0]), max(resized[1], bucket[1]))


def _round_to_step(value: float, step: int) -> int:
    value = int(value + 0.5)
    return value - value % step


def crop_box(resized: Size, bucket: Size) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centre crop from the resized image."""
    left = (resized[0] - bucket[0]) // 2
    top = (resized[1] - bucket[1]) // 2
    return left, top, left + bucket[0], top + bucket[1]


def steps_per_epoch(bucket_counts: Iterable[int] | dict, batch_size: int) -> int:
    """Each bucket contributes ceil(count / batch): a partial batch is a step too."""
    counts = bucket_counts.values() if isinstance(bucket_counts, dict) else bucket_counts
    batch_size = max(1, int(batch_size))
    return sum(-(-int(count) // batch_size) for count in counts if count > 0)


def epoch_repeats(train_scan, reg_scan) -> list[tuple[object, int]]:
    """Every image of one epoch with how often it appears, training images first.

    Regularization images are cycled until they match the training count, as
    kohya balances them (see regularization.balanced_reg_repeats).
    """
    items = [(image, subset.repeats) for subset in train_scan.subsets for image in subset.images]
    if reg_scan is not None:
        train_total = sum(repeats for _, repeats in items)
        reg_items = [(image, subset.repeats) for subset in reg_scan.subsets for image in subset.images]
        repeats = balanced_reg_repeats(train_total, [r for _, r in reg_items])
        items += [(image, r) for (image, _), r in zip(reg_items, repeats) if r > 0]
    return items


def count_epoch(train_scan, reg_scan: Optional[object], settings: BucketSettings, batch_size: int) -> EpochCount:
    """Images, steps and bucket fill of one epoch (the plan and the dataset share this)."""
    buckets = make_buckets(settings)
    counts: dict[Size, int] = {}
    for image, repeats in epoch_repeats(train_scan, reg_scan):
        bucket, _ = assign_bucket(image.width, image.height, settings, buckets)
        counts[bucket] = counts.get(bucket, 0) + repeats
    ordered = dict(sorted(counts.items()))
    return EpochCount(sum(ordered.values()), steps_per_epoch(ordered, batch_size), ordered)
