"""Flux samples during training: the prompts through the live transformer and LoRA, the flow Euler sampler
(sampling.py), the AE decode, then the PNGs and contact sheet every family writes (sampling/generate.py).

dev samples with its distilled guidance 3.5 over the prompt's steps (20 unless the prompt sets them),
schnell with 4 steps, Chroma with real classifier-free guidance over the negative prompt.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch

from easytrain.families.flux.options import variant_of
from easytrain.families.flux.sampling import DEFAULTS, cfg_denoiser, decode_to_images, sample_latents, transformer_denoiser
from easytrain.sampling.generate import render_prompts

SAMPLER = "euler_a"  # the PNG's "Sampler" field names A1111's closest sampler


def render_flux_samples(*, base, transformer, text_encoders, prompts, output_dir, name: str, epoch: int, device,
                        dtype: torch.dtype, on_progress=None, step: Optional[int] = None) -> list[Path]:
    """One PNG per prompt and the contact sheet; returns the PNG paths in prompt order."""
    from easytrain.families.flux.family import FluxConditioner
    from easytrain.families.flux.options import flow_settings

    device = torch.device(device)
    variant = variant_of(base.arch)
    settings = flow_settings(base.arch, base.options)
    conditioner = FluxConditioner(text_encoders, base.tokenizers, arch=base.arch, device=device,
                                  train_text_encoder=False, cache_text=False,
                                  apply_t5_attn_mask=settings.apply_t5_attn_mask or variant == "chroma")
    defaults = DEFAULTS[variant]

    def text_of(caption: str):
        kwargs = conditioner(SimpleNamespace(captions=[caption]))  # the transformer's text arguments
        return SimpleNamespace(t5=kwargs["txt"], pooled=kwargs.get("y"), t5_mask=kwargs["txt_attention_mask"])

    def one(prompt, seed: int, width: int, height: int):
        width, height = width - width % 16, height - height % 16
        mask = settings.apply_t5_attn_mask or variant == "chroma"
        denoise = transformer_denoiser(transformer, text_of(prompt.prompt), height=height, width=width,
                                       variant=variant, t5_mask=mask)
        if defaults.cfg_scale != 1.0:
            negative = transformer_denoiser(transformer, text_of(prompt.negative), height=height, width=width,
                                            variant=variant, t5_mask=mask)
            denoise = cfg_denoiser(denoise, negative, defaults.cfg_scale)
        steps = defaults.steps if variant == "schnell" else prompt.steps
        generator = torch.Generator().manual_seed(seed)
        latents = sample_latents(denoise, height=height, width=width, variant=variant, steps=steps,
                                 generator=generator, device=device)
        return decode_to_images(base.vae, latents)[0]

    return render_prompts(one, modules=(transformer, base.vae, *text_encoders), prompts=prompts,
                          output_dir=output_dir, name=name, epoch=epoch, step=step, device=device, dtype=dtype,
                          default_size=1024, sampler=SAMPLER, clip_skip=1, on_progress=on_progress)
