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

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Optional

import torch

from easytrain.data.buckets import BucketSettings
from easytrain.data.dataset import TrainDataset
from easytrain.data.scan import DatasetScan
from easytrain.train.diffusion import diffusion_loss, training_target

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
