"""The typed, immutable settings a run is made of, computed once from the answers by plan.py.

Everything under train/, network/, sampling/ and the saving code reads these
records and never an Answers object or a raw answers key; every default lives
in questions.py and reaches these records through the plan. A new option is a
question, a field in the record it belongs to, and the code that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional


def frozen_mapping(values: Optional[Mapping[str, Any]]) -> Mapping[str, Any]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class ModelSettings:
    base_model: str                 # "builtin:tiny", or an absolute path
    resolved: Any                   # families.detect.Resolved: the architecture, read from the header once
    clip_skip: int
    max_token_length: int           # 75, 150 or 225 caption tokens
    vae: Optional[str] = None       # a separate VAE: "builtin:tiny" or an absolute path; None: the base model's

    @property
    def architecture(self) -> str:
        """The catalog id the base model trains as."""
        return self.resolved.arch


@dataclass(frozen=True)
class DataSettings:
    batch_size: int                 # the one batch size of the run (a dataset TOML's own wins in the plan)
    shuffle_captions: bool
    keep_tokens: int
    flip_aug: bool
    prior_loss_weight: float
    caption_extension: str
    cache_latents: str              # "off" | "memory" | "disk" (the answer; random crop or colour jitter turn it off)
    tag_summary: str                # "none" | "by_count" | ...
    keep_tokens_separator: str      # "" | "|||" ...
    caption_dropout_rate: float
    caption_dropout_every_n_epochs: int
    caption_tag_dropout_rate: float
    random_crop: bool
    color_aug: bool
    alpha_mask: bool
    mask_folder: Optional[Path]


@dataclass(frozen=True)
class NetworkSettings:
    network_type: str
    dim: int
    alpha: float
    conv_dim: Optional[int]
    conv_alpha: Optional[float]
    train_unet: bool
    train_text_encoder: bool
    initial_weights: Optional[Path]  # network_weights: a LoRA to continue from
    dora: bool
    # kohya's block-wise --network_args as given ("down_lr_weight": "cosine", "block_dims": "4,4,..."); {} for none
    block_args: Mapping[str, Any] = field(default_factory=frozen_mapping)
    # the base model's block numbering (its catalog entry's block_layout), set with block_args
    block_layout: Optional[str] = None

    @property
    def blocks(self):
        """network.blocks.BlockSettings from block_args in the base model's numbering, or None."""
        from easytrain.catalog import BLOCK_LAYOUTS as LAYOUTS
        from easytrain.network.blocks import block_settings

        return block_settings(LAYOUTS[self.block_layout], **self.block_args) if self.block_args else None

    def spec(self):
        from easytrain.network.spec import NetworkSpec

        return NetworkSpec(self.network_type, self.dim, self.alpha, conv_dim=self.conv_dim,
                           conv_alpha=self.conv_alpha, train_unet=self.train_unet,
                           train_text_encoder=self.train_text_encoder, dora=self.dora, blocks=self.blocks)


@dataclass(frozen=True)
class OptimizerSettings:
    name: str
    args: Mapping[str, Any] = field(default_factory=frozen_mapping)
    unet_lr: float = 0.0
    text_encoder_lr: float = 0.0    # 0 when the text encoder is not trained
    max_grad_norm: float = 0.0      # 0: no clipping
    gradient_accumulation_steps: int = 1   # batches per optimizer step


@dataclass(frozen=True)
class ScheduleSettings:
    scheduler: str
    warmup_steps: int
    restarts: int
    power: float


@dataclass(frozen=True)
class LossSettings:
    min_snr_gamma: float            # 0: off
    noise_offset: float             # 0: off
    adaptive_noise_scale: float     # 0: off (used only with a noise offset)
    multires_noise_iterations: int  # 0: off
    multires_noise_discount: float
    ip_noise_gamma: float           # 0: off
    zero_terminal_snr: bool
    v_parameterization: bool        # the v target whatever the architecture predicts
    scale_v_pred_loss_like_noise_pred: bool
    debiased_estimation_loss: bool
    loss_type: str                  # "l2" | "huber" | "smooth_l1"
    huber_schedule: str             # "snr" | "exponential" | "constant"
    huber_c: float
    huber_scale: float
    masked: bool                    # loss masks from alpha channels or a mask folder


@dataclass(frozen=True)
class PrecisionSettings:
    mixed_precision: str            # "no" | "fp16" | "bf16"
    save_precision: str             # "fp16" | "bf16" | "float"
    gradient_checkpointing: bool
    torch_compile: bool


@dataclass(frozen=True)
class SavingSettings:
    output_dir: Path
    output_name: str
    every_n_epochs: int             # 0: only the final file
    every_n_steps: int              # 0: by epochs only (NAME-step00001000.safetensors)
    save_state: bool
    keep_states: int
    comment: str
    ema_decay: float                # 0: no EMA; else also NAME-ema files


@dataclass(frozen=True)
class SamplingSettings:
    prompts_file: Optional[Path]    # None: no samples
    every_n_epochs: int             # 0: only before training / never
    every_n_steps: int              # 0: by epochs only
    before_training: bool


@dataclass(frozen=True)
class ValidationSettings:
    """The held-out images (plan.validation_scan) and when their loss is measured."""
    images: int                     # 0: no validation loss
    every_n_steps: int              # besides at every saved file and at the end; 0: only then
    seed: int                       # the fixed noise of every evaluation


@dataclass(frozen=True)
class RunSettings:
    seed: int
    log_every_n_steps: int
    tensorboard: bool
