"""The LoRA files a run writes, and their metadata.

Files are named ``name-000001.safetensors`` per saved epoch and
``name.safetensors`` at the end, each with kohya's ``ss_*`` metadata for the
step and epoch it was saved at.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

STATE_SUFFIX = "-state"  # a LoRA file's training state: name-000001.safetensors -> name-000001-state/
STATE_JSON = "state.json"


def epoch_file(output_dir: Path, name: str, epoch: int) -> Path:
    return Path(output_dir) / f"{name}-{epoch:06d}.safetensors"


def step_file(output_dir: Path, name: str, step: int) -> Path:
    """A file saved on request between epochs (save now, stop)."""
    return Path(output_dir) / f"{name}-step{step:08d}.safetensors"


def final_file(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}.safetensors"


@dataclass
class MetadataBase:
    """The fields of the metadata that stay the same for every file of a run."""
    fields: dict = field(default_factory=dict)

    def for_save(self, *, steps: int, epoch: int, validation_loss: Optional[float] = None) -> dict[str, str]:
        """The metadata of a file saved at this step; ``ss_validation_loss`` when one was measured."""
        from easytrain.network.metadata import build_metadata

        if callable(self.fields.get("base_model_hashes")):  # hashed on a thread since the run started
            self.fields["base_model_hashes"] = self.fields["base_model_hashes"]()
        return build_metadata(**self.fields, steps=steps, epoch=epoch, validation_loss=validation_loss,
                              training_finished_at=time.time())


def run_metadata(plan, *, spec, arch: str, prediction_type: str, optimizer_name: str,
                 mixed_precision: str, total_steps: int, steps_per_epoch: int, zero_terminal_snr: bool,
                 processes: int = 1, extra: Optional[dict] = None,
                 base_model_hashes: Optional[Callable[[], dict]] = None) -> MetadataBase:
    """kohya's metadata of the run; ``zero_terminal_snr``: the schedule trained with (asked for, or the file's);
    ``base_model_hashes``: waits for the base model file's hashes (network/base_hashes.py), called at the
    first save."""
    from easytrain.data.kohya_metadata import bucket_info, datasets_entry, reg_dataset_dirs
    from easytrain.data.tags import dataset_dirs, tag_frequency
    from easytrain.network.metadata import new_session_id
    from easytrain.train.accumulation import effective_batch

    args = plan.optimizer.args
    args_text = ",".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in args.items())
    base = plan.model.base_model
    loss, data = plan.loss, plan.data
    accumulation = plan.optimizer.gradient_accumulation_steps
    subset_defaults = dict(shuffle_caption=data.shuffle_captions, keep_tokens=data.keep_tokens,
                           keep_tokens_separator=data.keep_tokens_separator, flip_aug=data.flip_aug,
                           color_aug=data.color_aug, random_crop=data.random_crop)
    return MetadataBase(dict(
        spec=spec,
        output_name=plan.saving.output_name,
        arch=arch,
        prediction_type=prediction_type,
        training_started_at=time.time(),
        comment=plan.saving.comment,
        tag_frequency=tag_frequency(plan.train_scan, plan.reg_scan),
        dataset_dirs=dataset_dirs(plan.train_scan),
        num_train_images=plan.train_scan.images_per_epoch,
        num_reg_images=plan.reg_scan.images_per_epoch if plan.reg_scan is not None else 0,
        num_batches_per_epoch=steps_per_epoch,
        num_epochs=plan.epochs,
        max_train_steps=total_steps,
        learning_rate=plan.optimizer.unet_lr,
        unet_lr=plan.optimizer.unet_lr if plan.network.train_unet else None,
        text_encoder_lr=plan.optimizer.text_encoder_lr if plan.network.train_text_encoder else None,
        lr_scheduler=plan.schedule.scheduler,
        lr_warmup_steps=plan.schedule.warmup_steps,
        optimizer=f"{optimizer_name}({args_text})" if args_text else optimizer_name,
        batch_size=plan.data.batch_size,
        clip_skip=plan.model.clip_skip,
        resolution=tuple(plan.resolution),
        mixed_precision=mixed_precision,
        seed=plan.run.seed,
        noise_offset=plan.loss.noise_offset or None,
        min_snr_gamma=plan.loss.min_snr_gamma or None,
        max_token_length=plan.model.max_token_length,
        max_grad_norm=plan.optimizer.max_grad_norm,
        gradient_checkpointing=plan.precision.gradient_checkpointing,
        shuffle_caption=plan.data.shuffle_captions,
        keep_tokens=plan.data.keep_tokens,
        flip_aug=plan.data.flip_aug,
        cache_latents=plan.data.cache_latents != "off",
        enable_bucket=plan.bucket_settings.enable_bucket,
        min_bucket_reso=plan.bucket_settings.min_reso,
        max_bucket_reso=plan.bucket_settings.max_reso,
        bucket_no_upscale=plan.bucket_settings.no_upscale,
        prior_loss_weight=plan.data.prior_loss_weight,
        sd_model_name=base if base.startswith("builtin:") else Path(base).name,
        vae_name=None if plan.model.vae is None else Path(plan.model.vae).name,
        session_id=new_session_id(),
        base_model_hashes=base_model_hashes,
        gradient_accumulation_steps=accumulation,
        total_batch_size=effective_batch(plan.data.batch_size, accumulation, processes),
        multires_noise_iterations=loss.multires_noise_iterations or None,
        multires_noise_discount=loss.multires_noise_discount if loss.multires_noise_iterations else None,
        adaptive_noise_scale=loss.adaptive_noise_scale or None,
        ip_noise_gamma=loss.ip_noise_gamma or None,
        zero_terminal_snr=zero_terminal_snr,
        debiased_estimation=loss.debiased_estimation_loss,
        loss_type=loss.loss_type,
        huber_schedule=loss.huber_schedule,
        huber_c=loss.huber_c,
        huber_scale=loss.huber_scale,
        caption_dropout_rate=data.caption_dropout_rate,
        caption_dropout_every_n_epochs=data.caption_dropout_every_n_epochs,
        caption_tag_dropout_rate=data.caption_tag_dropout_rate,
        color_aug=data.color_aug,
        random_crop=data.random_crop,
        full_fp16=False,
        bucket_info=bucket_info(plan.train_scan, plan.reg_scan, plan.bucket_settings),
        reg_dataset_dirs=reg_dataset_dirs(plan.reg_scan),
        datasets=datasets_entry(plan.train_scan, plan.reg_scan, plan.bucket_settings, batch_size=data.batch_size,
                                subset_defaults=subset_defaults) if plan.train_scan.config_options else None,
        network_args_extra=dict(plan.network.block_args),
        extra=dict(extra or {}) or None,
    ))
