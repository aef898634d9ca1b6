"""Which architecture a LoRA file is for: from its metadata when it says, else from its keys and widths.

Metadata: ``ss_base_model_version`` (kohya), ``modelspec.architecture`` and
``modelspec.prediction_type``, ``ss_v2``. Keys: ``lora_te1_``/``lora_te2_`` and
Stability-layout UNet names (``input_blocks``) are SDXL's; otherwise the
cross-attention width of ``attn2.to_k`` (or the text encoder's width) tells SD1
(768) from SD2 (1024) and SDXL (2048), as model/detect.py tells checkpoints apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from easytrain import catalog
from easytrain.lora_tools.files import LoraFile

# kohya's ss_base_model_version per cross-attention (= text) width of a full-size model
_VERSION_BY_WIDTH = {768: "sd_v1", 1024: "sd_v2", 2048: "sdxl_base_v1-0"}


@dataclass(frozen=True)
class LoraArch:
    arch: str | None   # catalog id, None when nothing tells
    evidence: str      # how it was told

    @property
    def label(self) -> str:
        return catalog.architecture_label(self.arch) if self.arch else "unknown architecture"


def _by_version(version: str, v_pred: bool) -> str | None:
    found = [a for a in catalog.ARCHITECTURES.values() if a.base_model_version == version]
    for entry in found:
        if catalog.predicts_velocity(entry.id) == v_pred:
            return entry.id
    return found[0].id if found else None


def _by_modelspec(value: str, v_pred: bool) -> str | None:
    base = value.removesuffix("/lora")
    found = [a for a in catalog.ARCHITECTURES.values() if a.modelspec == base]
    for entry in found:
        if catalog.predicts_velocity(entry.id) == v_pred:
            return entry.id
    return found[0].id if found else None


def _stability_arch() -> str | None:
    return next((a.id for a in catalog.ARCHITECTURES.values() if a.lora_layout == catalog.STABILITY_LAYOUT), None)


def _width(lora: LoraFile) -> int | None:
    for name, module in lora.modules.items():
        if name.endswith("attn2_to_k") and "lora_down.weight" in module.tensors:
            return int(module.tensors["lora_down.weight"].shape[1])
    for name, module in lora.modules.items():
        if name.startswith("lora_te_") and name.endswith("self_attn_q_proj") and "lora_down.weight" in module.tensors:
            return int(module.tensors["lora_down.weight"].shape[1])
    return None


def stability_names(lora: LoraFile) -> bool:
    """True when the UNet modules (or two text encoders) are named as in SDXL's files."""
    return any(n.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block",
                             "lora_te1_", "lora_te2_")) for n in lora.modules)


def identify(lora: LoraFile) -> LoraArch:
    md = lora.metadata
    v_pred = md.get("modelspec.prediction_type", "").lower().startswith("v") or \
        md.get("ss_v_parameterization", "").lower() == "true"
    if md.get("ss_base_model_version"):
        arch = _by_version(md["ss_base_model_version"], v_pred)
        if arch:
            return LoraArch(arch, f"metadata ss_base_model_version {md['ss_base_model_version']}")
    if md.get("modelspec.architecture"):
        arch = _by_modelspec(md["modelspec.architecture"], v_pred)
        if arch:
            return LoraArch(arch, f"metadata modelspec.architecture {md['modelspec.architecture']}")
    if stability_names(lora):
        return LoraArch(_stability_arch(), "keys: lora_te1_/lora_te2_ or Stability-layout UNet names")
    width = _width(lora)
    if width in _VERSION_BY_WIDTH:
        v2 = md.get("ss_v2", "").lower() == "true"
        arch = _by_version(_VERSION_BY_WIDTH[width], v_pred and v2)
        return LoraArch(arch, f"keys: text/cross-attention width {width}")
    return LoraArch(None, "neither the metadata nor the layer widths name it"
                    + (f" (cross-attention width {width})" if width else ""))


def arch_from_width(width: int | None) -> str | None:
    """The architecture of a full-size model whose cross-attention is ``width`` wide, if one is."""
    version = _VERSION_BY_WIDTH.get(width) if width is not None else None
    return _by_version(version, False) if version else None


def arch_from_metadata(metadata: dict[str, str]) -> str | None:
    v_pred = metadata.get("modelspec.prediction_type", "").lower().startswith("v")
    if metadata.get("ss_base_model_version"):
        return _by_version(metadata["ss_base_model_version"], v_pred)
    if metadata.get("modelspec.architecture"):
        return _by_modelspec(metadata["modelspec.architecture"], v_pred)
    return None
