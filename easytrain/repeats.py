"""Suggested repeats per folder and an epoch count, from the dataset's size.

The guides' rule of thumb: about 1000-3000 steps in all, fewer repeats for more
images (20 images x 10 repeats, 100 x 3, 400 x 1 at 10 epochs and batch 2), and
folders of different sizes balanced so that each concept gets a similar share
of every epoch. The numbers come from the same bucket and step counting as the
plan, so what is suggested is what `check` and the trainer will count.
Light: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from easytrain.data.buckets import BucketSettings, count_epoch
from easytrain.data.scan import DatasetScan, apply_repeats
from easytrain.plan import StepCount, TrainPlan, count_steps

# Pictures per epoch (images x repeats, all folders) that the guides' examples land on:
# 20 images -> 200 (x10), 100 -> ~300 (x3), 400 -> 400 (x1). Grows slowly with the dataset.
PER_EPOCH_AT_20_IMAGES = 200
PER_EPOCH_GROWTH = 0.23  # exponent: 200 * (images / 20) ** 0.23
MAX_REPEATS = 30
DEFAULT_EPOCHS = 10
MAX_EPOCHS = 40
TARGET_STEPS = (1000, 3000)  # inside plan.USUAL_STEPS: the middle of what the guides recommend


@dataclass(frozen=True)
class FolderSuggestion:
    folder: str  # the folder's name on disk, e.g. "5_shapes"
    name: str  # the part after N_
    images: int
    repeats_now: int
    repeats: int

    @property
    def renamed(self) -> str:
        """The folder name with the suggested repeats in front."""
        return f"{self.repeats}_{self.name}" if self.name else str(self.repeats)


@dataclass(frozen=True)
class RepeatsSuggestion:
    folders: tuple[FolderSuggestion, ...]
    epochs: int
    steps_now: StepCount
    steps: StepCount

    @property
    def changes_anything(self) -> bool:
        return any(f.repeats != f.repeats_now for f in self.folders) or self.epochs != self.steps_now.epochs

    @property
    def overrides(self) -> dict[str, int]:
        """The answers' folder_repeats for the suggestion (every folder, so it reads on its own)."""
        return {f.folder: f.repeats for f in self.folders}

    def lines(self) -> list[str]:
        """The table as text, for `check` and the wizard."""
        width = max([len(f.folder) for f in self.folders] + [6])
        lines = [f"{'folder':<{width}}  images  repeats now -> suggested"]
        for f in self.folders:
            mark = "" if f.repeats == f.repeats_now else "  *"
            lines.append(f"{f.folder:<{width}}  {f.images:>6}  {f.repeats_now:>11} -> {f.repeats}{mark}")
        lines.append(f"now:       {self.steps_now.line()}")
        lines.append(f"suggested: {self.steps.line()}")
        return lines


def per_epoch_target(images: int) -> float:
    return PER_EPOCH_AT_20_IMAGES * (max(images, 1) / 20) ** PER_EPOCH_GROWTH


def suggest_repeats(train: DatasetScan, reg: Optional[DatasetScan], settings: BucketSettings, batch_size: int,
                    *, epochs_now: int, length_by: str = "epochs", max_steps: Optional[int] = None,
                    ) -> RepeatsSuggestion:
    """Repeats per training folder and an epoch count that land in TARGET_STEPS.

    ``train`` is the scan as the run would see it (overrides applied); its folders with
    images each get an equal share of the epoch's target.
    """
    subsets = [s for s in train.subsets if s.images]
    if not subsets:
        raise ValueError("no folder with images to suggest repeats for")
    now = _count(train, reg, settings, batch_size, epochs_now, length_by, max_steps)
    share = per_epoch_target(train.total_images) / len(subsets)
    repeats = {s.folder.name: min(MAX_REPEATS, max(1, round(share / len(s.images)))) for s in subsets}
    suggested_scan, suggested_reg = apply_repeats(train, reg, repeats)
    epochs = _epochs_for(suggested_scan, suggested_reg, settings, batch_size)
    steps = _count(suggested_scan, suggested_reg, settings, batch_size, epochs, "epochs", None)
    folders = tuple(FolderSuggestion(s.folder.name, s.name, len(s.images), s.repeats, repeats[s.folder.name])
                    for s in subsets)
    return RepeatsSuggestion(folders, epochs, now, steps)


def suggest_for_plan(plan: TrainPlan) -> Optional[RepeatsSuggestion]:
    """The suggestion for a planned run (None for a dataset TOML: its repeats live in the TOML)."""
    if plan.answers.get("dataset_config"):
        return None
    return suggest_repeats(plan.train_scan, plan.reg_scan, plan.bucket_settings, plan.data.batch_size,
                           epochs_now=plan.epochs, length_by=plan.answers.length_by or "epochs",
                           max_steps=plan.answers.max_steps)


def _epochs_for(train: DatasetScan, reg: Optional[DatasetScan], settings: BucketSettings, batch_size: int) -> int:
    """10 epochs when that lands in the target; else the count nearest to 10 that does (1 to MAX_EPOCHS)."""
    per_epoch = max(1, count_epoch(train, reg, settings, batch_size).steps_per_epoch)
    low, high = TARGET_STEPS
    if per_epoch * DEFAULT_EPOCHS < low:
        return min(MAX_EPOCHS, math.ceil(low / per_epoch))
    if per_epoch * DEFAULT_EPOCHS > high:
        return max(1, high // per_epoch)
    return DEFAULT_EPOCHS


def _count(train, reg, settings, batch_size, epochs, length_by, max_steps) -> StepCount:
    epoch = count_epoch(train, reg, settings, batch_size)
    return count_steps(images=train.total_images, images_per_epoch=epoch.images_per_epoch,
                       steps_per_epoch=epoch.steps_per_epoch, batch_size=batch_size, length_by=length_by,
                       epochs=epochs, max_steps=max_steps)

