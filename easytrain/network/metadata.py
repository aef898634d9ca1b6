"""The training metadata kohya writes into a LoRA file: ss_* keys and modelspec.*.

Every value is a string; dicts are JSON. Keys whose value is unknown (None) are
left out rather than written as "None".
"""

from __future__ import annotations

import datetime
import json
import time

from easytrain.network.spec import NetworkSpec

# Our architecture names -> (ss_base_model_version, modelspec architecture, v2, default resolution)
ARCHITECTURES = {
    "sd1": ("sd_v1", "stable-diffusion-v1", False, 512),
    "sd2": ("sd_v2", "stable-diffusion-v2-512", True, 512),
    "sd2-v": ("sd_v2_768_v", "stable-diffusion-v2-768-v", True, 768),
    "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base", False, 1024),
}

IMPL_STABILITY_AI = "https://github.com/Stability-AI/generative-models"
IMPL_DIFFUSERS = "diffusers"
MODELSPEC_VERSION = "1.0.0"


def network_module(spec: NetworkSpec) -> str:
    return "lycoris.kohya" if spec.is_lycoris else "networks.lora"


def network_args(spec: NetworkSpec) -> dict[str, str]:
    """ss_network_args as kohya records them: the --network_args strings."""
    args: dict[str, str] = {}
    if spec.network_type != "LoRA" and spec.conv_dim is not None:
        args["conv_dim"] = str(spec.conv_dim)
        args["conv_alpha"] = _num(spec.effective_conv_alpha)
    if spec.is_lycoris:
        args["algo"] = spec.network_type.lower()
    return args


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
    arch: str = "sd1",
    prediction_type: str = "epsilon",
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
    session_id: int | None = None,
    title: str | None = None,
    extra: dict | None = None,
) -> dict[str, str]:
    """The metadata dict for save_lora(). ``extra`` adds further keys verbatim (stringified)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {arch!r}")
    if prediction_type not in ("epsilon", "v_prediction", "v"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    base_version, spec_arch, v2, default_side = ARCHITECTURES[arch]
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
        "ss_base_model_version": base_version,
        "ss_v2": v2,
        "ss_network_module": network_module(spec),
        "ss_network_dim": spec.dim,
        "ss_network_alpha": float(spec.alpha),
        "ss_network_args": network_args(spec) or None,
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
    _, spec_arch, _, _ = ARCHITECTURES[arch]
    out = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{spec_arch}/lora",
        # kohya: LoRAs on SD1/SD2 are in diffusers' layout, SDXL LoRAs in SAI's.
        "modelspec.implementation": IMPL_STABILITY_AI if arch == "sdxl" else IMPL_DIFFUSERS,
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
        "modelspec.prediction_type": "v" if prediction_type in ("v", "v_prediction") else "epsilon",
    }
    if clip_skip is not None:
        out["modelspec.encoder_layer"] = str(clip_skip)
    return out
