"""One training step: latents, the family's objective (noise, predict, compare), backward, optimizer.

With gradient accumulation a step is ``n`` batches: each is forward and
backward with its loss divided by ``n`` (``backward``), then one optimizer
step (``apply``). What is noised, how the denoiser is called and how the loss
is weighted is the family's objective (families/base.py ``denoising_loss``),
the same code the validation loss runs.
"""

from __future__ import annotations

import torch

from easytrain.families.base import Objective, denoising_loss


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

    def __init__(self, *, accelerator, conditioner, encode_latents: VaeEncoder, objective: Objective,
                 noise_rng: torch.Generator, optimizer, lr_scheduler, trainable: list, max_grad_norm: float,
                 accumulation: int = 1, ema=None) -> None:
        self.accelerator = accelerator
        self.conditioner = conditioner
        self.encode_latents = encode_latents
        self.objective = objective
        self.noise_rng = noise_rng
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.trainable = trainable
        self.max_grad_norm = max_grad_norm
        self.accumulation = max(1, int(accumulation))
        self.ema = ema

    def __call__(self, batch, forward) -> torch.Tensor:
        """A whole optimizer step from one batch (no accumulation)."""
        loss = self.backward(batch, forward)
        self.apply()
        return loss

    def backward(self, batch, forward) -> torch.Tensor:
        """Forward and backward of one batch, its loss divided by the accumulation; returns the loss."""
        objective = self.objective
        with torch.no_grad():
            latents = batch.latents if batch.latents is not None else self.encode_latents(batch.pixel_values)
            latents = objective.model_latents(latents)
        draw = objective.draw(latents, self.noise_rng)
        loss = denoising_loss(objective, forward, self.conditioner, batch, latents, draw, self.accelerator.autocast)
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
