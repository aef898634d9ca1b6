"""The dataset part of `easytrain check`, as plain lines (stdlib + PIL only)."""

from __future__ import annotations

from typing import Optional

from easytrain.data.buckets import BucketSettings, assign_bucket, count_epoch, epoch_repeats, make_buckets
from easytrain.data.scan import MISSING_CAPTION_PHRASE, UNREADABLE_PHRASE, DatasetScan
from easytrain.wording import plural

LISTED = 5


def dataset_report_lines(train_scan: DatasetScan, reg_scan: Optional[DatasetScan], settings: BucketSettings,
                         batch_size: int) -> list[str]:
    lines: list[str] = []
    for label, scan in (("training", train_scan), ("regularization", reg_scan)):
        if scan is None:
            continue
        lines.append(f"{label} images: {scan.root}")
        for subset in scan.subsets:
            lines.append(
                f"  {subset.folder.name}: {plural(len(subset.images), 'image')} x {plural(subset.repeats, 'repeat')}"
                f" = {subset.images_per_epoch}, {subset.captions} with captions")

    masked = [(label, scan) for label, scan in (("training", train_scan), ("regularization", reg_scan))
              if scan is not None and scan.masked_images]
    for label, scan in masked:
        lines.append(f"loss masks: {scan.masked_images} of {scan.total_images} {label} images have one "
                     "(the others train unmasked)")
        lines.extend(f"  {subset.folder.name}: {subset.masks} of {len(subset.images)}"
                     for subset in scan.subsets if subset.images)

    epoch = count_epoch(train_scan, reg_scan, settings, batch_size)
    line = (f"per epoch: {plural(epoch.images_per_epoch, 'image')} in {plural(epoch.steps_per_epoch, 'step')} "
            f"of batch {batch_size}")
    if reg_scan is not None:
        used = epoch.images_per_epoch - train_scan.images_per_epoch
        line += f" ({train_scan.images_per_epoch} training + {used} regularization, balanced)"
    lines.append(line)

    if not settings.enable_bucket:
        lines.append(f"bucketing off: every image is resized and centre cropped to "
                     f"{settings.resolution[0]}x{settings.resolution[1]}")
    lines.append(f"buckets ({len(epoch.bucket_counts)} used):")
    for (width, height), count in epoch.bucket_counts.items():
        lines.append(f"  {width}x{height}: {plural(count, 'image')} per epoch")

    unreadable = [u for scan in (train_scan, reg_scan) if scan is not None for u in scan.unreadable]
    if unreadable:
        lines.append(f"left out ({plural(len(unreadable), 'image')} that cannot be read):")
        lines.extend(f"  {u}" for u in unreadable)

    small = _smaller_than_training(train_scan, reg_scan, settings)
    if small:
        how = ("kept at their own size (no-upscale), in smaller buckets" if settings.no_upscale and
               settings.enable_bucket else "upscaled to fit their bucket, which softens them")
        lines.append(f"smaller than the training resolution ({plural(len(small), 'image')}, {how}):")
        lines.extend(f"  {path} ({w}x{h})" for path, w, h in small[:LISTED])
        if len(small) > LISTED:
            lines.append(f"  and {len(small) - LISTED} more")

    missing = [image.path for scan in (train_scan, reg_scan) if scan is not None
               for subset in scan.subsets for image in subset.images if image.caption_path is None]
    if missing:
        lines.append(f"missing captions ({plural(len(missing), 'image')} use{'s' if len(missing) == 1 else ''} "
                     "their folder's name instead):")
        lines.extend(f"  {path}" for path in missing[:LISTED])
        if len(missing) > LISTED:
            lines.append(f"  and {len(missing) - LISTED} more")

    problems = [p for scan in (train_scan, reg_scan) if scan is not None for p in scan.problems]
    other_warnings = [w for scan in (train_scan, reg_scan) if scan is not None for w in scan.warnings
                      if UNREADABLE_PHRASE not in w and MISSING_CAPTION_PHRASE not in w]
    if problems or other_warnings:
        lines.append("problems:")
        lines.extend(f"  {p}" for p in problems + other_warnings)
    return lines


def _smaller_than_training(train_scan, reg_scan, settings: BucketSettings) -> list[tuple]:
    """Images that are enlarged to fill their bucket (or would be, without no-upscale)."""
    plain = BucketSettings(settings.resolution, settings.enable_bucket, settings.min_reso, settings.max_reso,
                           settings.step, no_upscale=False) if settings.no_upscale else settings
    buckets = make_buckets(plain)
    small = []
    for image, _ in epoch_repeats(train_scan, reg_scan):
        _, resized = assign_bucket(image.width, image.height, plain, buckets)
        if resized[0] > image.width or resized[1] > image.height:
            small.append((image.path, image.width, image.height))
    return small
