"""The training metadata kohya writes into a LoRA file: ss_* keys and modelspec.*.

Every value is a string; dicts are JSON. Keys whose value is unknown (None) are
left out rather than written as "None".
"""

from __future__ import annotations

import datetime
import json
import random
import time

from easytrain import catalog
from easytrain.network.spec import NetworkSpec

MODELSPEC_VERSION = "1.0.0"


def network_module(spec: NetworkSpec) -> str:
    """kohya's own LoRA module, or LyCORIS's for LoHa/LoKr and for DoRA (which only LyCORIS trains)."""
    return "lycoris.kohya" if spec.is_lycoris or spec.dora else "networks.lora"


def network_args(spec: NetworkSpec, extra: dict | None = None) -> dict[str, str]:
    """ss_network_args as kohya records them: the --network_args strings.

    ``extra`` adds further --network_args (block-wise dims and learning rates) as given.
    """
    args: dict[str, str] = {}
    if spec.network_type != "LoRA" and spec.conv_dim is not None:
        args["conv_dim"] = str(spec.conv_dim)
        args["conv_alpha"] = _num(spec.effective_conv_alpha)
    if spec.is_lycoris:
        args["algo"] = spec.network_type.lower()
    if spec.dora:
        args["algo"] = "locon" if spec.network_type == "LoCon" else "lora"
        args["dora_wd"] = "True"
    args.update({key: _str(value) for key, value in (extra or {}).items()})
    return args


def new_session_id(rng: random.Random | None = None) -> int:
    """ss_session_id: a random integer naming the run its files came from (kohya: 0..2**32)."""
    return (rng or random.SystemRandom()).randint(0, 2 ** 32)


def _num(value) -> str:
    return str(float(value)) if isinstance(value, float) else str(value)


