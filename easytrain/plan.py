"""TrainPlan: every number the run needs, computed once from the answers.

Nothing after the plan changes configuration: the trainer, the progress view,
`check` and the wizard's steps preview all read the same plan. Light imports
only (the dataset scan reads file headers, not pixels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from easytrain.answers import Answers
from easytrain.data.buckets import BucketSettings, count_epoch
from easytrain.data.scan import DatasetScan, apply_repeats, scan_image_folder
from easytrain.errors import UserError
from easytrain.wording import plural

USUAL_STEPS = (1000, 3500)
SURELY_TOO_MANY = 10000


@dataclass(frozen=True)
class StepCount:
    """The steps arithmetic shown in the wizard's status line and in `check`."""
    images: int
    images_per_epoch: int
    batch_size: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    by_steps: bool = False         # the length is a number of steps: the run stops inside an epoch

    def line(self) -> str:
        per_epoch = (f"{plural(self.images, 'image')} x repeats -> {self.images_per_epoch} per epoch"
                     f" / batch {self.batch_size} = {plural(self.steps_per_epoch, 'step')}")
        if self.by_steps:
            into_last = self.total_steps - (self.epochs - 1) * self.steps_per_epoch
            return (f"{per_epoch} per epoch; max {plural(self.total_steps, 'step')}, stops in epoch "
                    f"{self.epochs} of {self.epochs} after {into_last} of its {self.steps_per_epoch}")
        return f"{per_epoch} x {plural(self.epochs, 'epoch')} = {plural(self.total_steps, 'step')}"


def steps_warning(total_steps: int) -> Optional[str]:
    """A warning when the total is far from what LoRAs usually need (None when it looks right)."""
    low, high = USUAL_STEPS
    if total_steps > SURELY_TOO_MANY:
        return (f"{total_steps} steps is almost surely a mistake (most LoRAs need {low}-{high}); "
                "lower the repeats in the folder names, the epochs, or raise the batch size")
    if total_steps > high * 1.5:
        return (f"{total_steps} steps is well above the usual {low}-{high}; fewer repeats or epochs "
                "would train faster and overcook less")
    if total_steps < low / 2:
        return (f"{total_steps} steps is well below the usual {low}-{high}; raise the repeats in the "
                "folder names or the epochs")
    return None


def count_steps(*, images: int, images_per_epoch: int, steps_per_epoch: int, batch_size: int,
                length_by: str, epochs: Optional[int], max_steps: Optional[int]) -> StepCount:
    """Epochs and total steps from one epoch's count, for either way of setting the length."""
    if length_by == "steps" and max_steps:
        epochs_needed = max(1, math.ceil(max_steps / max(1, steps_per_epoch)))
        return StepCount(images, images_per_epoch, batch_size, steps_per_epoch, epochs_needed, max_steps, True)
    epochs = epochs or 1
    return StepCount(images, images_per_epoch, batch_size, steps_per_epoch, epochs, steps_per_epoch * epochs)


def bucket_settings(answers: Answers) -> BucketSettings:
    width = answers.resolution or 512
    height = answers.height or width
    return BucketSettings(
        resolution=(width, height),
        enable_bucket=bool(answers.get("enable_bucket", True)),
        min_reso=answers.get("min_bucket_reso", 256),
        max_reso=answers.get("max_bucket_reso", 1024),
        step=answers.get("bucket_reso_steps", 64),
        no_upscale=bool(answers.bucket_no_upscale),
    )


def scan_dataset(answers: Answers) -> tuple[DatasetScan, Optional[DatasetScan]]:
    """The training and regularization scans, from the folders or the dataset TOML."""
    ext = answers.get("caption_extension", ".txt")
    toml_path = answers.path("dataset_config")
    if toml_path is not None:
        from easytrain.data.toml_config import scan_dataset_toml

        return apply_repeats(*scan_dataset_toml(toml_path, default_caption_extension=ext),
                             answers.get("folder_repeats"))
    train = scan_image_folder(answers.path("image_folder"), caption_extension=ext)
    reg = None
    if answers.use_regularization and answers.reg_image_folder:
        reg = scan_image_folder(answers.path("reg_image_folder"), caption_extension=ext, is_reg=True)
    return apply_repeats(train, reg, answers.get("folder_repeats"))


