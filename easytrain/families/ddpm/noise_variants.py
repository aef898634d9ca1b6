"""The noise variants kohya's sd-scripts offers, as pure functions of tensors.

Each follows sd-scripts (library/custom_train_functions.py and train_util.py);
the only difference is the source of randomness: every draw here comes from
the ``generator`` passed in, so a resumed run draws the same numbers as an
uninterrupted one.

- ``offset_noise``: noise_offset, optionally adaptive (adaptive_noise_scale).
- ``pyramid_noise``: multires noise (multires_noise_iterations / _discount).
- ``perturbed_noise``: input perturbation (ip_noise_gamma); it changes the
  noise added to the latents, never the target.
- ``zero_terminal_snr_betas``: the rescaled betas of Lin et al. 2023
  (zero_terminal_snr), whose last timestep has no signal left.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _randn(shape, like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _rand(generator: Optional[torch.Generator], device: torch.device) -> float:
    return float(torch.rand((), generator=generator, device=generator.device if generator is not None else device))


def offset_noise(latents: torch.Tensor, noise: torch.Tensor, noise_offset: float,
                 adaptive_noise_scale: Optional[float] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``noise`` plus a per-image, per-channel constant: offset * randn(B, C, 1, 1).

    With ``adaptive_noise_scale`` the offset grows with each channel's mean
    brightness: offset + scale * |mean(latents over H, W)|, never below 0.
    """
    offset: float | torch.Tensor = noise_offset
    if adaptive_noise_scale is not None:
        channel_mean = latents.mean(dim=(2, 3), keepdim=True).abs()
        offset = torch.clamp(noise_offset + adaptive_noise_scale * channel_mean, min=0.0)
    b, c = latents.shape[:2]
    return noise + offset * _randn((b, c, 1, 1), latents, generator)


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Multi-resolution noise: coarser noise fields added on top, rescaled to unit std.

    Level i (i = 0 .. iterations-1) is randn at the size divided by r**i, r drawn
    from [2, 4), upsampled bilinearly and weighted by discount**i; the loop stops
    after the first level that is one pixel wide or high.
    """
    b, c, h, w = noise.shape
    result = noise.clone()
    for i in range(iterations):
        r = _rand(generator, noise.device) * 2 + 2
        hn, wn = max(1, int(h / r ** i)), max(1, int(w / r ** i))
        coarse = _randn((b, c, hn, wn), noise, generator)
        result = result + F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) * discount ** i
        if hn == 1 or wn == 1:
            break
    return result / result.std()


def perturbed_noise(noise: torch.Tensor, gamma: float,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The noise to add to the latents under input perturbation: noise + gamma * randn."""
    return noise + gamma * _randn(noise.shape, noise, generator)


def zero_terminal_snr_betas(betas: torch.Tensor) -> torch.Tensor:
    """Betas rescaled so that sqrt(alpha_bar) keeps its first value and reaches 0 at the last step."""
    alphas_bar_sqrt = (1 - betas.double()).cumprod(0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (1 - alphas).to(betas.dtype)


def rescale_for_zero_terminal_snr(noise_scheduler) -> None:
    """Give a DDPM training scheduler the zero-terminal-SNR betas, as kohya's fix_noise_scheduler_betas does."""
    betas = zero_terminal_snr_betas(noise_scheduler.betas)
    noise_scheduler.betas = betas
    noise_scheduler.alphas = 1.0 - betas
    noise_scheduler.alphas_cumprod = torch.cumprod(noise_scheduler.alphas, dim=0)