def _str(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return str(tuple(value))
    return str(value)


def build_metadata(
    *,
    spec: NetworkSpec,
    output_name: str,
    arch: str = catalog.TINY_MODEL_ARCH,
    prediction_type: str = catalog.architecture(catalog.TINY_MODEL_ARCH).prediction_type,
    training_started_at: float | None = None,
    comment: str = "",
    tag_frequency: dict | None = None,
    dataset_dirs: dict | None = None,
    num_train_images: int | None = None,
    num_reg_images: int | None = None,
    num_batches_per_epoch: int | None = None,
    num_epochs: int | None = None,
    max_train_steps: int | None = None,
    steps: int | None = None,
    epoch: int | None = None,
    validation_loss: float | None = None,
    learning_rate: float | None = None,
    unet_lr: float | None = None,
    text_encoder_lr: float | None = None,
    lr_scheduler: str | None = None,
    lr_warmup_steps: int | None = None,
    optimizer: str | None = None,
    batch_size: int | None = None,
    clip_skip: int | None = None,
    resolution: tuple[int, int] | int | None = None,
    mixed_precision: str | None = None,
    seed: int | None = None,
    noise_offset: float | None = None,
    min_snr_gamma: float | None = None,
    max_token_length: int | None = None,
    max_grad_norm: float | None = None,
    gradient_checkpointing: bool | None = None,
    shuffle_caption: bool | None = None,
    keep_tokens: int | None = None,
    flip_aug: bool | None = None,
    cache_latents: bool | None = None,
    enable_bucket: bool | None = None,
    min_bucket_reso: int | None = None,
    max_bucket_reso: int | None = None,
    bucket_no_upscale: bool | None = None,
    prior_loss_weight: float | None = None,
    sd_model_name: str | None = None,
    vae_name: str | None = None,
    session_id: int | None = None,
    title: str | None = None,
    training_finished_at: float | None = None,
    gradient_accumulation_steps: int | None = None,
    total_batch_size: int | None = None,
    multires_noise_iterations: int | None = None,
    multires_noise_discount: float | None = None,
    adaptive_noise_scale: float | None = None,
    ip_noise_gamma: float | None = None,
    zero_terminal_snr: bool | None = None,
    debiased_estimation: bool | None = None,
    loss_type: str | None = None,
    huber_schedule: str | None = None,
    huber_c: float | None = None,
    huber_scale: float | None = None,
    caption_dropout_rate: float | None = None,
    caption_dropout_every_n_epochs: int | None = None,
    caption_tag_dropout_rate: float | None = None,
    color_aug: bool | None = None,
    random_crop: bool | None = None,
    full_fp16: bool | None = None,
    bucket_info: dict | None = None,
    reg_dataset_dirs: dict | None = None,
    datasets: list | None = None,
    base_model_hashes: dict | None = None,
    network_args_extra: dict | None = None,
    extra: dict | None = None,
) -> dict[str, str]:
    """The metadata dict for save_lora(). ``extra`` adds further keys verbatim (stringified)."""
    entry = catalog.architecture(arch)
    if prediction_type not in catalog.MODELSPEC_PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {', '.join(catalog.MODELSPEC_PREDICTION_TYPES)}, "
                         f"got {prediction_type!r}")
    base_version, v2, default_side = entry.base_model_version, entry.v2, entry.resolution
    started = time.time() if training_started_at is None else float(training_started_at)
    if resolution is None:
        resolution = (default_side, default_side)
    elif isinstance(resolution, int):
        resolution = (resolution, resolution)
    width, height = resolution

    fields = {
        "ss_session_id": session_id,
        "ss_training_started_at": started,
        "ss_output_name": output_name,
        "ss_sd_model_name": sd_model_name,
        "ss_vae_name": vae_name,
        "ss_base_model_version": base_version,
        "ss_v2": v2,
        "ss_network_module": network_module(spec),
        "ss_network_dim": spec.dim,
        "ss_network_alpha": float(spec.alpha),
        "ss_network_args": network_args(spec, network_args_extra) or None,
        "ss_training_comment": comment,
        "ss_tag_frequency": tag_frequency,
        "ss_dataset_dirs": dataset_dirs,
        "ss_num_train_images": num_train_images,
        "ss_num_reg_images": num_reg_images,
        "ss_num_batches_per_epoch": num_batches_per_epoch,
        "ss_num_epochs": num_epochs,
        "ss_max_train_steps": max_train_steps,
        "ss_steps": steps,
        "ss_epoch": epoch,
        "ss_validation_loss": validation_loss,
        "ss_learning_rate": learning_rate,
        "ss_unet_lr": unet_lr,
        "ss_text_encoder_lr": text_encoder_lr,
        "ss_lr_scheduler": lr_scheduler,
        "ss_lr_warmup_steps": lr_warmup_steps,
        "ss_optimizer": optimizer,
        "ss_batch_size_per_device": batch_size,
        "ss_clip_skip": clip_skip,
        "ss_resolution": (width, height),
        "ss_mixed_precision": mixed_precision,
        "ss_seed": seed,
        "ss_noise_offset": noise_offset,
        "ss_min_snr_gamma": min_snr_gamma,
        "ss_max_token_length": max_token_length,
        "ss_max_grad_norm": max_grad_norm,
        "ss_gradient_checkpointing": gradient_checkpointing,
        "ss_shuffle_caption": shuffle_caption,
        "ss_keep_tokens": keep_tokens,
        "ss_flip_aug": flip_aug,
        "ss_cache_latents": cache_latents,
        "ss_enable_bucket": enable_bucket,
        "ss_min_bucket_reso": min_bucket_reso,
        "ss_max_bucket_reso": max_bucket_reso,
        "ss_bucket_no_upscale": bucket_no_upscale,
        "ss_prior_loss_weight": prior_loss_weight,
        "ss_training_finished_at": training_finished_at,
        "ss_gradient_accumulation_steps": gradient_accumulation_steps,
        "ss_total_batch_size": total_batch_size,
        "ss_multires_noise_iterations": multires_noise_iterations,
        "ss_multires_noise_discount": multires_noise_discount,
        "ss_adaptive_noise_scale": adaptive_noise_scale,
        "ss_ip_noise_gamma": ip_noise_gamma,
        "ss_zero_terminal_snr": zero_terminal_snr,
        "ss_debiased_estimation": debiased_estimation,
        "ss_loss_type": loss_type,
        "ss_huber_schedule": huber_schedule,
        "ss_huber_c": huber_c,
        "ss_huber_scale": huber_scale,
        "ss_caption_dropout_rate": caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": caption_tag_dropout_rate,
        "ss_color_aug": color_aug,
        "ss_random_crop": random_crop,
        "ss_full_fp16": full_fp16,
        "ss_bucket_info": bucket_info,
        "ss_reg_dataset_dirs": reg_dataset_dirs,
        "ss_datasets": datasets,
        **(base_model_hashes or {}),
    }
    metadata = {key: _str(value) for key, value in fields.items() if value is not None}
    metadata.update(modelspec(
        arch=arch, title=title or output_name, resolution=(width, height),
        prediction_type=prediction_type, timestamp=started, clip_skip=clip_skip,
    ))
    for key, value in (extra or {}).items():
        metadata[str(key)] = _str(value)
    return metadata


def modelspec(*, arch: str, title: str, resolution: tuple[int, int], prediction_type: str,
              timestamp: float, clip_skip: int | None = None) -> dict[str, str]:
    """The modelspec.* keys as kohya's sai_model_spec writes them for a LoRA."""
    entry = catalog.architecture(arch)
    out = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{entry.modelspec}/lora",
        # kohya: LoRAs on SD1/SD2 are in diffusers' layout, SDXL LoRAs in SAI's.
        "modelspec.implementation": entry.lora_layout,
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
    }
    if catalog.MODELSPEC_PREDICTION_TYPES[prediction_type]:  # kohya writes none for flow-matching models
        out["modelspec.prediction_type"] = catalog.MODELSPEC_PREDICTION_TYPES[prediction_type]
    if clip_skip is not None:
        out["modelspec.encoder_layer"] = str(clip_skip)
    return out
