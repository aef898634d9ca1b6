"""What a run writes into its output folder, and the metadata of each LoRA file.

At the start: the answers file and the resolved plan (so the folder says how
its files were made) and the tag summary. During the run: LoRA files named
``name-000001.safetensors`` per saved epoch, ``name.safetensors`` at the end,
each with kohya's ``ss_*`` metadata for the step and epoch it was saved at.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from easytrain.fsutil import atomic_write_text

STATE_SUFFIX = "-state"  # a LoRA file's training state: name-000001.safetensors -> name-000001-state/
STATE_JSON = "state.json"


def answers_copy_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}.answers.json"


def plan_copy_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}.plan.json"


def tag_summary_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}_tags.txt"


def epoch_file(output_dir: Path, name: str, epoch: int) -> Path:
    return Path(output_dir) / f"{name}-{epoch:06d}.safetensors"


def step_file(output_dir: Path, name: str, step: int) -> Path:
    """A file saved on request between epochs (save now, stop)."""
    return Path(output_dir) / f"{name}-step{step:08d}.safetensors"


def final_file(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}.safetensors"


def write_run_files(plan) -> list[Path]:
    """Copy the answers and the resolved plan into the output folder; write the tag summary."""
    from easytrain import answers as answers_file

    out = Path(plan.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [answers_file.save(plan.answers, answers_copy_path(out, plan.output_name))]
    plan_path = plan_copy_path(out, plan.output_name)
    atomic_write_text(plan_path, json.dumps(plan.to_dict(), indent=2, ensure_ascii=False) + "\n")
    written.append(plan_path)
    order = plan.answers.get("tag_summary", "none")
    if order != "none":
        from easytrain.data.tags import write_tag_summary

        written.append(write_tag_summary(tag_summary_path(out, plan.output_name), plan.train_scan, order))
    return written


@dataclass
class MetadataBase:
    """The fields of the metadata that stay the same for every file of a run."""
    fields: dict = field(default_factory=dict)

    def for_save(self, *, steps: int, epoch: int, validation_loss: Optional[float] = None) -> dict[str, str]:
        """The metadata of a file saved at this step; ``ss_validation_loss`` when one was measured."""
        from easytrain.network.metadata import build_metadata

        return build_metadata(**self.fields, steps=steps, epoch=epoch, validation_loss=validation_loss)


def run_metadata(plan, *, spec, arch: str, prediction_type: str, optimizer_name: str,
                 optimizer_args: Optional[dict], mixed_precision: str, total_steps: int,
                 steps_per_epoch: int, started_at: Optional[float] = None) -> MetadataBase:
    from easytrain.data.tags import dataset_dirs, tag_frequency

    answers = plan.answers
    args_text = ",".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in (optimizer_args or {}).items())
    base = plan.base_model
    return MetadataBase(dict(
        spec=spec,
        output_name=plan.output_name,
        arch=arch,
        prediction_type=prediction_type,
        training_started_at=time.time() if started_at is None else started_at,
        comment=answers.get("comment", "") or "",
        tag_frequency=tag_frequency(plan.train_scan, plan.reg_scan),
        dataset_dirs=dataset_dirs(plan.train_scan),
        num_train_images=plan.train_scan.images_per_epoch,
        num_reg_images=plan.reg_scan.images_per_epoch if plan.reg_scan is not None else 0,
        num_batches_per_epoch=steps_per_epoch,
        num_epochs=plan.epochs,
        max_train_steps=total_steps,
        learning_rate=plan.unet_lr,
        unet_lr=plan.unet_lr if plan.train_unet else None,
        text_encoder_lr=plan.text_encoder_lr if plan.train_text_encoder else None,
        lr_scheduler=answers.scheduler,
        lr_warmup_steps=plan.warmup_steps,
        optimizer=f"{optimizer_name}({args_text})" if args_text else optimizer_name,
        batch_size=answers.batch_size,
        clip_skip=plan.clip_skip,
        resolution=tuple(plan.resolution),
        mixed_precision=mixed_precision,
        seed=answers.get("seed", 42),
        noise_offset=answers.get("noise_offset", 0.0) or None,
        min_snr_gamma=answers.get("min_snr_gamma", 0.0) or None,
        max_token_length=answers.get("max_token_length", 225),
        max_grad_norm=answers.get("max_grad_norm", 1.0),
        gradient_checkpointing=bool(answers.get("gradient_checkpointing", True)),
        shuffle_caption=bool(answers.shuffle_captions),
        keep_tokens=answers.keep_tokens,
        flip_aug=bool(answers.flip_aug),
        cache_latents=answers.cache_latents != "off",
        enable_bucket=plan.bucket_settings.enable_bucket,
        min_bucket_reso=plan.bucket_settings.min_reso,
        max_bucket_reso=plan.bucket_settings.max_reso,
        bucket_no_upscale=plan.bucket_settings.no_upscale,
        prior_loss_weight=answers.get("prior_loss_weight", 1.0),
        sd_model_name=base if base.startswith("builtin:") else Path(base).name,
    ))