@dataclass(frozen=True)
class TrainPlan:
    answers: Answers
    base_model: str
    output_dir: Path
    output_name: str
    train_scan: DatasetScan
    reg_scan: Optional[DatasetScan]
    bucket_settings: BucketSettings
    bucket_counts: dict
    images_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    clip_skip: int
    mixed_precision: str
    save_precision: str
    train_unet: bool
    train_text_encoder: bool
    batch_size: int
    unet_lr: float
    text_encoder_lr: float
    resolution: tuple[int, int]
    sample_prompts: Optional[Path]
    network_weights: Optional[Path]
    output_files: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def steps(self) -> StepCount:
        return StepCount(self.train_scan.total_images, self.images_per_epoch, self.batch_size,
                         self.steps_per_epoch, self.epochs, self.total_steps, self.answers.length_by == "steps")

    @classmethod
    def from_answers(cls, answers: Answers) -> "TrainPlan":
        train_scan, reg_scan = scan_dataset(answers)
        if train_scan.total_images == 0:
            raise UserError(
                f"{train_scan.root}: no usable training images",
                problems=list(train_scan.problems) or ["put images in N_name folders (e.g. 10_mychar)"],
            )
        settings = bucket_settings(answers)
        batch = answers.batch_size
        toml_options = getattr(train_scan, "config_options", None) or {}
        if toml_options:  # a dataset TOML's own resolution, bucket and batch settings win
            from easytrain.data.toml_config import bucket_settings_from_config

            settings = bucket_settings_from_config(settings, toml_options)
            batch = toml_options.get("batch_size", batch)
        epoch = count_epoch(train_scan, reg_scan, settings, batch)
        count = count_steps(images=train_scan.total_images, images_per_epoch=epoch.images_per_epoch,
                            steps_per_epoch=epoch.steps_per_epoch, batch_size=batch,
                            length_by=answers.length_by, epochs=answers.epochs, max_steps=answers.max_steps)
        warmup_ratio = answers.warmup_ratio if answers.scheduler != "constant" else 0.0
        warmup_steps = int(count.total_steps * (warmup_ratio or 0.0))

        output_dir = answers.path("output_folder") or (Path.cwd() / "output")
        name = answers.output_name
        output_files = _planned_files(output_dir, name, count.epochs, answers.save_every_n_epochs or 0)

        parts = answers.train_parts or "both"
        train_unet = parts in ("both", "unet_only")
        train_te = parts in ("both", "text_encoder_only") and (answers.text_encoder_lr or 0) > 0
        warnings = list(answers.warnings) + list(train_scan.warnings)
        if reg_scan is not None:
            warnings += list(reg_scan.warnings)
        if parts == "both" and not train_te:
            warnings.append("text encoder learning rate is 0: training the UNet only")
        if parts == "text_encoder_only" and not train_te:
            raise UserError("train_parts is text_encoder_only but text_encoder_lr is 0: nothing would train")
        if answers.cache_latents != "off" and answers.flip_aug:
            pass  # both orientations are cached; nothing to warn about
        warning = steps_warning(count.total_steps)
        if warning:
            warnings.append(warning)

        base = answers.base_model
        base_model = base if base.startswith("builtin:") else str(answers.path("base_model"))
        return cls(
            answers=answers,
            base_model=base_model,
            output_dir=output_dir,
            output_name=name,
            train_scan=train_scan,
            reg_scan=reg_scan,
            bucket_settings=settings,
            bucket_counts=dict(epoch.bucket_counts),
            images_per_epoch=epoch.images_per_epoch,
            steps_per_epoch=epoch.steps_per_epoch,
            epochs=count.epochs,
            total_steps=count.total_steps,
            warmup_steps=warmup_steps,
            clip_skip=answers.get("clip_skip", 1 if answers.realistic_model else 2),
            mixed_precision=answers.mixed_precision,
            save_precision=answers.save_precision,
            train_unet=train_unet,
            train_text_encoder=train_te,
            batch_size=batch,
            unet_lr=float(answers.unet_lr),
            text_encoder_lr=float(answers.text_encoder_lr) if train_te else 0.0,
            resolution=settings.resolution,
            sample_prompts=answers.path("sample_prompts") if answers.sample_images else None,
            network_weights=answers.path("network_weights"),
            output_files=tuple(str(p) for p in output_files),
            warnings=tuple(warnings),
        )

    def epoch_file(self, epoch: int) -> Path:
        return self.output_dir / f"{self.output_name}-{epoch:06d}.safetensors"

    @property
    def final_file(self) -> Path:
        return self.output_dir / f"{self.output_name}.safetensors"

    def to_dict(self) -> dict[str, Any]:
        """The resolved plan as plain JSON data (written next to the outputs)."""
        return {
            "base_model": self.base_model,
            "output_dir": str(self.output_dir),
            "output_name": self.output_name,
            "datasets": [
                {"folder": str(s.folder), "repeats": s.repeats, "images": len(s.images), "is_reg": s.is_reg}
                for scan in (self.train_scan, self.reg_scan) if scan is not None for s in scan.subsets
            ],
            "buckets": {f"{w}x{h}": n for (w, h), n in sorted(self.bucket_counts.items())},
            "images_per_epoch": self.images_per_epoch,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "clip_skip": self.clip_skip,
            "mixed_precision": self.mixed_precision,
            "save_precision": self.save_precision,
            "train_unet": self.train_unet,
            "train_text_encoder": self.train_text_encoder,
            "unet_lr": self.unet_lr,
            "text_encoder_lr": self.text_encoder_lr,
            "resolution": list(self.resolution),
            "output_files": list(self.output_files),
            "warnings": list(self.warnings),
        }


def _planned_files(output_dir: Path, name: str, epochs: int, every: int) -> list[Path]:
    files = []
    if every:
        files = [output_dir / f"{name}-{e:06d}.safetensors" for e in range(every, epochs, every)]
    files.append(output_dir / f"{name}.safetensors")
    return files
