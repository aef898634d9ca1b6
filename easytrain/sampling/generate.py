"""What every family's samples share: seeds, sizes, PNGs with A1111's parameters, the contact sheet.

Each family renders one image with its own pipeline around the live modules
(families/<family>/sampling.py); ``render_prompts`` runs the prompts through it.
The training state is left as found: every module's train/eval flag is
restored and the global RNG streams are forked, so a run with samples trains
exactly like one without.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from easytrain.fsutil import atomic_path
from easytrain.sampling.paths import (
    contact_sheet_path, sample_image_path, step_contact_sheet_path, step_sample_image_path,
)
from easytrain.sampling.prompts import SamplePrompt
from easytrain.sampling.sheet import contact_sheet

SAMPLERS = {"euler_a": "Euler a", "ddim": "DDIM"}   # our name -> the name A1111 shows in "parameters"

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
