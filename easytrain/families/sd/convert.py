"""Key names between diffusers models and the original (CompVis / A1111) single-file layout.

One name map per component, built from the model's config, serves both ways:
load.py reads a single file by asking, for each diffusers parameter, which
original key holds it; ``write_single_file`` writes diffusers models out under
the original names (used for the tiny model's single-file checkpoint).

UNet: ``down_blocks.{i}.resnets.{j}`` is ``input_blocks.{1 + i*(L+1) + j}.0``
(L = layers per block; slot 0 of input_blocks is conv_in), attentions sit at
``.1`` of the same slot, a downsampler takes the slot after the last layer;
up blocks have L+1 layers and count ``output_blocks`` from 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
CLIP_OLD_PREFIX = "cond_stage_model.transformer."  # older files: no "text_model." level
OPENCLIP_PREFIX = "cond_stage_model.model."

_RESNET_UNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)
_RESNET_VAE = (("conv_shortcut.", "nin_shortcut."),)
_ATTENTION_VAE = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


@dataclass(frozen=True)
class _Rule:
    diffusers: str  # prefix in the diffusers name
    original: str  # prefix in the original name
    inner: tuple[tuple[str, str], ...] = ()  # renames inside the block


def _apply(rules: list[_Rule], name: str, what: str) -> str:
    for rule in rules:
        if name.startswith(rule.diffusers):
            rest = name[len(rule.diffusers):]
            for old, new in rule.inner:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            return rule.original + rest
    raise KeyError(f"no original-layout name for {what} parameter {name!r}")


def _unet_rules(config: Mapping) -> list[_Rule]:
    per_block = int(config["layers_per_block"])
    down_types = list(config["down_block_types"])
    up_types = list(config["up_block_types"])
    n = len(down_types)
    rules = [
        _Rule("time_embedding.linear_1.", "time_embed.0."),
        _Rule("time_embedding.linear_2.", "time_embed.2."),
        _Rule("add_embedding.linear_1.", "label_emb.0.0."),
        _Rule("add_embedding.linear_2.", "label_emb.0.2."),
        _Rule("conv_in.", "input_blocks.0.0."),
        _Rule("conv_norm_out.", "out.0."),
        _Rule("conv_out.", "out.2."),
        _Rule("mid_block.resnets.0.", "middle_block.0.", _RESNET_UNET),
        _Rule("mid_block.attentions.0.", "middle_block.1."),
        _Rule("mid_block.resnets.1.", "middle_block.2.", _RESNET_UNET),
    ]
    for i in range(n):
        for j in range(per_block):
            slot = 1 + i * (per_block + 1) + j
            rules.append(_Rule(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{slot}.0.", _RESNET_UNET))
            rules.append(_Rule(f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{slot}.1."))
        if i < n - 1:
            slot = (i + 1) * (per_block + 1)
            rules.append(_Rule(f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{slot}.0.op."))
    for i in range(n):
        for j in range(per_block + 1):
            slot = i * (per_block + 1) + j
            rules.append(_Rule(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{slot}.0.", _RESNET_UNET))
            rules.append(_Rule(f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{slot}.1."))
        if i < n - 1:
            slot = i * (per_block + 1) + per_block
            position = 2 if up_types[i].startswith("CrossAttn") else 1
            rules.append(_Rule(f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{slot}.{position}."))
    return rules


def _vae_rules(config: Mapping) -> list[_Rule]:
    n = len(config["block_out_channels"])
    per_block = int(config["layers_per_block"])
    rules: list[_Rule] = []
    for part in ("encoder", "decoder"):
        rules += [
            _Rule(f"{part}.conv_norm_out.", f"{part}.norm_out."),
            _Rule(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _RESNET_VAE),
            _Rule(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _RESNET_VAE),
            _Rule(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _ATTENTION_VAE),
        ]
    for i in range(n):
        for j in range(per_block):
            rules.append(_Rule(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", _RESNET_VAE))
        if i < n - 1:
            rules.append(_Rule(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        for j in range(per_block + 1):
            rules.append(
                _Rule(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{n - 1 - i}.block.{j}.", _RESNET_VAE)
            )
        if i < n - 1:
            rules.append(_Rule(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample."))
    # the rest keeps its name: conv_in, conv_out, quant_conv, post_quant_conv
    for name in ("encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out.",
                 "quant_conv.", "post_quant_conv."):
        rules.append(_Rule(name, name))
    return rules


def unet_key_map(unet_config: Mapping, names) -> dict[str, str]:
    """diffusers UNet parameter name -> full original key (model.diffusion_model.*)."""
    rules = _unet_rules(unet_config)
    return {name: UNET_PREFIX + _apply(rules, name, "UNet") for name in names}


def unet_module_map(unet_config: Mapping, paths) -> dict[str, str]:
    """diffusers UNet module path -> the original layout's module path (``input_blocks.4.1.proj_in``)."""
    rules = _unet_rules(unet_config)
    return {path: _apply(rules, path + ".", "UNet").removesuffix(".") for path in paths}


