"""Samples during training: Flux's flow-matching Euler sampler and the AE decode.

As BFL's reference and kohya's flux_train_utils (``get_schedule`` and ``denoise``): the sigmas run
from 1 to 0 in ``steps`` equal steps, shifted for dev (and Chroma) by exp(mu) with mu linear in the
image token count (0.5 at 256 tokens, 1.15 at 4096), not shifted for schnell; each step is
x += (sigma_next - sigma) * v, v the transformer's velocity. dev is guidance-distilled: 3.5 goes in
as the guidance input, 20 steps; schnell takes 4 steps and no guidance. Chroma is not distilled: it
samples with real classifier-free guidance (``cfg_denoiser``) over a negative prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from easytrain.families.flux.model import image_ids, pack_latents, text_ids, unpack_latents
from easytrain.families.flux.objective import LATENT_CHANNELS, flux_mu, time_shift, unscale_latents

# (packed latents (B, L, 64), sigmas (B,)) -> the velocity, packed like the latents.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingDefaults:
    steps: int
    guidance: Optional[float]   # dev's distilled guidance input
    cfg_scale: float            # real classifier-free guidance (Chroma); 1.0 = off
    shift: bool


DEFAULTS = {
    "dev": SamplingDefaults(steps=20, guidance=3.5, cfg_scale=1.0, shift=True),
    "schnell": SamplingDefaults(steps=4, guidance=None, cfg_scale=1.0, shift=False),
    "chroma": SamplingDefaults(steps=26, guidance=None, cfg_scale=4.0, shift=True),
}


def schedule(steps: int, image_tokens: int, *, shift: bool = True) -> torch.Tensor:
    """``steps + 1`` sigmas from 1 down to 0, shifted for the image size when ``shift``."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    if shift:
        sigmas = time_shift(flux_mu(image_tokens), sigmas)
    return sigmas.float()


def initial_noise(batch: int, height: int, width: int, generator: Optional[torch.Generator] = None,
                  device=None, dtype=torch.float32) -> torch.Tensor:
    """Packed Gaussian noise for ``height`` x ``width`` pixels (multiples of 16)."""
    if height % 16 or width % 16:
        raise ValueError(f"Flux samples need sizes that are multiples of 16, got {width}x{height}")
    noise = torch.randn(batch, LATENT_CHANNELS, height // 8, width // 8, generator=generator)
    return pack_latents(noise).to(device=device, dtype=dtype)


def euler(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
          on_step: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Integrate the flow from ``sigmas[0]`` to ``sigmas[-1]`` with Euler steps."""
    total = len(sigmas) - 1
    for index in range(total):
        current, following = float(sigmas[index]), float(sigmas[index + 1])
        t = torch.full((x.shape[0],), current, device=x.device, dtype=x.dtype)
        x = x + (following - current) * denoise(x, t)
        if on_step is not None:
            on_step(index + 1, total)
    return x


def cfg_denoiser(conditional: Denoiser, unconditional: Denoiser, scale: float) -> Denoiser:
    """Classifier-free guidance: uncond + scale * (cond - uncond); ``scale`` 1 is the conditional alone."""
    if scale == 1.0:
        return conditional

    def denoise(x, t):
        uncond = unconditional(x, t)
        return uncond + scale * (conditional(x, t) - uncond)

    return denoise


def transformer_denoiser(model, text, *, height: int, width: int, variant: str,
                         guidance: Optional[float] = None, t5_mask: bool = False) -> Denoiser:
    """A Denoiser over the Flux transformer for ``text`` (``t5``, ``pooled``, ``t5_mask``) at a pixel size.

    dev gets ``guidance`` (its default 3.5 when None) as the guidance input.
    """
    t5 = text.t5
    batch = t5.shape[0]
    ids = image_ids(batch, height // 8, width // 8, device=t5.device)
    kwargs = dict(txt=t5, txt_ids=text_ids(batch, t5.shape[1], device=t5.device), img_ids=ids)
    if variant != "chroma":
        kwargs["y"] = text.pooled
    if variant == "dev":
        value = DEFAULTS["dev"].guidance if guidance is None else guidance
        kwargs["guidance"] = torch.full((batch,), float(value), device=t5.device)
    if t5_mask:
        kwargs["txt_attention_mask"] = text.t5_mask

    def denoise(x, t):
        return model(img=x, timesteps=t, **kwargs)

    return denoise


def sample_latents(denoise: Denoiser, *, height: int, width: int, variant: str, batch: int = 1,
                   steps: Optional[int] = None, generator: Optional[torch.Generator] = None,
                   device=None, dtype=torch.float32, on_step=None) -> torch.Tensor:
    """Scaled latents (B, 16, H/8, W/8) sampled with ``variant``'s schedule (steps default: 20 dev, 4 schnell)."""
    defaults = DEFAULTS[variant]
    x = initial_noise(batch, height, width, generator, device=device, dtype=dtype)
    sigmas = schedule(steps or defaults.steps, x.shape[1], shift=defaults.shift)
    with torch.no_grad():
        x = euler(denoise, x, sigmas, on_step)
    return unpack_latents(x, height // 8, width // 8)


def decode_to_images(ae, latents: torch.Tensor) -> list:
    """Scaled latents through the AE (unshifted and unscaled first) to PIL images."""
    from PIL import Image

    with torch.no_grad():
        z = unscale_latents(latents.float()).to(_dtype_of(ae, latents.dtype))
        out = ae.decode(z)
    pixels = getattr(out, "sample", out).float().clamp(-1, 1)
    arrays = ((pixels + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(array) for array in arrays]


def _dtype_of(module, fallback: torch.dtype) -> torch.dtype:
    try:
        return next(module.parameters()).dtype
    except (AttributeError, StopIteration):
        return fallback
