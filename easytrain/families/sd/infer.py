"""Configs read off an SD1-layout single file whose sizes are not SD1.5's.

Models made by other code (small test models, pruned or experimental ones)
keep the original key layout but not the public sizes. Channel counts, block
structure, cross-attention width and text-encoder size are all visible in the
tensor shapes; the attention head count and group-norm groups are not, so the
usual conventions fill them (SD1: 8 heads; CLIP: 64-wide heads; 32 groups when
the channels allow).
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence

from easytrain.errors import UserError

Shapes = Mapping[str, Sequence[int]]
UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_VOCAB = 49408


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in shapes for m in [regex.match(key)] if m})


def _groups(channels: Sequence[int], preferred: int = 32) -> int:
    """The largest group count up to ``preferred`` that divides every channel count."""
    common = 0
    for c in channels:
        common = math.gcd(common, int(c))
    return max(g for g in range(1, preferred + 1) if common % g == 0)


def _heads(channels: int, preferred: int) -> int:
    return max(h for h in range(1, preferred + 1) if channels % h == 0)


def unet_config(shapes: Shapes) -> dict:
    conv_in = shapes[UNET + "input_blocks.0.0.weight"]
    blocks = _indices(shapes, re.escape(UNET) + r"input_blocks\.(\d+)\.")
    levels: list[list[int]] = [[]]
    for i in blocks[1:]:
        if UNET + f"input_blocks.{i}.0.op.weight" in shapes:
            levels.append([])
        else:
            levels[-1].append(i)
    channels = [shapes[UNET + f"input_blocks.{lvl[0]}.0.out_layers.3.weight"][0] for lvl in levels]
    attention = [UNET + f"input_blocks.{lvl[0]}.1.proj_in.weight" in shapes for lvl in levels]
    context_keys = [k for k in shapes if k.startswith(UNET) and k.endswith("attn2.to_k.weight")]
    if not context_keys:
        raise UserError("this single file's UNet has no cross-attention layers; it is not a text-to-image SD model")
    proj_in = next(k for k in shapes if k.startswith(UNET) and k.endswith(".proj_in.weight"))
    transformer_layers = len(_indices(shapes, re.escape(UNET) + r"input_blocks\.%d\.1\.transformer_blocks\.(\d+)\." %
                                      levels[attention.index(True)][0])) if any(attention) else 1
    return dict(
        sample_size=64,
        in_channels=conv_in[1],
        out_channels=shapes[UNET + "out.2.weight"][0],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        block_out_channels=tuple(channels),
        layers_per_block=len(levels[0]),
        cross_attention_dim=shapes[context_keys[0]][1],
        attention_head_dim=_heads(math.gcd(*channels), 8),
        use_linear_projection=len(shapes[proj_in]) == 2,
        transformer_layers_per_block=transformer_layers,
        norm_num_groups=_groups(channels),
    )


def vae_config(shapes: Shapes) -> dict:
    levels = _indices(shapes, re.escape(VAE) + r"encoder\.down\.(\d+)\.")
    channels = [shapes[VAE + f"encoder.down.{i}.block.0.conv2.weight"][0] for i in levels]
    per_level = _indices(shapes, re.escape(VAE) + r"encoder\.down\.0\.block\.(\d+)\.")
    return dict(
        in_channels=shapes[VAE + "encoder.conv_in.weight"][1],
        out_channels=shapes[VAE + "decoder.conv_out.weight"][0],
        down_block_types=("DownEncoderBlock2D",) * len(levels),
        up_block_types=("UpDecoderBlock2D",) * len(levels),
        block_out_channels=tuple(channels),
        layers_per_block=len(per_level),
        latent_channels=shapes[VAE + "encoder.conv_out.weight"][0] // 2,
        norm_num_groups=_groups(channels),
        sample_size=512,
        scaling_factor=0.18215,
    )


def text_encoder_config(shapes: Shapes, text_prefix: str, pad_token_id: int):
    from transformers import CLIPTextConfig

    token = shapes[text_prefix + "embeddings.token_embedding.weight"]
    vocab, hidden = token[0], token[1]
    if vocab != CLIP_VOCAB:
        raise UserError(
            f"the text encoder has a {vocab}-token vocabulary; easytrain trains single-file models only with "
            f"CLIP's own {CLIP_VOCAB}-token vocabulary. Save the model as a diffusers folder with its tokenizer/")
    layers = _indices(shapes, re.escape(text_prefix) + r"encoder\.layers\.(\d+)\.")
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=shapes[text_prefix + "encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=len(layers),
        num_attention_heads=hidden // 64 if hidden % 64 == 0 else _heads(hidden, max(1, hidden // 8)),
        max_position_embeddings=shapes[text_prefix + "embeddings.position_embedding.weight"][0],
        hidden_act="quick_gelu",
        projection_dim=hidden,
    )
    config.bos_token_id, config.eos_token_id, config.pad_token_id = 49406, 49407, pad_token_id
    return config


def sd1_text_prefix(shapes: Shapes) -> Optional[str]:
    for prefix in ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."):
        if prefix + "embeddings.token_embedding.weight" in shapes:
            return prefix
    return None
