"""Sample images from an SDXL model being trained, with diffusers' SDXL pipeline around the live modules.

Prompts are encoded by the training conditioning (families/sdxl/text.py: both
encoders' penultimate states, bigG's pooled output, 75-token windows); the
pipeline adds the time ids for the image size (original = target, no crop).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from PIL import Image

from easytrain.families.ddpm.sampling import build_sample_scheduler, native_size
from easytrain.sampling.generate import render_prompts
from easytrain.sampling.decode import decode_to_image
from easytrain.sampling.prompts import SamplePrompt


def generate_sdxl_samples(*, unet, vae, text_encoders, tokenizers, prompts: Sequence[SamplePrompt],
                          output_dir: str | os.PathLike, name: str, epoch: int, device, dtype: torch.dtype,
                          step: Optional[int] = None, prediction_type: str = "epsilon", scheduler_config=None, sampler: str = "euler_a",
                          max_token_length: int = 225,
                          on_progress: Optional[Callable[[int, int], None]] = None) -> list[Path]:
    """One PNG per prompt plus the epoch's contact sheet, as sampling/generate.py writes them for SD."""
    device = torch.device(device)
    pipe = build_sdxl_pipeline(unet=unet, vae=vae, tokenizers=tokenizers,
                               scheduler=build_sample_scheduler(sampler, scheduler_config, prediction_type))

    def one(prompt: SamplePrompt, seed: int, width: int, height: int) -> Image.Image:
        return _generate_one(pipe, text_encoders, prompt, seed=seed, width=width, height=height, device=device,
                             max_token_length=max_token_length)

    return render_prompts(one, modules=(unet, vae, *text_encoders), prompts=prompts, output_dir=output_dir,
                          name=name, epoch=epoch, step=step, device=device, dtype=dtype,
                          default_size=native_size(pipe), sampler=sampler, clip_skip=1, on_progress=on_progress)


def build_sdxl_pipeline(*, unet, vae, tokenizers, scheduler):
    """A StableDiffusionXLPipeline that holds the given module objects themselves (nothing is copied).

    Without the text encoders: prompts are encoded as training encodes them and given as embeddings, which
    the pipeline then casts to the UNet's precision (it would take the encoders' own, and a frozen encoder
    may keep the file's precision: model/cast_on_use.py)."""
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    from diffusers import StableDiffusionXLPipeline

    tokenizer, tokenizer_2 = tokenizers
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _encode(pipe, text_encoders, text: str, *, device, max_token_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    from easytrain.families.sdxl.text import encode_sdxl_tokens, tokenize_sdxl

    ids_1, ids_2 = tokenize_sdxl((pipe.tokenizer, pipe.tokenizer_2), [text], max_token_length)
    return encode_sdxl_tokens(text_encoders, ids_1.to(device), ids_2.to(device))


def _generate_one(pipe, text_encoders, prompt: SamplePrompt, *, seed: int, width: int, height: int, device: torch.device,
                  max_token_length: int) -> Image.Image:
    encode = dict(device=device, max_token_length=max_token_length)
    positive, pooled = _encode(pipe, text_encoders, prompt.prompt, **encode)
    negative, negative_pooled = _encode(pipe, text_encoders, prompt.negative, **encode)
    generator = torch.Generator(device=device).manual_seed(seed)
    result = pipe(
        prompt_embeds=positive, pooled_prompt_embeds=pooled,
        negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled,
        width=width, height=height, num_inference_steps=prompt.steps, guidance_scale=prompt.cfg,
        generator=generator, output_type="latent",
    )
    return decode_to_image(pipe, result.images)  # outside autocast: the SDXL VAE overflows in fp16
