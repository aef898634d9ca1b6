"""The held-out images a validation loss is measured on, and the training scan without them.

Either a share of every training folder, picked with its own seed so the same
images are held out every run (kohya's ``validation_split`` and
``validation_seed``), or a separate folder of captioned images. Held-out
images never reach a training batch: the training scan returned here no longer
lists them. Regularization images are never held out. Stdlib only, so `check`
refuses a bad split before anything loads.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Optional

from easytrain.data.images import IMAGE_SUFFIXES, is_image_name
from easytrain.data.scan import DatasetScan, SubsetScan, scan_image_folder, scan_subset
from easytrain.errors import UserError


def hold_out(train_scan: DatasetScan, *, fraction: float, seed: int, folder: Optional[Path] = None,
             caption_extension: str = ".txt") -> tuple[DatasetScan, Optional[DatasetScan]]:
    """(training scan, validation scan or None) from the answers' split or folder.

    A dataset TOML's own ``validation_split`` / ``validation_seed`` win over the
    answers', as its other dataset settings do; a folder replaces any split.
    """
    if folder is not None:
        return train_scan, scan_validation_folder(folder, caption_extension)
    key = "validation_split"
    options = train_scan.config_options
    if "validation_split" in options:
        fraction, key = options["validation_split"], f"{train_scan.root}: validation_split"
        seed = options.get("validation_seed", seed)
    return split_off(train_scan, float(fraction), int(seed), key=key)


def split_off(scan: DatasetScan, fraction: float, seed: int, *,
              key: str = "validation_split") -> tuple[DatasetScan, Optional[DatasetScan]]:
    """(training scan without the held-out images, validation scan); no validation scan for 0.

    Each folder gives round(images x fraction) images, at least one image in
    all; a fraction that would leave a folder without a training image is
    refused, naming ``key`` (the answers key, or the TOML file and key).
    """
    if not 0 <= fraction < 1:
        raise UserError(f"{key}: must be a fraction from 0 up to (not including) 1, got {fraction!r}")
    if fraction == 0:
        return scan, None
    counts = [_held_count(len(subset.images), fraction) for subset in scan.subsets]
    if not any(counts) and scan.subsets:
        largest = max(range(len(scan.subsets)), key=lambda i: len(scan.subsets[i].images))
        counts[largest] = 1
    kept, held = [], []
    for subset, count in zip(scan.subsets, counts):
        if count and count >= len(subset.images):
            raise UserError(
                f"{key}: {fraction:g} holds out all {len(subset.images)} image(s) of {subset.folder}, leaving "
                "none to train on; lower it, or give the held-out images as a validation_folder instead")
        order = sorted(range(len(subset.images)), key=lambda i: str(subset.images[i].path))
        random.Random(f"easytrain/validation/{seed}/{subset.folder.name}").shuffle(order)
        chosen = set(order[:count])
        kept.append(_with_images(subset, [img for i, img in enumerate(subset.images) if i not in chosen]))
        if chosen:
            held.append(_for_validation(_with_images(subset, [subset.images[i] for i in sorted(chosen)])))
    return replace(scan, subsets=tuple(kept)), _validation_scan(scan.root, held)


def scan_validation_folder(path: str | Path, caption_extension: str = ".txt", *,
                           key: str = "validation_folder") -> DatasetScan:
    """The validation images of a folder: directly inside it, or in N_name subfolders like the image folder."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"{key}: folder not found: {root}")
    if any(is_image_name(p.name) and p.is_file() for p in root.iterdir()):
        subset, _, _ = scan_subset(root, name="", repeats=1, is_reg=False, caption_extension=caption_extension)
        subsets = [subset]
    else:
        subsets = list(scan_image_folder(root, caption_extension=caption_extension).subsets)
    found = _validation_scan(root, [_for_validation(s) for s in subsets if s.images])
    if found is None:
        kinds = ", ".join(sorted(s[1:] for s in IMAGE_SUFFIXES))
        raise UserError(f"{key}: {root} has no images ({kinds}); put the held-out images and their captions "
                        "in it, or leave validation_folder empty")
    return found


def _held_count(images: int, fraction: float) -> int:
    return int(images * fraction + 0.5)          # half up: 1 image of 2 at 0.5


def _with_images(subset: SubsetScan, images: list) -> SubsetScan:
    return replace(subset, images=tuple(images), captions=sum(1 for i in images if i.caption_path is not None))


def _for_validation(subset: SubsetScan) -> SubsetScan:
    """Each image once, as it is: no repeats, shuffling, dropout, flips, crops or colour changes."""
    return replace(subset, repeats=1, shuffle_caption=False, flip_aug=False, caption_dropout_rate=0.0,
                   caption_dropout_every_n_epochs=0, caption_tag_dropout_rate=0.0, random_crop=False,
                   color_aug=False)


def _validation_scan(root: Path, subsets: list[SubsetScan]) -> Optional[DatasetScan]:
    if not any(s.images for s in subsets):
        return None
    return DatasetScan(root, tuple(subsets), (), (), ())
