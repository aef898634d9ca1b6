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
from easytrain.families.base import Conditioner, Objective, denoising_loss

# Where in the noise schedule each image is evaluated, as fractions of its length.
TIMESTEP_FRACTIONS = (0.1, 0.35, 0.6, 0.85)


class ValidationSet:
    """The held-out images, encoded once; ``loss`` evaluates the network on them."""

    def __init__(self, scan: DatasetScan, settings: BucketSettings, *, batch_size: int, seed: int,
                 encode: Callable[[torch.Tensor], torch.Tensor],
                 model_latents: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str) -> None:
        """``encode`` turns a pixel batch in [-1, 1] into latents (deterministically: the VAE's mean);
        ``model_latents`` (the objective's) turns those into what the denoiser sees."""
        self.seed = int(seed)
        self.device = torch.device(device)
        self.images = scan.total_images
        dataset = TrainDataset(scan, None, settings, seed=seed)
        self.batches: list[tuple[torch.Tensor, Any]] = []
        with torch.no_grad():
            for spec in dataset.epoch_batches(1, batch_size):
                batch = dataset.load_batch(spec, 1)
                latents = model_latents(encode(batch.pixel_values.to(self.device)).float())
                batch.pixel_values = None                 # the latents stand in for the pixels from now on
                self.batches.append((latents, batch))

    def loss(self, objective: Objective, forward, conditioner: Conditioner, *, autocast,
             modules: Iterable[torch.nn.Module] = ()) -> float:
        """The mean loss over every held-out image and fixed timestep (the training loss's main weighting)."""
        generator = torch.Generator("cpu").manual_seed(self.seed)
        total = torch.zeros((), device=self.device)
        count = 0
        with _eval_mode(modules), torch.no_grad():
            for latents, batch in self.batches:
                for fraction in TIMESTEP_FRACTIONS:
                    size = latents.shape[0]
                    draw = objective.fixed_draw(latents, fraction, generator)
                    loss = denoising_loss(objective, forward, conditioner, batch, latents, draw, autocast,
                                          variants=False)
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

    def __init__(self, validation_set: ValidationSet, *, objective: Objective, forward, conditioner, autocast,
                 modules: tuple, every_n_steps: int, emit) -> None:
        self.validation_set = validation_set
        self.conditioner = conditioner
        self.every_n_steps = every_n_steps
        self.emit = emit
        self.options = dict(objective=objective, forward=forward, conditioner=conditioner, autocast=autocast,
                            modules=modules)
        self._last: Optional[tuple[int, float]] = None

    def precache_text(self) -> None:
        """The held-out captions encoded now (the validator was built with a text cache)."""
        self.conditioner.precache([c for _, batch in self.validation_set.batches for c in batch.captions])

    def due(self, step: int) -> bool:
        return bool(self.every_n_steps) and step % self.every_n_steps == 0

    def known(self, step: int) -> Optional[float]:
        return self._last[1] if self._last is not None and self._last[0] == step else None

    def __call__(self, step: int, epoch: int) -> Optional[float]:
        from easytrain.train import events as ev

        if self.known(step) is not None:
            return self.known(step)
        started = time.monotonic()
        loss = self.validation_set.loss(**self.options)
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


def build_validator(plan, *, family, objective: Objective, base, unet, text_encoders, vae, vae_dtype, device,
                    autocast, emit, cache_text: bool = False):
    """The run's validator: the held-out images encoded now (the VAE must be on ``device``), or NoValidation.

    It conditions through its own conditioner of the family (no gradients) on
    the same modules the loop trains; with ``cache_text`` (frozen text encoders)
    its captions can be encoded ahead by ``precache_text``.
    """
    if plan.validation_scan is None:
        return NoValidation()

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return vae.encode(pixels.to(device, dtype=vae_dtype)).latent_dist.mean

    validation_set = ValidationSet(plan.validation_scan, plan.bucket_settings, batch_size=plan.data.batch_size,
                                   seed=plan.validation.seed, encode=encode, model_latents=objective.model_latents,
                                   device=device)
    conditioner = family.conditioner(
        text_encoders, base.tokenizers, clip_skip=plan.model.clip_skip, max_token_length=plan.model.max_token_length,
        device=device, train_text_encoder=False, cache_text=cache_text)
    return Validator(validation_set, objective=objective, forward=unet, conditioner=conditioner, autocast=autocast,
                     modules=(unet, *text_encoders), every_n_steps=plan.validation.every_n_steps, emit=emit)
