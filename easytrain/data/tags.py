"""Tag counts: the tag summary file and the `ss_tag_frequency` / `ss_dataset_dirs` metadata.

Counted the way kohya's sd-scripts counts `ss_tag_frequency`: per folder
(its base name, e.g. `10_alice`), every comma-separated tag of every image's
caption once (the folder name stands in for a missing caption), stripped and
lower-cased; repeats are NOT multiplied in. Stdlib only.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

from easytrain.data.scan import DatasetScan
from easytrain.fsutil import atomic_write_text

ORDERS = ("by_count", "alphabetical")


def caption_tags(caption: str) -> list[str]:
    return [tag.strip().lower() for tag in caption.split(",") if tag.strip()]


def tag_frequency(scan: DatasetScan, reg_scan: Optional[DatasetScan] = None) -> dict[str, dict[str, int]]:
    """{folder name: {tag: count}}; regularization folders too, as kohya records them."""
    frequency: dict[str, dict[str, int]] = {}
    for source in (scan, reg_scan):
        for subset in (source.subsets if source is not None else ()):
            if not subset.images:
                continue
            counts = frequency.setdefault(subset.folder.name, {})
            for image in subset.images:
                for tag in caption_tags(image.caption):
                    counts[tag] = counts.get(tag, 0) + 1
    return frequency


def dataset_dirs(scan: DatasetScan) -> dict[str, dict[str, int]]:
    """{folder name: {"n_repeats": N, "img_count": M}} for the training folders (kohya leaves reg out)."""
    dirs: dict[str, dict[str, int]] = {}
    for subset in scan.subsets:
        if subset.is_reg or not subset.images:
            continue
        name, number = subset.folder.name, 2
        while name in dirs:  # the same folder name twice (a dataset TOML): kohya numbers them
            name = f"{subset.folder.name} ({number})"
            number += 1
        dirs[name] = {"n_repeats": subset.repeats, "img_count": len(subset.images)}
    return dirs


def tag_counts(scan: DatasetScan) -> Counter:
    """All folders' counts added up."""
    total: Counter = Counter()
    for counts in tag_frequency(scan).values():
        total.update(counts)
    return total


def tag_summary_lines(scan: DatasetScan, order: str = "by_count") -> list[str]:
    if order not in ORDERS:
        raise ValueError(f"tag summary order must be one of {ORDERS}, got {order!r}")
    counts = tag_counts(scan)
    if order == "by_count":
        items = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    else:
        items = sorted(counts.items())
    return [f"{count} {tag}" for tag, count in items]


def write_tag_summary(path, scan: DatasetScan, order: str = "by_count") -> Path:
    """Write `count tag` per line (the `<output>/<name>_tags.txt` file), atomically."""
    path = Path(path)
    lines = tag_summary_lines(scan, order)
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return path
