"""The diffusion training objective: noise, timesteps, targets and loss weights.

The noise schedule is the base model's DDPM training scheduler (SD: scaled
linear betas 0.00085..0.012 over 1000 steps). Timesteps are drawn uniformly,
the target is the noise (epsilon models) or the velocity (v-prediction
models), and min-SNR-gamma reweights the per-sample loss as in Hang et al.
2023 and kohya's sd-scripts.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def sample_noise(latents: torch.Tensor, noise_offset: float = 0.0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Gaussian noise like ``latents``; with an offset, plus a per-channel constant shift.

    The offset (noise += offset * randn(B, C, 1, 1)) lets the model learn
    overall brightness changes it otherwise cannot.
    """
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if noise_offset:
        b, c = latents.shape[:2]
        shift = torch.randn((b, c, 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
        noise = noise + noise_offset * shift
    return noise


def sample_timesteps(batch_size: int, num_train_timesteps: int, device: torch.device | str,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform integer timesteps in [0, num_train_timesteps)."""
    steps = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator,
                          device=generator.device if generator is not None else device)
    return steps.to(device).long()


def all_snr(noise_scheduler) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) for every training timestep."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.double()
    return (alphas_cumprod / (1.0 - alphas_cumprod)).float()


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights for min-SNR-gamma.

    epsilon: min(snr, gamma) / snr; v-prediction: min(snr, gamma) / (snr + 1).
    """
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped / snr


def training_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor, prediction_type: str) -> torch.Tensor:
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def diffusion_loss(model_pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, *,
                   loss_weights: Optional[torch.Tensor] = None, snr: Optional[torch.Tensor] = None,
                   min_snr_gamma: float = 0.0, prediction_type: str = "epsilon") -> torch.Tensor:
    """Mean over the batch of the per-sample MSE, times prior-loss and min-SNR weights.

    ``snr`` is ``all_snr(scheduler)``; it is needed only when min_snr_gamma > 0.
    """
    per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    per_sample = per_sample.mean(dim=tuple(range(1, per_sample.ndim)))
    if loss_weights is not None:
        per_sample = per_sample * loss_weights.to(per_sample.device, per_sample.dtype)
    if min_snr_gamma and min_snr_gamma > 0:
        if snr is None:
            raise ValueError("min_snr_gamma needs the schedule's snr table")
        step_snr = snr.to(per_sample.device)[timesteps.to(per_sample.device)]
        per_sample = per_sample * min_snr_weights(step_snr, min_snr_gamma, prediction_type)
    return per_sample.mean()
