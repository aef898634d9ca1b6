"""Sample images from the weights being trained.

A diffusers StableDiffusionPipeline is assembled around the live modules (no
copy, no merge: peft adapters injected into the UNet or text encoder take part
as they are). Prompts are encoded by the trainer's own text code, so clip skip
and long prompts mean exactly what they mean in training. That also sidesteps
two quirks of the pipeline's encoder: its ``clip_skip`` counts one less than
kohya's (diffusers 1 == kohya 2) and it leaves the negative prompt unskipped.

The training state is left as found: every module's train/eval flag is
restored and the global RNG streams are forked, so a run with samples trains
exactly like one without.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from easytrain.fsutil import atomic_path
from easytrain.sampling.decode import decode_to_image
from easytrain.sampling.paths import (
    contact_sheet_path, sample_image_path, step_contact_sheet_path, step_sample_image_path,
)
from easytrain.sampling.prompts import SamplePrompt
from easytrain.sampling.sheet import contact_sheet

SAMPLERS = {"euler_a": "Euler a", "ddim": "DDIM"}   # our name -> the name A1111 shows in "parameters"

# SD's training noise schedule, used when the caller has no scheduler config at hand.
DEFAULT_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, set_alpha_to_one=False, clip_sample=False, timestep_spacing="leading",
)


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
    pipe = build_pipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                          scheduler=build_sample_scheduler(sampler, scheduler_config, prediction_type))

    def one(prompt: SamplePrompt, seed: int, width: int, height: int) -> Image.Image:
        return _generate_one(pipe, prompt, seed=seed, width=width, height=height, device=device,
                             clip_skip=clip_skip, max_token_length=max_token_length)

    return render_prompts(one, modules=(unet, vae, text_encoder), prompts=prompts, output_dir=output_dir,
                          name=name, epoch=epoch, step=step, device=device, dtype=dtype,
                          default_size=native_size(pipe), sampler=sampler, clip_skip=clip_skip, on_progress=on_progress)


def render_prompts(generate_one: Callable[[SamplePrompt, int, int, int], Image.Image], *, modules, prompts,
                   output_dir, name: str, epoch: int, device: torch.device, dtype: torch.dtype, default_size: int,
                   sampler: str, clip_skip: int, on_progress=None, step: Optional[int] = None) -> list[Path]:
    """The loop every architecture shares: seeds, sizes, PNGs with A1111's parameters, the contact sheet.

    Named by ``epoch``, or by ``step`` when given (samples every N steps, as kohya names them).

    ``generate_one(prompt, seed, width, height)`` renders one image with the architecture's pipeline.
    """
    paths: list[Path] = []
    images: list[Image.Image] = []
    captions: list[str] = []
    with _sampling_state(*modules, device=device), _autocast(device, dtype):
        for index, prompt in enumerate(prompts):
            seed = prompt.seed if prompt.seed is not None else index
            width = prompt.width or default_size
            height = prompt.height or default_size
            image = generate_one(prompt, seed, width, height)
            path = (sample_image_path(output_dir, name, epoch, index, seed) if step is None
                    else step_sample_image_path(output_dir, name, step, index, seed))
            _save_png(image, path, _parameters_text(prompt, seed, width, height, sampler, clip_skip))
            paths.append(path)
            images.append(image)
            captions.append(prompt.prompt)
            if on_progress is not None:
                on_progress(index + 1, len(prompts))
    if images:
        sheet = (contact_sheet_path(output_dir, name, epoch) if step is None
                 else step_contact_sheet_path(output_dir, name, step))
        _save_png(contact_sheet(images, captions), sheet)
    return paths


def build_sample_scheduler(sampler: str, scheduler_config=None, prediction_type: str = "epsilon"):
    """A fresh inference scheduler on the training schedule (betas, timesteps) of ``scheduler_config``."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

    classes = {"euler_a": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler}
    if sampler not in classes:
        raise ValueError(f"sampler must be one of {sorted(classes)}, got {sampler!r}")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    config = dict(scheduler_config) if scheduler_config is not None else dict(DEFAULT_SCHEDULER_CONFIG)
    # DDIM's default is to clip x0 to [-1, 1], wrong for SD latents; the pipeline would warn and undo it.
    config["clip_sample"] = False
    # SD's inference schedules start one step later than the training schedule (diffusers warns otherwise).
    config["steps_offset"] = 1
    return classes[sampler].from_config(config, prediction_type=prediction_type)


def build_pipeline(*, unet, vae, text_encoder, tokenizer, scheduler):
    """A StableDiffusionPipeline that holds the given module objects themselves (nothing is copied)."""
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()  # before the import: importing the pipelines logs about optional image processors
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_prompt(text_encoder, tokenizer, text: str, *, device, clip_skip: int, max_token_length: int) -> torch.Tensor:
    """(1, tokens, dim) conditioning, computed the way training computes it."""
    from easytrain.arch.clip_text import encode_tokens, tokenize_captions

    ids = tokenize_captions(tokenizer, [text], max_token_length).to(device)
    return encode_tokens(text_encoder, ids, clip_skip=clip_skip)


def _generate_one(pipe, prompt: SamplePrompt, *, seed: int, width: int, height: int, device: torch.device,
                  clip_skip: int, max_token_length: int) -> Image.Image:
    encode = dict(device=device, clip_skip=clip_skip, max_token_length=max_token_length)
    positive = encode_prompt(pipe.text_encoder, pipe.tokenizer, prompt.prompt, **encode)
    negative = encode_prompt(pipe.text_encoder, pipe.tokenizer, prompt.negative, **encode)
    generator = torch.Generator(device=device).manual_seed(seed)
    result = pipe(
        prompt_embeds=positive, negative_prompt_embeds=negative,
        width=width, height=height, num_inference_steps=prompt.steps, guidance_scale=prompt.cfg,
        generator=generator, output_type="latent",
    )
    return decode_to_image(pipe, result.images)  # outside autocast, in the VAE's precision


def native_size(pipe) -> int:
    """The pipeline's native image side: the UNet's sample size times the VAE's scale."""
    sample_size = pipe.unet.config.sample_size
    if not isinstance(sample_size, int):
        sample_size = sample_size[0]
    return sample_size * pipe.vae_scale_factor


@contextlib.contextmanager
def _sampling_state(*modules, device: torch.device) -> Iterator[None]:
    """Eval mode and no autograd inside; afterwards every submodule's mode and the RNGs are as before."""
    modes = [(m, m.training) for module in modules if module is not None for m in module.modules()]
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices), torch.no_grad():
            for module in modules:
                if module is not None:
                    module.eval()
            yield
    finally:
        for module, training in modes:
            module.training = training


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def _parameters_text(prompt: SamplePrompt, seed: int, width: int, height: int, sampler: str, clip_skip: int) -> str:
    """The generation settings in the PNG text chunk A1111's "PNG Info" tab reads."""
    lines = [prompt.prompt]
    if prompt.negative:
        lines.append(f"Negative prompt: {prompt.negative}")
    lines.append(f"Steps: {prompt.steps}, Sampler: {SAMPLERS[sampler]}, CFG scale: {prompt.cfg:g}, "
                 f"Seed: {seed}, Size: {width}x{height}, Clip skip: {clip_skip}")
    return "\n".join(lines)


def _save_png(image: Image.Image, path: Path, parameters: Optional[str] = None) -> None:
    info = None
    if parameters is not None:
        info = PngInfo()
        info.add_text("parameters", parameters)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
