"""SDXL's adapted layers and kohya's names for them.

kohya trains SDXL on its own UNet class, built in Stability's layout, so its
LoRA names are Stability module paths: ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``
is ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``, the mid block is
``middle_block_1``, up blocks are ``output_blocks``, resnet convs are ``in_layers_2`` /
``out_layers_3`` / ``emb_layers_1`` / ``skip_connection``. The layers chosen are
the SD rules of targets.py (Transformer2DModel, plus resnets and samplers with
conv layers); SDXL's proj_in/proj_out are Linear. The text encoders are
``lora_te1_`` (CLIP-L) and ``lora_te2_`` (bigG), named in the transformers layout.
kohya's default SDXL LoRA: 722 UNet + 72 TE1 + 192 TE2 modules; 788 UNet with conv layers.
"""

from __future__ import annotations

from torch import nn

from easytrain.families.sd.convert import unet_module_map
from easytrain.families.sd.targets import UNET_BLOCKS, UNET_CONV_BLOCKS
from easytrain.network.targets import (
    TEXT_ENCODER_BLOCKS, UNET_PREFIX, Target, collect, kohya_name, text_encoder_kohya_path,
)

TEXT_ENCODER_1_PREFIX = "lora_te1"
TEXT_ENCODER_2_PREFIX = "lora_te2"


def sdxl_unet_kohya_names(unet_config, paths) -> dict[str, str]:
    """diffusers UNet module path -> kohya's SDXL LoRA name (``lora_unet_input_blocks_4_1_...``)."""
    return {path: kohya_name(UNET_PREFIX, original) for path, original in unet_module_map(unet_config, paths).items()}


def sdxl_unet_targets(unet: nn.Module, *, with_convs: bool) -> list[Target]:
    blocks = UNET_BLOCKS + (UNET_CONV_BLOCKS if with_convs else ())
    found = collect(unet, blocks, with_convs=with_convs)
    names = sdxl_unet_kohya_names(unet.config, [path for path, _ in found])
    return [Target("unet", path, kind, names[path]) for path, kind in found]


def sdxl_text_encoder_targets(text_encoder: nn.Module, second: bool) -> list[Target]:
    """Targets of CLIP-L (``second`` False, ``lora_te1_``) or bigG (True, ``lora_te2_``)."""
    part, prefix = ("text_encoder_2", TEXT_ENCODER_2_PREFIX) if second else ("text_encoder", TEXT_ENCODER_1_PREFIX)
    return [
        Target(part, path, kind, kohya_name(prefix, text_encoder_kohya_path(path)))
        for path, kind in collect(text_encoder, TEXT_ENCODER_BLOCKS, with_convs=False)
    ]
