"""The DDPM objective of SD1, SD2 and SDXL, as kohya's train_network.py computes it.

Latents are the VAE's times its scaling factor. Training draws the noise
(offset, adaptive, multires variants) and then integer timesteps uniformly from
the noise generator, perturbs the noise that is added (ip_noise_gamma) but not
the target, and compares the UNet's prediction with the noise (epsilon) or the
velocity (v-prediction): element-wise loss (l2/huber/smooth_l1), mask,
prior-loss weights, min-SNR-gamma, v-like-noise scaling, debiased estimation.
Validation draws plain noise at fixed timesteps and measures the l2 loss with
min-SNR-gamma only.
"""

from __future__ import annotations

from typing import Optional

import torch

from easytrain.families.base import Draw, Objective
from easytrain.families.ddpm.diffusion import all_snr, diffusion_loss, sample_noise, sample_timesteps, training_target
from easytrain.families.ddpm.loss_variants import huber_c_for
from easytrain.families.ddpm.noise_variants import perturbed_noise, rescale_for_zero_terminal_snr

V_PREDICTION = "v_prediction"


class DdpmObjective(Objective):
    def __init__(self, noise_scheduler, prediction_type: str, loss=None, *, scaling_factor: float, device) -> None:
        """``loss`` is the plan's LossSettings (None: plain l2, no variants); its v_parameterization and
        zero_terminal_snr change the target and the schedule (the schedule in place, as kohya does)."""
        self.loss = loss
        if loss is not None and loss.zero_terminal_snr:
            rescale_for_zero_terminal_snr(noise_scheduler)
        # asked for, or the file is marked so (NoobAI's ztsnr key: its loader rescaled the schedule already)
        self.zero_terminal_snr = bool(loss is not None and loss.zero_terminal_snr
                                      or noise_scheduler.config.get("rescale_betas_zero_snr"))
        self.scheduler = noise_scheduler
        self.prediction_type = V_PREDICTION if loss is not None and loss.v_parameterization else prediction_type
        self.scaling_factor = scaling_factor
        self.device = device
        self.steps = int(noise_scheduler.config.num_train_timesteps)
        self.snr = all_snr(noise_scheduler).to(device)

    def model_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.to(self.device, dtype=torch.float32) * self.scaling_factor

    def draw(self, latents: torch.Tensor, generator: torch.Generator) -> Draw:
        settings = self.loss
        if settings is None:
            noise = sample_noise(latents, 0.0, generator)
        else:
            noise = sample_noise(latents, settings.noise_offset, generator,
                                 adaptive_noise_scale=settings.adaptive_noise_scale,
                                 multires_iterations=settings.multires_noise_iterations,
                                 multires_discount=settings.multires_noise_discount)
        timesteps = sample_timesteps(latents.shape[0], self.steps, latents.device, generator)
        gamma = settings.ip_noise_gamma if settings is not None else 0.0
        added = perturbed_noise(noise, gamma, generator) if gamma else noise
        return Draw(noise, timesteps, self.scheduler.add_noise(latents, added, timesteps))

    def fixed_draw(self, latents: torch.Tensor, fraction: float, generator: torch.Generator) -> Draw:
        timesteps = torch.full((latents.shape[0],), int(fraction * self.steps), dtype=torch.long,
                               device=latents.device)
        noise = torch.randn(latents.shape, generator=generator).to(latents.device)
        return Draw(noise, timesteps, self.scheduler.add_noise(latents, noise, timesteps))

    def predict(self, forward, draw: Draw, conditioning: dict) -> torch.Tensor:
        return forward(draw.noisy, draw.timesteps, **conditioning).sample

    def compare(self, prediction: torch.Tensor, latents: torch.Tensor, draw: Draw, *, batch=None,
                variants: bool = True) -> torch.Tensor:
        target = training_target(self.scheduler, latents, draw.noise, draw.timesteps, self.prediction_type)
        settings = self.loss
        gamma = settings.min_snr_gamma if settings is not None else 0.0
        if not variants or settings is None:
            return diffusion_loss(prediction, target, draw.timesteps, snr=self.snr, min_snr_gamma=gamma,
                                  prediction_type=self.prediction_type)
        device = prediction.device
        return diffusion_loss(
            prediction, target, draw.timesteps, loss_weights=batch.loss_weights.to(device), snr=self.snr,
            min_snr_gamma=gamma, prediction_type=self.prediction_type,
            loss_type=settings.loss_type, huber_c=self._huber_c(draw.timesteps),
            masks=batch.masks.to(device) if settings.masked and batch.masks is not None else None,
            scale_v_pred_loss_like_noise_pred=settings.scale_v_pred_loss_like_noise_pred,
            debiased_estimation=settings.debiased_estimation_loss)

    def _huber_c(self, timesteps: torch.Tensor) -> Optional[torch.Tensor]:
        settings = self.loss
        if settings.loss_type == "l2":
            return None
        return huber_c_for(timesteps, settings.huber_schedule, settings.huber_c,
                           num_train_timesteps=self.steps, alphas_cumprod=self.scheduler.alphas_cumprod,
                           huber_scale=settings.huber_scale)
