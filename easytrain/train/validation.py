"""The validation loss: how well the network denoises images it never trains on.

Every evaluation uses the same timesteps (a fixed spread over the schedule)
and the same noise (drawn from the validation seed each time), so two numbers
differ only because the weights did. No augmentation: the held-out scan has
its shuffling, dropout, flips and crops off, and the modules are put in eval
mode (no network dropout) for the evaluation. The latents are encoded once,
deterministically (the VAE's mean). Its own random generator: the training's
random state is never touched, so a run with validation trains the same
weights as one without.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Optional

import torch

from easytrain.data.buckets import BucketSettings
from easytrain.data.dataset import TrainDataset
from easytrain.data.scan import DatasetScan
from easytrain.families.ddpm.diffusion import diffusion_loss, training_target

# Where in the noise schedule each image is evaluated, as fractions of its length.
TIMESTEP_FRACTIONS = (0.1, 0.35, 0.6, 0.85)

# (noisy latents, timesteps, the data.dataset.Batch they came from) -> the model's prediction;
# the batch carries what the architecture conditions on (captions, original sizes, crops).
Predict = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class ValidationSet:
    """The held-out images, encoded once; ``loss`` evaluates the network on them."""

    def __init__(self, scan: DatasetScan, settings: BucketSettings, *, batch_size: int, seed: int,
                 encode: Callable[[torch.Tensor], torch.Tensor], scaling_factor: float,
                 device: torch.device | str) -> None:
        """``encode`` turns a pixel batch in [-1, 1] into latents (deterministically: the VAE's mean)."""
        self.seed = int(seed)
        self.device = torch.device(device)
        self.images = scan.total_images
        dataset = TrainDataset(scan, None, settings, seed=seed)
        self.batches: list[tuple[torch.Tensor, Any]] = []
        with torch.no_grad():
            for spec in dataset.epoch_batches(1, batch_size):
                batch = dataset.load_batch(spec, 1)
                latents = encode(batch.pixel_values.to(self.device)).float() * scaling_factor
                batch.pixel_values = None                 # the latents stand in for the pixels from now on
                self.batches.append((latents, batch))

    def loss(self, predict: Predict, *, noise_scheduler, prediction_type: str, modules: Iterable[torch.nn.Module] = (),
             snr: Optional[torch.Tensor] = None, min_snr_gamma: float = 0.0) -> float:
        """The mean loss over every held-out image and fixed timestep (the training loss's weighting)."""
        steps = int(noise_scheduler.config.num_train_timesteps)
        generator = torch.Generator("cpu").manual_seed(self.seed)
        total = torch.zeros((), device=self.device)
        count = 0
        with _eval_mode(modules), torch.no_grad():
            for latents, batch in self.batches:
                for fraction in TIMESTEP_FRACTIONS:
                    size = latents.shape[0]
                    timesteps = torch.full((size,), int(fraction * steps), dtype=torch.long, device=self.device)
                    noise = torch.randn(latents.shape, generator=generator).to(self.device)
                    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                    prediction = predict(noisy, timesteps, batch)
                    target = training_target(noise_scheduler, latents, noise, timesteps, prediction_type)
                    loss = diffusion_loss(prediction, target, timesteps, snr=snr, min_snr_gamma=min_snr_gamma,
                                          prediction_type=prediction_type)
                    total += loss * size
                    count += size
        return total.item() / max(1, count)


@contextmanager
def _eval_mode(modules: Iterable[torch.nn.Module]):
    """Every submodule in eval mode (dropout off) for the block, then each back as it was."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module, _ in saved:
        module.training = False
    try:
        yield
    finally:
        for module, was_training in saved:
            module.training = was_training


class Validator:
    """When the loop measures the validation loss, as a ValidationDone event; each step is measured once.

    Called at every saved file and every ``every_n_steps`` steps; ``known``
    gives the loss already measured at a step (for a save that must not wait).
    """

    def __init__(self, validation_set: ValidationSet, predict: Predict, *, every_n_steps: int, emit,
                 noise_scheduler, prediction_type: str, modules: tuple, snr: Optional[torch.Tensor],
                 min_snr_gamma: float, precache_text: Optional[Callable] = None) -> None:
        self.validation_set = validation_set
        self._precache_text = precache_text
        self.predict = predict
        self.every_n_steps = every_n_steps
        self.emit = emit
        self.options = dict(noise_scheduler=noise_scheduler, prediction_type=prediction_type, modules=modules,
                            snr=snr, min_snr_gamma=min_snr_gamma)
        self._last: Optional[tuple[int, float]] = None

    def precache_text(self) -> None:
        """The held-out captions encoded now (the validator was built with a text cache)."""
        self._precache_text([c for _, batch in self.validation_set.batches for c in batch.captions])

    def due(self, step: int) -> bool:
        return bool(self.every_n_steps) and step % self.every_n_steps == 0

    def known(self, step: int) -> Optional[float]:
        return self._last[1] if self._last is not None and self._last[0] == step else None

    def __call__(self, step: int, epoch: int) -> Optional[float]:
        from easytrain.train import events as ev

        if self.known(step) is not None:
            return self.known(step)
        started = time.monotonic()
        loss = self.validation_set.loss(self.predict, **self.options)
        self._last = (step, loss)
        self.emit(ev.ValidationDone(step=step, epoch=epoch, loss=loss, seconds=time.monotonic() - started))
        return loss


class NoValidation:
    """The validator of a run without held-out images: measures nothing, says nothing."""

    def precache_text(self) -> None:
        pass

    def due(self, step: int) -> bool:
        return False

    def known(self, step: int) -> None:
        return None

    def __call__(self, step: int, epoch: int) -> None:
        return None


def build_validator(plan, *, adapter, base, unet, text_encoders, vae, vae_dtype, device, autocast, emit,
                    cache_text: bool = False):
    """The run's validator: the held-out images encoded now (the VAE must be on ``device``), or NoValidation.

    It conditions through its own conditioner of the adapter (no gradients) on
    the same modules the loop trains; with ``cache_text`` (frozen text encoders)
    its captions can be encoded ahead by ``precache_text``.
    """
    if plan.validation_scan is None:
        return NoValidation()
    from easytrain.families.ddpm.diffusion import all_snr

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return vae.encode(pixels.to(device, dtype=vae_dtype)).latent_dist.mean

    validation_set = ValidationSet(plan.validation_scan, plan.bucket_settings, batch_size=plan.data.batch_size,
                                   seed=plan.validation.seed, encode=encode,
                                   scaling_factor=float(vae.config.scaling_factor), device=device)
    conditioner = adapter.conditioner(
        text_encoders, base.tokenizers, clip_skip=plan.model.clip_skip, max_token_length=plan.model.max_token_length,
        device=device, train_text_encoder=False, cache_text=cache_text)

    def predict(noisy: torch.Tensor, timesteps: torch.Tensor, batch) -> torch.Tensor:
        with autocast():
            return unet(noisy, timesteps, **conditioner(batch)).sample

    return Validator(validation_set, predict, every_n_steps=plan.validation.every_n_steps, emit=emit,
                     precache_text=conditioner.precache,
                     noise_scheduler=base.noise_scheduler,
                     prediction_type=plan.loss.prediction_type(base.prediction_type),
                     modules=(unet, *text_encoders), snr=all_snr(base.noise_scheduler).to(device),
                     min_snr_gamma=plan.loss.min_snr_gamma)
