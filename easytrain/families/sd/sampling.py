"""Sample images from an SD1/SD2 model being trained.

A diffusers StableDiffusionPipeline is assembled around the live modules (no
copy, no merge: peft adapters injected into the UNet or text encoder take part
as they are). Prompts are encoded by the trainer's own text code, so clip skip
and long prompts mean exactly what they mean in training. That also sidesteps
two quirks of the pipeline's encoder: its ``clip_skip`` counts one less than
kohya's (diffusers 1 == kohya 2) and it leaves the negative prompt unskipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from PIL import Image

from easytrain.families.ddpm.sampling import build_sample_scheduler, native_size
from easytrain.sampling.decode import decode_to_image
from easytrain.sampling.generate import render_prompts
from easytrain.sampling.prompts import SamplePrompt


def generate_samples(*, unet, vae, text_encoder, tokenizer, prompts: Sequence[SamplePrompt],
                     output_dir: str | os.PathLike, name: str, epoch: int, device, dtype: torch.dtype,
                     step: Optional[int] = None,
                     clip_skip: int = 1, prediction_type: str = "epsilon", scheduler_config=None,
                     sampler: str = "euler_a", max_token_length: int = 225,
                     on_progress: Optional[Callable[[int, int], None]] = None) -> list[Path]:
    """One PNG per prompt plus the epoch's contact sheet; returns the PNG paths in prompt order.

    ``clip_skip`` counts as kohya and A1111 do (1 = last layer). ``dtype`` is
    the compute dtype of mixed precision (autocast when it is not float32).
    The sheet lies at ``contact_sheet_path(output_dir, name, epoch)``; samples made every N steps
    (``step`` given) are named by the step instead, as kohya names them.
    """
    device = torch.device(device)
    pipe = build_pipeline(unet=unet, vae=vae, tokenizer=tokenizer,
                          scheduler=build_sample_scheduler(sampler, scheduler_config, prediction_type))

    def one(prompt: SamplePrompt, seed: int, width: int, height: int) -> Image.Image:
        return _generate_one(pipe, text_encoder, prompt, seed=seed, width=width, height=height, device=device,
                             clip_skip=clip_skip, max_token_length=max_token_length)

    return render_prompts(one, modules=(unet, vae, text_encoder), prompts=prompts, output_dir=output_dir,
                          name=name, epoch=epoch, step=step, device=device, dtype=dtype,
                          default_size=native_size(pipe), sampler=sampler, clip_skip=clip_skip, on_progress=on_progress)


def build_pipeline(*, unet, vae, tokenizer, scheduler):
    """A StableDiffusionPipeline that holds the given module objects themselves (nothing is copied).

    Without the text encoder: prompts are encoded as training encodes them and given as embeddings, which
    the pipeline then casts to the UNet's precision (it would take the encoder's own, and a frozen encoder
    may keep the file's precision: model/cast_on_use.py)."""
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()  # before the import: importing the pipelines logs about optional image processors
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=None, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_prompt(text_encoder, tokenizer, text: str, *, device, clip_skip: int, max_token_length: int) -> torch.Tensor:
    """(1, tokens, dim) conditioning, computed the way training computes it."""
    from easytrain.families.clip_text import encode_tokens, tokenize_captions

    ids = tokenize_captions(tokenizer, [text], max_token_length).to(device)
    return encode_tokens(text_encoder, ids, clip_skip=clip_skip)


def _generate_one(pipe, text_encoder, prompt: SamplePrompt, *, seed: int, width: int, height: int, device: torch.device,
                  clip_skip: int, max_token_length: int) -> Image.Image:
    encode = dict(device=device, clip_skip=clip_skip, max_token_length=max_token_length)
    positive = encode_prompt(text_encoder, pipe.tokenizer, prompt.prompt, **encode)
    negative = encode_prompt(text_encoder, pipe.tokenizer, prompt.negative, **encode)
    generator = torch.Generator(device=device).manual_seed(seed)
    result = pipe(
        prompt_embeds=positive, negative_prompt_embeds=negative,
        width=width, height=height, num_inference_steps=prompt.steps, guidance_scale=prompt.cfg,
        generator=generator, output_type="latent",
    )
    return decode_to_image(pipe, result.images)  # outside autocast, in the VAE's precision


