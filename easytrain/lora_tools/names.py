"""kohya module names <-> module paths, and the two UNet layouts (diffusers, Stability).

kohya names a module by its path with "." turned into "_", so turning a name back
into a path needs the words that carry their own underscore (``to_q``,
``transformer_blocks``...). SD1/SD2 LoRAs name UNet modules in the diffusers
layout, SDXL LoRAs in Stability's (the catalog's ``lora_layout``); the two are
related by model/convert.py's module map for a UNet config, which
``unet_config_from_keys`` reads off a checkpoint's keys.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Mapping

# Words of UNet, CLIP and OpenCLIP module paths that contain "_" themselves.
_WORDS = (
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "to_q", "to_k", "to_v", "to_out", "proj_in",
    "proj_out", "time_emb_proj", "conv_shortcut", "input_blocks", "output_blocks", "middle_block", "in_layers",
    "out_layers", "emb_layers", "skip_connection", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj",
    "text_model", "c_fc", "c_proj", "time_embedding", "add_embedding", "conv_in", "conv_out", "conv_norm_out",
    "time_embed", "label_emb", "linear_1", "linear_2",
)
_WORD_PATTERN = re.compile("|".join(sorted((re.escape(w.replace("_", ".")) for w in _WORDS), key=len, reverse=True)))

UNET = "lora_unet"
TEXT_PARTS = {"lora_te": "text_encoder", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}


def name_to_path(rest: str) -> str:
    """``down_blocks_0_attentions_0_proj_in`` -> ``down_blocks.0.attentions.0.proj_in``."""
    dotted = rest.replace("_", ".")
    return _WORD_PATTERN.sub(lambda m: m.group(0).replace(".", "_"), dotted)


def path_to_name(prefix: str, path: str) -> str:
    return f"{prefix}_{path}".replace(".", "_")


def split_name(name: str) -> tuple[str, str]:
    """(kohya prefix, module path): ``lora_te1_text_model_...`` -> (``lora_te1``, ``text_model....``)."""
    for prefix in sorted(TEXT_PARTS, key=len, reverse=True) + [UNET]:
        if name.startswith(prefix + "_"):
            return prefix, name_to_path(name[len(prefix) + 1:])
    raise KeyError(name)


# ---- UNet layouts -------------------------------------------------------------------------------

_RESNET_CHILDREN = ("conv1", "conv2", "time_emb_proj", "conv_shortcut")


def unet_config_from_keys(module_paths: Iterable[str]) -> dict:
    """layers_per_block and the block types of a UNet, read off its Stability-layout module paths."""
    paths = list(module_paths)
    slots = {int(m.group(1)) for p in paths if (m := re.match(r"input_blocks\.(\d+)\.", p))}
    downs = sorted(int(m.group(1)) for p in paths if (m := re.match(r"input_blocks\.(\d+)\.0\.op\b", p)))
    per_block = downs[0] - 1 if downs else 2
    levels = (max(slots) + 1) // (per_block + 1) if slots else 4
    has = lambda prefix: any(p.startswith(prefix) for p in paths)  # noqa: E731
    down_types = ["CrossAttnDownBlock2D" if has(f"input_blocks.{1 + i * (per_block + 1)}.1.") else "DownBlock2D"
                  for i in range(levels)]
    up_types = ["CrossAttnUpBlock2D" if has(f"output_blocks.{i * (per_block + 1)}.1.") and
                not has(f"output_blocks.{i * (per_block + 1)}.1.conv") else "UpBlock2D" for i in range(levels)]
    return {"layers_per_block": per_block, "down_block_types": down_types, "up_block_types": up_types}


def _diffusers_blocks(config: Mapping) -> list[str]:
    per_block, n = int(config["layers_per_block"]), len(config["down_block_types"])
    out = [f"mid_block.resnets.{j}.{c}" for j in (0, 1) for c in _RESNET_CHILDREN] + ["mid_block.attentions.0"]
    for i in range(n):
        for j in range(per_block):
            out += [f"down_blocks.{i}.resnets.{j}.{c}" for c in _RESNET_CHILDREN] + [f"down_blocks.{i}.attentions.{j}"]
        for j in range(per_block + 1):
            out += [f"up_blocks.{i}.resnets.{j}.{c}" for c in _RESNET_CHILDREN] + [f"up_blocks.{i}.attentions.{j}"]
        if i < n - 1:
            out += [f"down_blocks.{i}.downsamplers.0.conv", f"up_blocks.{i}.upsamplers.0.conv"]
    return out


@lru_cache(maxsize=8)
def _maps(config_key: tuple) -> tuple[dict[str, str], dict[str, str]]:
    """(diffusers -> Stability, Stability -> diffusers) for resnet convs, samplers and attention blocks."""
    from easytrain.families.sd.convert import unet_module_map

    config = {"layers_per_block": config_key[0], "down_block_types": list(config_key[1]),
              "up_block_types": list(config_key[2])}
    forward = unet_module_map(config, _diffusers_blocks(config))
    return forward, {v: k for k, v in forward.items()}


def _key(config: Mapping) -> tuple:
    return (int(config["layers_per_block"]), tuple(config["down_block_types"]), tuple(config["up_block_types"]))


def _translate(path: str, table: dict[str, str], attention_side: int) -> str | None:
    """Exact for resnet convs and samplers; attention blocks are prefixes whose insides keep their names."""
    if path in table:
        return table[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in table and "attentions." in (head, table[head])[attention_side]:
            return table[head] + "." + ".".join(parts[cut:])
    return None


def diffusers_to_stability(path: str, config: Mapping) -> str | None:
    """``down_blocks.1.attentions.0.proj_in`` -> ``input_blocks.4.1.proj_in`` (None: not a known module)."""
    return _translate(path, _maps(_key(config))[0], 0)


def stability_to_diffusers(path: str, config: Mapping) -> str | None:
    return _translate(path, _maps(_key(config))[1], 1)
