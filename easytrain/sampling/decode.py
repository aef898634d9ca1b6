"""Latents -> a PIL image, decoded outside autocast in the VAE's own precision.

The pipelines run their denoising loop under the run's mixed-precision
autocast (render_prompts), but the VAE must not: SDXL's VAE overflows in fp16
and the samples come out black (kohya and diffusers decode it in fp32). So the
pipeline returns latents (``output_type="latent"``) and this module decodes
them with autocast off, in the dtype the VAE's weights have (fp32 in training:
latent caching and SDXL keep it there); an fp16 VAE marked ``force_upcast``
decodes in fp32 for the call, as diffusers' own pipelines do.
"""

from __future__ import annotations

import torch
from PIL import Image


def vae_decode_dtype(vae) -> torch.dtype:
    dtype = vae.dtype
    if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        return torch.float32
    return dtype


def decode_to_image(pipe, latents: torch.Tensor) -> Image.Image:
    """The first image of ``latents`` (as the pipeline's denoising loop left them), as PIL."""
    vae = pipe.vae
    config = vae.config
    dtype = vae_decode_dtype(vae)
    upcast = dtype != vae.dtype
    with torch.autocast(device_type=latents.device.type, enabled=False), torch.no_grad():
        if upcast:
            vae.to(dtype=dtype)
        try:
            latents = latents.to(dtype)
            mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
            if mean is not None and std is not None:
                shape = (1, latents.shape[1], 1, 1)
                mean = torch.tensor(mean, dtype=dtype, device=latents.device).view(shape)
                std = torch.tensor(std, dtype=dtype, device=latents.device).view(shape)
                latents = latents * std / config.scaling_factor + mean
            else:
                latents = latents / config.scaling_factor
            image = vae.decode(latents, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
    return pipe.image_processor.postprocess(image.float(), output_type="pil")[0]
