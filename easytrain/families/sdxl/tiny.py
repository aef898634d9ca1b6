"""The tiny SDXL-shaped model: made in code from a fixed seed, for the tests.

Every part of SDXL's layout is here, small: a UNet with the added time/text
embedding ("text_time"), linear proj_in/proj_out and a transformer depth that
differs per level; CLIP-L's kind of text encoder (quick_gelu) and an OpenCLIP
bigG-like one with a text projection (gelu, pads with "!"); a VAE with SDXL's
scaling factor. The two encoders have different widths and the projection is
not square, so a swapped or untransposed tensor cannot load by accident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from easytrain.families.sd import tiny

TINY_SDXL_VERSION = 1  # bump when the architecture below changes; invalidates caches
TEXT_WIDTH_1 = 32
TEXT_WIDTH_2 = 48
PROJECTION_DIM = 40
TIME_EMBED_DIM = 8

UNET_CONFIG = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2),
    attention_head_dim=(2, 4),
    cross_attention_dim=TEXT_WIDTH_1 + TEXT_WIDTH_2,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=TIME_EMBED_DIM,
    # pooled text embedding + six time ids (original size, crop top-left, target size)
    projection_class_embeddings_input_dim=PROJECTION_DIM + 6 * TIME_EMBED_DIM,
    norm_num_groups=32,
)

VAE_CONFIG = dict(tiny.VAE_CONFIG, scaling_factor=0.13025, force_upcast=True)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    interpolation_type="linear",
    timestep_spacing="leading",
    steps_offset=1,
)


def build_tiny_sdxl_tokenizers():
    """(tokenizer, tokenizer_2) over the tiny vocabulary; the second pads with "!" as SDXL's does."""
    return tiny.build_tiny_tokenizer(), tiny.build_tiny_tokenizer(pad_token="!")


def text_encoder_configs(vocab_size: int):
    """Configs of the CLIP-L-like and the bigG-like encoders (bigG: gelu, a projection, pad "!")."""
    from transformers import CLIPTextConfig

    first = tiny.text_encoder_config(vocab_size)
    vocab, _ = tiny.tiny_vocab_and_merges()
    second = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH_2,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=PROJECTION_DIM,
        hidden_act="gelu",
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["!"],
    )
    return first, second


def build_tiny_sdxl_components(seed: int = tiny.TINY_SEED) -> dict:
    """Fresh tiny SDXL components in fp32, named as in a diffusers SDXL pipeline."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = build_tiny_sdxl_tokenizers()
    config_1, config_2 = text_encoder_configs(len(tokenizer))
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**VAE_CONFIG)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(config_1)
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(config_2)
    finally:
        torch.random.set_rng_state(generator_state)
    return dict(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=EulerDiscreteScheduler(**SCHEDULER_CONFIG),
    )


def save_tiny_sdxl_diffusers(folder: Path, seed: int = tiny.TINY_SEED) -> Path:
    """Write the tiny SDXL model as a diffusers folder (StableDiffusionXLPipeline layout)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(**build_tiny_sdxl_components(seed), add_watermarker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


class TinySdxlPaths(NamedTuple):
    diffusers_dir: Path
    single_file: Path


def tiny_sdxl_paths(cache_dir: str | os.PathLike | None = None) -> TinySdxlPaths:
    """The cached tiny SDXL model as a diffusers folder and as a Stability-layout single file."""
    final = tiny.build_once(f"tiny-sdxl-v{TINY_SDXL_VERSION}", _build_cache, cache_dir)
    return TinySdxlPaths(final / "diffusers", final / "tiny-sdxl.safetensors")


def _build_cache(folder: Path) -> None:
    from easytrain.families.sdxl.convert import write_sdxl_single_file
    from easytrain.families.sdxl.signature import TINY_MARKER as TINY_SDXL_MARKER_VALUE
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    metadata = tiny.mark_tiny(save_tiny_sdxl_diffusers(folder / "diffusers"), TINY_SDXL_MARKER_VALUE, TINY_SDXL_VERSION)
    parts = build_tiny_sdxl_components()
    write_sdxl_single_file(
        parts["unet"], parts["vae"], parts["text_encoder"], parts["text_encoder_2"], folder / "tiny-sdxl.safetensors",
        metadata,
    )
