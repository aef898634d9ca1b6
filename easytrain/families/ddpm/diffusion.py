"""The diffusion training objective: noise, timesteps, targets and loss weights.

The noise schedule is the base model's DDPM training scheduler (SD: scaled
linear betas 0.00085..0.012 over 1000 steps). Timesteps are drawn uniformly,
the target is the noise (epsilon models) or the velocity (v-prediction
models), and min-SNR-gamma reweights the per-sample loss as in Hang et al.
2023 and kohya's sd-scripts. kohya's variants (train/noise_variants.py,
train/loss_variants.py) plug in here, in sd-scripts' order; each is off by default.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from easytrain.families.ddpm.loss_variants import (
    apply_mask, debiased_weights, elementwise_loss, v_pred_like_noise_pred_weights,
)
from easytrain.families.ddpm.noise_variants import offset_noise, pyramid_noise


def sample_noise(latents: torch.Tensor, noise_offset: float = 0.0,
                 generator: Optional[torch.Generator] = None, *, adaptive_noise_scale: float = 0.0,
                 multires_iterations: int = 0, multires_discount: float = 0.3) -> torch.Tensor:
    """Gaussian noise like ``latents``; with an offset, plus a per-channel constant shift.

    The offset (noise += offset * randn(B, C, 1, 1)) lets the model learn
    overall brightness changes it otherwise cannot; adaptive_noise_scale grows it
    with each channel's mean (only with an offset, as kohya). Multires noise is
    added on top of that.
    """
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if noise_offset:
        noise = offset_noise(latents, noise, noise_offset, adaptive_noise_scale or None, generator)
    if multires_iterations:
        noise = pyramid_noise(noise, multires_iterations, multires_discount, generator)
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
                   min_snr_gamma: float = 0.0, prediction_type: str = "epsilon", loss_type: str = "l2",
                   huber_c: Optional[torch.Tensor] = None, masks: Optional[torch.Tensor] = None,
                   scale_v_pred_loss_like_noise_pred: bool = False,
                   debiased_estimation: bool = False) -> torch.Tensor:
    """Mean over the batch of the per-sample loss, times prior-loss and SNR-based weights.

    In sd-scripts' order: the element-wise loss (l2, huber, smooth_l1 with a
    per-sample ``huber_c``), the loss mask, the per-sample mean, the prior-loss
    weights, min-SNR-gamma, the v-prediction-like-noise scale (v models only),
    the debiased estimation weight. ``snr`` is ``all_snr(scheduler)``; the
    SNR-based weights need it.
    """
    if loss_type == "l2":
        per_element = F.mse_loss(model_pred.float(), target.float(), reduction="none")
    else:
        per_element = elementwise_loss(model_pred, target, loss_type, huber_c)
    if masks is not None:
        per_element = apply_mask(per_element, masks)
    per_sample = per_element.mean(dim=tuple(range(1, per_element.ndim)))
    if loss_weights is not None:
        per_sample = per_sample * loss_weights.to(per_sample.device, per_sample.dtype)
    scale_v = scale_v_pred_loss_like_noise_pred and prediction_type == "v_prediction"
    if (min_snr_gamma and min_snr_gamma > 0) or scale_v or debiased_estimation:
        if snr is None:
            raise ValueError("SNR-based loss weights need the schedule's snr table")
        # A zero-terminal-SNR schedule has snr 0 at its last step; a floor keeps the weights finite.
        step_snr = snr.to(per_sample.device)[timesteps.to(per_sample.device)].clamp(min=1e-6)
        if min_snr_gamma and min_snr_gamma > 0:
            per_sample = per_sample * min_snr_weights(step_snr, min_snr_gamma, prediction_type)
        if scale_v:
            per_sample = per_sample * v_pred_like_noise_pred_weights(step_snr)
        if debiased_estimation:
            per_sample = per_sample * debiased_weights(step_snr, prediction_type)
    return per_sample.mean()
