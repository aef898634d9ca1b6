"""What a family provides. The loop, validation, the network and sampling talk to this only.

A family (families/<package>/family.py) loads its base model, conditions on
captions, says which layers a network adapts and their kohya names, renders
samples, and owns its training objective (``Objective``): how VAE latents
become the denoiser's space, how noise and timesteps are drawn, what the
denoiser is called with, what it should predict and how the loss is weighted.
``denoising_loss`` is the one "noise, predict, compare": the training step and
the validation loss both call it, with random or with fixed draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

# A conditioner turns a batch into the keyword arguments of the denoiser's forward besides the noisy
# latents and the timesteps (encoder_hidden_states, and any added conditioning).
Conditioner = Callable[[Any], dict]

PRECACHE_CHUNK = 16  # captions encoded together when a text cache is filled ahead of training


def fill_text_cache(cache, captions: Sequence[str]) -> None:
    """Encode every distinct caption into ``cache`` now, so the text encoders can leave the GPU."""
    distinct = list(dict.fromkeys(captions))
    for start in range(0, len(distinct), PRECACHE_CHUNK):
        cache(distinct[start:start + PRECACHE_CHUNK])


@dataclass
class Draw:
    """One batch's noise and timesteps, and the noisy latents the denoiser sees."""

    noise: torch.Tensor
    timesteps: torch.Tensor
    noisy: torch.Tensor


class Objective:
    """A family's training objective; subclasses fill in every method."""

    prediction_type: str = ""   # what the denoiser predicts, in the family's own words (recorded in metadata)
    zero_terminal_snr: bool = False

    def model_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's latents (fp32, unscaled) as the denoiser sees them (scaled, shifted)."""
        raise NotImplementedError

    def draw(self, latents: torch.Tensor, generator: torch.Generator) -> Draw:
        """Training: random noise and timesteps from ``generator``, with every noise variant asked for."""
        raise NotImplementedError

    def fixed_draw(self, latents: torch.Tensor, fraction: float, generator: torch.Generator) -> Draw:
        """Validation: plain noise from ``generator`` (on the CPU) at the timestep ``fraction`` of the schedule."""
        raise NotImplementedError

    def predict(self, forward, draw: Draw, conditioning: dict) -> torch.Tensor:
        """The denoiser's prediction for ``draw`` (called inside autocast)."""
        raise NotImplementedError

    def compare(self, prediction: torch.Tensor, latents: torch.Tensor, draw: Draw, *, batch=None,
                variants: bool = True) -> torch.Tensor:
        """The batch's loss. With ``variants`` the loss type, masks, prior-loss and every weighting asked for;
        without, the plain loss with the run's main weighting (what validation measures)."""
        raise NotImplementedError


def denoising_loss(objective: Objective, forward, conditioner: Conditioner, batch, latents: torch.Tensor,
                   draw: Draw, autocast, *, variants: bool = True) -> torch.Tensor:
    """Noise, predict, compare: the training step's and the validation's one implementation."""
    with autocast():
        conditioning = conditioner(batch)
        prediction = objective.predict(forward, draw, conditioning)
    return objective.compare(prediction, latents, draw, batch=batch, variants=variants)


class Family:
    """One family of architectures (SD1, SD2, SDXL, ...); subclasses fill in every method."""

    family: str = ""
    # Whether the VAE may encode in fp16 when latents are not cached (the SDXL VAE overflows).
    vae_encodes_in_half: bool = True

    def load(self, path: Path, detection, arch: str, prediction: str, dtype):
        """A BaseModel (model/load.py) from a single file or a diffusers folder, offline."""
        raise NotImplementedError

    def load_builtin_tiny(self, dtype):
        raise NotImplementedError

    def objective(self, base, loss, device) -> Objective:
        """The training objective on ``base`` with the plan's LossSettings ``loss``."""
        raise NotImplementedError

    def network_models(self, base) -> dict[str, Any]:
        """The modules a network adapts, by part name: "unet", "text_encoder", ... (kohya's order)."""
        raise NotImplementedError

    def network_targets(self, models: dict[str, Any], spec) -> list:
        """The network/targets.Target list for ``spec``: which layers, and their kohya names."""
        raise NotImplementedError

    def conditioner(self, text_encoders: Sequence[Any], tokenizers: Sequence[Any], *, clip_skip: int,
                    max_token_length: int, device, train_text_encoder: bool, cache_text: bool) -> Conditioner:
        """With ``cache_text``, the conditioner also has ``precache(captions)``: after it, batches of those
        captions need no text encoder (kohya's cache_text_encoder_outputs)."""
        raise NotImplementedError

    def render_samples(self, *, base, unet, text_encoders, prompts, output_dir, name: str, epoch: int, device,
                       dtype, clip_skip: int, max_token_length: int, on_progress=None,
                       step: Optional[int] = None) -> list[Path]:
        """One image per prompt with the live ``unet`` and ``text_encoders`` (the rest from ``base``); named by
        ``step`` when given (samples every N steps), else by ``epoch``."""
        raise NotImplementedError
