"""The dataset's part of kohya's LoRA metadata: ss_bucket_info, ss_reg_dataset_dirs, ss_datasets.

Values are plain dicts and lists in the shapes sd-scripts writes (train_network.py,
train_util.py); the metadata builder turns them into JSON. Stdlib only.
"""

from __future__ import annotations

from typing import Optional

from easytrain.data.buckets import BucketSettings, assign_bucket, count_epoch, epoch_repeats, make_buckets
from easytrain.data.scan import DatasetScan
from easytrain.data.tags import tag_frequency


def bucket_info(train_scan: DatasetScan, reg_scan: Optional[DatasetScan], settings: BucketSettings) -> Optional[dict]:
    """{"buckets": {index: {"resolution": [w, h], "count": images per epoch}}, "mean_img_ar_error": x}.

    As kohya: only with bucketing on; counts include repeats and regularization
    images; the index is the bucket's place among all bucket sizes (sorted); the
    error is the mean |bucket aspect - image aspect| over the images, without repeats.
    """
    if not settings.enable_bucket:
        return None
    counts = count_epoch(train_scan, reg_scan, settings, 1).bucket_counts
    sizes = sorted(set(make_buckets(settings)) | set(counts))
    buckets = {index: {"resolution": list(size), "count": counts[size]}
               for index, size in enumerate(sizes) if counts.get(size)}
    predefined = make_buckets(settings)
    errors = []
    for image, _ in epoch_repeats(train_scan, reg_scan):
        bucket, _ = assign_bucket(image.width, image.height, settings, predefined)
        errors.append(abs(bucket[0] / bucket[1] - image.width / image.height))
    return {"buckets": buckets, "mean_img_ar_error": sum(errors) / len(errors) if errors else 0}


def reg_dataset_dirs(reg_scan: Optional[DatasetScan]) -> dict[str, dict[str, int]]:
    """{folder name: {"n_repeats": N, "img_count": M}} for the regularization folders."""
    if reg_scan is None:
        return {}
    return {s.folder.name: {"n_repeats": s.repeats, "img_count": len(s.images)} for s in reg_scan.subsets if s.images}


def datasets_entry(train_scan: DatasetScan, reg_scan: Optional[DatasetScan], settings: BucketSettings, *,
                   batch_size: int, subset_defaults: dict) -> list[dict]:
    """ss_datasets: kohya writes it for runs from a dataset config (one entry; easytrain trains one dataset).

    ``subset_defaults`` are the run's values for what a subset did not set itself
    (shuffle_caption, keep_tokens, keep_tokens_separator, flip_aug, color_aug, random_crop).
    """
    subsets = []
    for scan in (train_scan, reg_scan):
        for subset in (scan.subsets if scan is not None else ()):
            def own(name):
                value = getattr(subset, name)
                return subset_defaults.get(name) if value is None else value

            subsets.append({
                "img_count": len(subset.images), "num_repeats": subset.repeats,
                "color_aug": bool(own("color_aug")), "flip_aug": bool(own("flip_aug")),
                "random_crop": bool(own("random_crop")), "shuffle_caption": bool(own("shuffle_caption")),
                "keep_tokens": own("keep_tokens"), "keep_tokens_separator": own("keep_tokens_separator") or "",
                "image_dir": subset.folder.name, "class_tokens": subset.name or None, "is_reg": subset.is_reg,
            })
    epoch = count_epoch(train_scan, reg_scan, settings, batch_size)
    return [{
        "is_dreambooth": True,
        "batch_size_per_device": batch_size,
        "num_train_images": train_scan.images_per_epoch,
        "num_reg_images": epoch.images_per_epoch - train_scan.images_per_epoch,
        "resolution": list(settings.resolution),
        "enable_bucket": settings.enable_bucket,
        "min_bucket_reso": settings.min_reso,
        "max_bucket_reso": settings.max_reso,
        "tag_frequency": tag_frequency(train_scan, reg_scan),
        "bucket_info": bucket_info(train_scan, reg_scan, settings),
        "subsets": subsets,
    }]
