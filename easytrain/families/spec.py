"""The records a family fills in, light (no torch): its architectures as the catalog lists them, and the
memory its step was traced to need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

DIFFUSERS_LAYOUT = "diffusers"
STABILITY_LAYOUT = "https://github.com/Stability-AI/generative-models"


@dataclass(frozen=True)
class Architecture:
    """One architecture answer: how it is shown, which family serves it, its file ids."""

    id: str                   # the answers value ("sd2-v")
    label: str                # what the wizard and `check` show
    family: str               # the family that loads and trains it (families/registry.py)
    prediction_type: str      # what it predicts unless the file says otherwise
    resolution: int           # its native training size
    base_model_version: str   # kohya's ss_base_model_version
    modelspec: str            # modelspec.architecture without "/lora"
    v2: bool                  # kohya's ss_v2
    lora_layout: str          # modelspec.implementation: the layout of the LoRA's UNet names
    memory_factor: float = 1.0          # training memory per native-size picture, in SD1-at-512 units
    always_checkpoint: bool = False     # gradient checkpointing stays on whatever the GPU's memory
    bucket_range: tuple[int, int] = (256, 1024)   # default smallest and largest bucket side
    trains_text_encoder: bool = True               # by default (SDXL: UNet only, kohya's advice)
    unet_lr: float = 5e-4                          # the default UNet learning rate (non-adaptive optimizers)
    block_layout: str = "sd"  # kohya's block numbering for block-wise settings (network/blocks.py LAYOUTS)
    uses_clip_skip: bool = True  # SDXL always conditions on both encoders' penultimate layer
    same_models_as: str | None = None  # built from that architecture's shipped configs (only the target differs)
    legacy_flags: frozenset = frozenset()  # kohya's boolean flags that name it ("v2", "sdxl", "v_parameterization")
    denoiser: str = "UNet"  # what messages call the model the LoRA's lora_unet_ modules adapt
    webui: tuple[str, str] = ("AUTOMATIC1111", "stable-diffusion-webui/models/Lora")  # a web UI that applies it
    # (question id, value): its own defaults for shared questions (Flux: min_snr_gamma 0, a DDPM-only weighting)
    question_defaults: tuple = ()



@dataclass(frozen=True)
class ArchitectureMemory:
    """What bench/memory_trace.py measured for one architecture (batch 1, 225-token captions)."""

    traced_side: int                                  # the square size the step was traced at
    parameters: Mapping[str, int]                     # per part: unet, vae, text_encoder(, text_encoder_2)
    lora_per_dim: Mapping[str, int]                   # kohya's module set at dim 1, per part; unet_convs: LoCon's 3x3
    text_activation_bytes: Mapping[tuple, int]        # (precision, checkpointing) -> trained text encoders, per caption
    activation_bytes_per_pixel: Mapping[tuple, float]  # (precision, checkpointing) -> the UNet's step
    vae_encode_bytes_per_pixel: float                 # one fp32 encode without gradients

    @property
    def text_encoders(self) -> tuple[str, ...]:
        return tuple(part for part in self.parameters if part.startswith("text_encoder"))
