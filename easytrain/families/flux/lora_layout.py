"""What the LoRA file tools (easytrain/lora_tools) ask a family about its LoRA files (standard library only).

- ``identify(metadata, names)``: Flux.1 dev / schnell or Chroma, from kohya's metadata
  (``ss_base_model_version`` flux1 / chroma, ``modelspec.architecture`` flux-1-dev/lora, flux-1-schnell/lora,
  chroma/lora) or from the module names (``lora_unet_double_blocks_N_...`` / ``lora_unet_single_blocks_N_...``;
  no modulation layers is Chroma); None for a file that is none of them.
- ``owns(arch)``: whether a catalog id is Flux.1 or Chroma.
- ``part_label(name, arch)``: the part a module belongs to, for ``lora info``'s counts: the transformer's
  double and single blocks, CLIP-L (``lora_te1_`` on Flux.1), T5 (``lora_te3_``; ``lora_te1_`` on Chroma,
  as ComfyUI applies it).
- ``refusal(tool)``: why a tool does not take Flux files yet, or None. ``resize`` and ``merge`` of LoRAs are
  per-module and take them; merging into a checkpoint, extracting from one and the diffusers conversion
  read the SD/SDXL single-file layouts only.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Optional

FLUX_DEV, FLUX_SCHNELL, CHROMA = "flux-dev", "flux-schnell", "chroma"

_BY_MODELSPEC = {"flux-1-dev": FLUX_DEV, "flux-1-schnell": FLUX_SCHNELL, "chroma": CHROMA}
_BLOCK_NAME = re.compile(r"^lora_unet_(double|single)_blocks_\d+_")
_MODULATION = re.compile(r"^lora_unet_(double_blocks_\d+_(img|txt)_mod_lin|single_blocks_\d+_modulation_lin)$")

REFUSED = {
    "merge-checkpoint": "merging into a checkpoint reads the SD/SDXL single-file layouts; a Flux checkpoint "
                        "(BFL layout, text encoders in their own files) is not supported yet: load the LoRA "
                        "beside the model in ComfyUI or diffusers instead",
    "extract": "extracting reads the SD/SDXL single-file layouts; extracting a LoRA from a Flux checkpoint is "
               "not supported yet",
    "convert": "the diffusers conversion knows the SD/SDXL UNet layouts; a Flux LoRA in kohya's format loads "
               "as it is (ComfyUI, diffusers' FluxPipeline.load_lora_weights)",
}


def _from_metadata(metadata: Mapping[str, str]) -> Optional[tuple[str, str]]:
    spec = metadata.get("modelspec.architecture", "").removesuffix("/lora")
    if spec in _BY_MODELSPEC:
        return _BY_MODELSPEC[spec], f"metadata modelspec.architecture {metadata['modelspec.architecture']}"
    version = metadata.get("ss_base_model_version", "")
    if version == "chroma":
        return CHROMA, "metadata ss_base_model_version chroma"
    if version == "flux1":
        schnell = "schnell" in metadata.get("ss_sd_model_name", "").lower()
        return (FLUX_SCHNELL if schnell else FLUX_DEV), "metadata ss_base_model_version flux1" + (
            " (base model named schnell)" if schnell else "")
    return None


def identify(metadata: Mapping[str, str], names: Iterable[str]) -> Optional[tuple[str, str]]:
    """(catalog id, evidence) when the file is a Flux.1 or Chroma LoRA, else None."""
    found = _from_metadata(metadata)
    if found:
        return found
    names = list(names)
    blocks = [n for n in names if _BLOCK_NAME.match(n)]
    if not blocks:
        return None
    if any(_MODULATION.match(n) for n in blocks):
        return FLUX_DEV, "keys: lora_unet_double_blocks_/single_blocks_ with modulation layers (Flux.1; dev or " \
                         "schnell is not told by the keys)"
    if any(n.startswith("lora_te1_text_model_") for n in names):
        return FLUX_DEV, "keys: lora_unet_double_blocks_/single_blocks_ and CLIP-L (Flux.1)"
    return CHROMA, "keys: lora_unet_double_blocks_/single_blocks_ without modulation layers (Chroma)"


def owns(arch: Optional[str]) -> bool:
    """Whether ``arch`` is one of this family's (its LoRA files are the ones this module describes)."""
    return arch in (FLUX_DEV, FLUX_SCHNELL, CHROMA)


def part_label(name: str, arch: Optional[str]) -> Optional[str]:
    """The part ``name`` belongs to in a Flux / Chroma file, for counting; None for a name outside them."""
    if name.startswith("lora_unet_double_blocks_"):
        return "double blocks"
    if name.startswith("lora_unet_single_blocks_"):
        return "single blocks"
    if name.startswith("lora_unet_"):
        return "transformer (other)"
    if name.startswith("lora_te3_") or (arch == CHROMA and name.startswith("lora_te1_")):
        return "T5-XXL"
    if name.startswith("lora_te1_"):
        return "CLIP-L"
    return None


def refusal(tool: str) -> Optional[str]:
    """One line: why ``tool`` ("merge-checkpoint", "extract", "convert") does not take Flux files, or None."""
    return REFUSED.get(tool)
