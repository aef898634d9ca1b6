"""One training step: latents, noise, conditioning, UNet forward, loss, backward, optimizer."""

from __future__ import annotations

import torch

from easytrain.settings import LossSettings
from easytrain.train.diffusion import all_snr, diffusion_loss, sample_noise, sample_timesteps, training_target


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
                 optimizer, lr_scheduler, trainable: list, max_grad_norm: float, device) -> None:
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
        self.snr = all_snr(noise_scheduler).to(device)

    def __call__(self, batch, forward) -> torch.Tensor:
        """``forward`` is the UNet (maybe compiled)."""
        device, scheduler = self.device, self.noise_scheduler
        with torch.no_grad():
            latents = batch.latents if batch.latents is not None else self.encode_latents(batch.pixel_values)
            latents = latents.to(device, dtype=torch.float32) * self.scaling_factor
        noise = sample_noise(latents, self.loss.noise_offset, self.noise_rng)
        timesteps = sample_timesteps(latents.shape[0], scheduler.config.num_train_timesteps, device, self.noise_rng)
        noisy_latents = scheduler.add_noise(latents, noise, timesteps)
        with self.accelerator.autocast():
            conditioning = self.conditioner(batch)
            model_pred = forward(noisy_latents, timesteps, **conditioning).sample
        target = training_target(scheduler, latents, noise, timesteps, self.prediction_type)
        loss = diffusion_loss(model_pred, target, timesteps, loss_weights=batch.loss_weights.to(device),
                              snr=self.snr, min_snr_gamma=self.loss.min_snr_gamma,
                              prediction_type=self.prediction_type)
        self.accelerator.backward(loss)
        if self.max_grad_norm > 0 and self.accelerator.sync_gradients:
            self.accelerator.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:   # fp16 overflow: the scaler skipped the step
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