def vae_key_map(vae_config: Mapping, names) -> dict[str, str]:
    """diffusers VAE parameter name -> full original key (first_stage_model.*)."""
    rules = _vae_rules(vae_config)
    return {name: VAE_PREFIX + _apply(rules, name, "VAE") for name in names}


def clip_key_map(names, prefix: str = CLIP_PREFIX) -> dict[str, str]:
    """transformers CLIPTextModel name (embeddings.*, encoder.layers.*) -> original key."""
    return {name: prefix + name.removeprefix("text_model.") for name in names}


def openclip_source(name: str, prefix: str = OPENCLIP_PREFIX) -> tuple[str, int | None]:
    """An OpenCLIP text encoder (SD2's, SDXL's second): (original key, which third of a fused q/k/v tensor or None)."""
    name = name.removeprefix("text_model.")
    fixed = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    }
    if name in fixed:
        return prefix + fixed[name], None
    parts = name.split(".")  # encoder.layers.N.<module>.<param>
    if parts[:2] != ["encoder", "layers"]:
        raise KeyError(f"no original-layout name for text encoder parameter {name!r}")
    layer, module, param = parts[2], ".".join(parts[3:-1]), parts[-1]
    base = f"{prefix}transformer.resblocks.{layer}."
    qkv = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
    if module in qkv:
        return f"{base}attn.in_proj_{param}", qkv[module]
    renamed = {
        "self_attn.out_proj": "attn.out_proj",
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    if module not in renamed:
        raise KeyError(f"no original-layout name for text encoder parameter {name!r}")
    return f"{base}{renamed[module]}.{param}", None


def original_tensors(model, key_map: Mapping[str, str], dtype=None) -> dict:
    """One model's tensors under their original keys (shared storage where nothing changes)."""
    result = {}
    for name, tensor in model.state_dict().items():
        target = key_map[name]
        if target.startswith(VAE_PREFIX) and ".mid.attn_1." in target and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the original VAE attention uses 1x1 convs
        tensor = tensor.detach()
        result[target] = (tensor.to(dtype) if dtype is not None else tensor).contiguous()
    return result


def unet_and_vae_tensors(unet, vae, dtype=None) -> dict:
    """The UNet and VAE part of a single file, the same in every architecture's layout."""
    return {
        **original_tensors(unet, unet_key_map(unet.config, unet.state_dict().keys()), dtype),
        **original_tensors(vae, vae_key_map(vae.config, vae.state_dict().keys()), dtype),
    }


def original_state_dict(unet, vae, text_encoder, dtype=None) -> dict:
    """An SD1-layout single-file state dict of diffusers/transformers models (shared storage, no copies)."""
    return {
        **unet_and_vae_tensors(unet, vae, dtype),
        **original_tensors(text_encoder, clip_key_map(text_encoder.state_dict().keys()), dtype),
    }


def write_single_file(unet, vae, text_encoder, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save SD1-style models as one .safetensors file in the original key layout (atomic)."""
    return save_state_file(original_state_dict(unet, vae, text_encoder), path, metadata)


def save_state_file(state: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a single-file state dict as .safetensors, atomically."""
    from safetensors.torch import save_file

    from easytrain.fsutil import atomic_path

    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=dict(metadata or {}))
    return Path(path)
