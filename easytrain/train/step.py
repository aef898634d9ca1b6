"""One training step: latents, noise, conditioning, UNet forward, loss, backward, optimizer.

With gradient accumulation a step is ``n`` batches: each is forward and
backward with its loss divided by ``n`` (``backward``), then one optimizer
step (``apply``). The noise and loss variants follow kohya's sd-scripts, in
its order: noise (offset, adaptive, multires), timesteps, input perturbation,
target, element-wise loss (l2/huber/smooth_l1), mask, per-sample weights.
"""

from __future__ import annotations

from typing import Optional

import torch

from easytrain.settings import LossSettings
from easytrain.families.ddpm.diffusion import all_snr, diffusion_loss, sample_noise, sample_timesteps, training_target
from easytrain.families.ddpm.loss_variants import huber_c_for
from easytrain.families.ddpm.noise_variants import perturbed_noise


class VaeEncoder:
    """Pixels -> latents (unscaled) with the run's VAE and latent generator."""

    def __init__(self, vae, *, device, dtype: torch.dtype, generator: torch.Generator) -> None:
        self.vae = vae
        self.device = device
        self.dtype = dtype
        self.generator = generator

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            dist = self.vae.encode(pixels.to(self.device, dtype=self.dtype)).latent_dist
            return dist.sample(generator=self.generator).float()


class TrainingStep:
    """Forward and backward of one batch; returns the detached loss. Calls no .item() (no host sync)."""

    def __init__(self, *, accelerator, conditioner, encode_latents: VaeEncoder, scaling_factor: float,
                 noise_scheduler, prediction_type: str, loss: LossSettings, noise_rng: torch.Generator,
                 optimizer, lr_scheduler, trainable: list, max_grad_norm: float, device,
                 accumulation: int = 1, ema=None) -> None:
        self.accelerator = accelerator
        self.conditioner = conditioner
        self.encode_latents = encode_latents
        self.scaling_factor = scaling_factor
        self.noise_scheduler = noise_scheduler
        self.prediction_type = prediction_type
        self.loss = loss
        self.noise_rng = noise_rng
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.trainable = trainable
        self.max_grad_norm = max_grad_norm
        self.device = device
        self.accumulation = max(1, int(accumulation))
        self.ema = ema
        self.snr = all_snr(noise_scheduler).to(device)

    def __call__(self, batch, forward) -> torch.Tensor:
        """A whole optimizer step from one batch (no accumulation)."""
        loss = self.backward(batch, forward)
        self.apply()
        return loss

    def backward(self, batch, forward) -> torch.Tensor:
        """Forward and backward of one batch, its loss divided by the accumulation; returns the loss."""
        device, scheduler, settings = self.device, self.noise_scheduler, self.loss
        with torch.no_grad():
            latents = batch.latents if batch.latents is not None else self.encode_latents(batch.pixel_values)
            latents = latents.to(device, dtype=torch.float32) * self.scaling_factor
        noise = sample_noise(latents, settings.noise_offset, self.noise_rng,
                             adaptive_noise_scale=settings.adaptive_noise_scale,
                             multires_iterations=settings.multires_noise_iterations,
                             multires_discount=settings.multires_noise_discount)
        timesteps = sample_timesteps(latents.shape[0], scheduler.config.num_train_timesteps, device, self.noise_rng)
        added = perturbed_noise(noise, settings.ip_noise_gamma, self.noise_rng) if settings.ip_noise_gamma else noise
        noisy_latents = scheduler.add_noise(latents, added, timesteps)
        with self.accelerator.autocast():
            conditioning = self.conditioner(batch)
            model_pred = forward(noisy_latents, timesteps, **conditioning).sample
        target = training_target(scheduler, latents, noise, timesteps, self.prediction_type)
        loss = diffusion_loss(
            model_pred, target, timesteps, loss_weights=batch.loss_weights.to(device), snr=self.snr,
            min_snr_gamma=settings.min_snr_gamma, prediction_type=self.prediction_type,
            loss_type=settings.loss_type, huber_c=self._huber_c(timesteps),
            masks=batch.masks.to(device) if settings.masked and batch.masks is not None else None,
            scale_v_pred_loss_like_noise_pred=settings.scale_v_pred_loss_like_noise_pred,
            debiased_estimation=settings.debiased_estimation_loss)
        self.accelerator.backward(loss / self.accumulation if self.accumulation > 1 else loss)
        return loss.detach()

    def apply(self) -> None:
        """The optimizer step for the gradients gathered since the last one."""
        if self.max_grad_norm > 0 and self.accelerator.sync_gradients:
            self.accelerator.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:   # fp16 overflow: the scaler skipped the step
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()

    def _huber_c(self, timesteps: torch.Tensor) -> Optional[torch.Tensor]:
        settings = self.loss
        if settings.loss_type == "l2":
            return None
        scheduler = self.noise_scheduler
        return huber_c_for(timesteps, settings.huber_schedule, settings.huber_c,
                           num_train_timesteps=scheduler.config.num_train_timesteps,
                           alphas_cumprod=scheduler.alphas_cumprod, huber_scale=settings.huber_scale)
