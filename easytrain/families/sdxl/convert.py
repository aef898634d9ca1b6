"""Key names between diffusers SDXL models and Stability's single-file layout.

The UNet and VAE keep the layout of SD1 files (``model.diffusion_model.*``,
``first_stage_model.*``; the added time/text embedding is ``label_emb.0.0`` /
``label_emb.0.2``), so convert.py's maps serve them. The two text encoders sit
under ``conditioner.embedders``:
- 0: CLIP ViT-L in the transformers layout, ``conditioner.embedders.0.transformer.text_model.*``;
- 1: OpenCLIP ViT-bigG in its own layout, ``conditioner.embedders.1.model.*``: fused
  ``attn.in_proj`` q/k/v, ``ln_final``, ``positional_embedding``, ``token_embedding``
  and ``text_projection``, which OpenCLIP applies as ``x @ P`` where a transformers
  Linear computes ``x @ W.T``: the stored tensor is the transpose of ``text_projection.weight``.
Both directions come from the same maps: the loader asks, for each diffusers
parameter, where it is stored; ``sdxl_original_state_dict`` writes the models out.
"""

from __future__ import annotations

from pathlib import Path

import torch

from easytrain.families.sd.convert import (
    clip_key_map,
    openclip_source,
    original_tensors,
    save_state_file,
    unet_and_vae_tensors,
    unet_key_map,
    vae_key_map,
)

CLIP_L_PREFIX = "conditioner.embedders.0.transformer.text_model."
BIGG_PREFIX = "conditioner.embedders.1.model."
TEXT_PROJECTION_KEY = BIGG_PREFIX + "text_projection"
# Keys real files carry that no diffusers parameter holds (a buffer, OpenCLIP's contrastive scale).
IGNORED_KEYS = (
    CLIP_L_PREFIX + "embeddings.position_ids",
    BIGG_PREFIX + "logit_scale",
)


def clip_l_key_map(names) -> dict[str, str]:
    """CLIPTextModel parameter name -> its key in an SDXL single file."""
    return clip_key_map(names, CLIP_L_PREFIX)


def bigg_source(name: str) -> tuple[str, int | None]:
    """CLIPTextModelWithProjection parameter name -> (key, third of a fused q/k/v tensor or None).

    ``text_projection.weight`` is stored transposed under TEXT_PROJECTION_KEY.
    """
    if name == "text_projection.weight":
        return TEXT_PROJECTION_KEY, None
    return openclip_source(name, BIGG_PREFIX)


def bigg_tensors(text_encoder_2, dtype=None) -> dict[str, torch.Tensor]:
    """The bigG encoder's tensors under their single-file keys, q/k/v fused, projection transposed."""
    thirds: dict[str, dict[int, torch.Tensor]] = {}
    result = {}
    for name, tensor in text_encoder_2.state_dict().items():
        key, third = bigg_source(name)
        tensor = tensor.detach()
        if key == TEXT_PROJECTION_KEY:
            tensor = tensor.T
        if third is None:
            result[key] = tensor
        else:
            thirds.setdefault(key, {})[third] = tensor
    for key, parts in thirds.items():
        if sorted(parts) != [0, 1, 2]:
            raise KeyError(f"{key}: the text encoder lacks part of its q/k/v projections")
        result[key] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return {key: (t.to(dtype) if dtype is not None else t).contiguous() for key, t in result.items()}


def sdxl_original_state_dict(unet, vae, text_encoder, text_encoder_2, dtype=None) -> dict[str, torch.Tensor]:
    """An SDXL single-file state dict in Stability's layout (works on meta-device models too)."""
    return {
        **unet_and_vae_tensors(unet, vae, dtype),
        **original_tensors(text_encoder, clip_l_key_map(text_encoder.state_dict().keys()), dtype),
        **bigg_tensors(text_encoder_2, dtype),
    }


def sdxl_source_keys(unet, vae, text_encoder, text_encoder_2) -> set[str]:
    """Every single-file key the four models are read from: a complete file holds these and IGNORED_KEYS only."""
    keys = set(unet_key_map(unet.config, unet.state_dict().keys()).values())
    keys |= set(vae_key_map(vae.config, vae.state_dict().keys()).values())
    keys |= set(clip_l_key_map(text_encoder.state_dict().keys()).values())
    keys |= {bigg_source(name)[0] for name in text_encoder_2.state_dict()}
    return keys


def write_sdxl_single_file(
    unet, vae, text_encoder, text_encoder_2, path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Save SDXL models as one .safetensors file in Stability's layout (atomic)."""
    return save_state_file(sdxl_original_state_dict(unet, vae, text_encoder, text_encoder_2), path, metadata)
