"""Where each LoRA module of a base checkpoint lives: kohya name -> key (and third of a fused q/k/v).

Built from the checkpoint's header alone (no weights read), for the single-file
layouts model/detect.py recognises:
- UNet ``model.diffusion_model.*`` (Stability layout): kohya's candidates are the
  Linear/Conv weights inside the transformer blocks (``*.1.proj_in``,
  ``transformer_blocks.N.attn1.to_q``...), and, for LoCon, the resnet convs and
  the down/up-samplers. The LoRA names them in the diffusers layout or in
  Stability's, as the catalog's ``lora_layout`` of the architecture says.
- Text encoders in the transformers CLIP layout (``...transformer.text_model.``)
  or in OpenCLIP's (``...model.transformer.resblocks.N``, q/k/v fused in
  ``attn.in_proj_weight``); one encoder is ``lora_te``, SDXL's two are
  ``lora_te1``/``lora_te2`` (``conditioner.embedders.0``/``.1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from easytrain import catalog
from easytrain.errors import UserError
from easytrain.lora_tools import names

UNET_KEY_PREFIX = "model.diffusion_model."
TRANSFORMER = "transformer"   # inside a transformer block: what every LoRA targets
CONV_BLOCK = "conv-block"     # resnet convs and samplers: LoCon's extra targets
TEXT = "text"

_TRANSFORMER_PATH = re.compile(
    r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.1\."
    r"(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))$")
_CONV_BLOCK_PATH = re.compile(
    r"^((input_blocks\.\d+\.0|middle_block\.[02]|output_blocks\.\d+\.0)\.(in_layers\.2|out_layers\.3|emb_layers\.1"
    r"|skip_connection)|input_blocks\.\d+\.0\.op|output_blocks\.\d+\.[12]\.conv)$")
_CLIP_MODULE = re.compile(r"^encoder\.layers\.(\d+)\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$")
_OPENCLIP_LAYER = re.compile(r"^transformer\.resblocks\.(\d+)\.")

# text encoder key prefixes, in the order of their kohya names when there are two
_CLIP_PREFIXES = ("conditioner.embedders.0.transformer.text_model.", "cond_stage_model.transformer.text_model.",
                  "cond_stage_model.transformer.")
_OPENCLIP_PREFIXES = ("conditioner.embedders.1.model.", "cond_stage_model.model.")
_SDXL_TEXT = "conditioner.embedders."


@dataclass(frozen=True)
class Slot:
    name: str            # the kohya module name a LoRA for this checkpoint uses
    key: str             # the checkpoint's weight key
    third: int | None    # q/k/v third of a fused OpenCLIP in_proj_weight, else None
    shape: tuple         # the module's weight shape (the third's, for a fused one)
    group: str           # TRANSFORMER, CONV_BLOCK or TEXT
    dtype: str           # safetensors dtype name of the key


@dataclass
class Layout:
    path: Path
    arch: str | None     # catalog id
    description: str
    slots: dict[str, Slot]
    unet_config: dict

    @property
    def family_label(self) -> str:
        return catalog.architecture_label(self.arch) if self.arch else "unknown"

    def by_key(self) -> dict[str, list[Slot]]:
        found: dict[str, list[Slot]] = {}
        for slot in self.slots.values():
            found.setdefault(slot.key, []).append(slot)
        return found


def checkpoint_layout(path: str | Path) -> Layout:
    """The module slots of a single-file .safetensors checkpoint; UserError when it is not one."""
    from easytrain.families.detect import detect_architecture
    from easytrain.model.detect import read_safetensors_header

    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{path}: a diffusers folder; the tools read single-file checkpoints (.safetensors)")
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{path}: the checkpoint must be a .safetensors file (a .ckpt cannot be streamed safely; "
                        "convert it to .safetensors first)")
    detection = detect_architecture(path)
    header = read_safetensors_header(path)
    return layout_from_header(path, header.tensors, detection.arch, detection.description)


def layout_from_header(path: Path, tensors: dict, arch: str | None, description: str) -> Layout:
    shapes = {k: tuple(v["shape"]) for k, v in tensors.items() if isinstance(v, dict) and "shape" in v}
    dtypes = {k: v["dtype"] for k, v in tensors.items() if isinstance(v, dict) and "dtype" in v}
    unet_paths = [k[len(UNET_KEY_PREFIX):-len(".weight")] for k in shapes
                  if k.startswith(UNET_KEY_PREFIX) and k.endswith(".weight")]
    config = names.unet_config_from_keys(unet_paths)
    stability_names = arch is not None and catalog.architecture(arch).lora_layout == catalog.STABILITY_LAYOUT
    slots: dict[str, Slot] = {}

    def add(name: str, key: str, third: int | None, group: str) -> None:
        shape = shapes[key]
        if third is not None:
            shape = (shape[0] // 3,) + shape[1:]
        slots[name] = Slot(name, key, third, shape, group, dtypes.get(key, ""))

    for path_ in unet_paths:
        key = f"{UNET_KEY_PREFIX}{path_}.weight"
        if len(shapes[key]) < 2:
            continue
        group = TRANSFORMER if _TRANSFORMER_PATH.match(path_) else CONV_BLOCK if _CONV_BLOCK_PATH.match(path_) else None
        if group is None:
            continue
        named = path_ if stability_names else names.stability_to_diffusers(path_, config)
        if named is not None:
            add(names.path_to_name(names.UNET, named), key, None, group)

    two_encoders = any(k.startswith(_SDXL_TEXT) for k in shapes)
    for prefix in _CLIP_PREFIXES:
        kohya = "lora_te1" if two_encoders else "lora_te"
        for key in shapes:
            if key.startswith(prefix) and key.endswith(".weight"):
                m = _CLIP_MODULE.match(key[len(prefix):-len(".weight")])
                if m:
                    add(names.path_to_name(kohya, "text_model." + m.group(0)), key, None, TEXT)
        if any(s.group == TEXT for s in slots.values()):
            break
    for prefix in _OPENCLIP_PREFIXES:
        from easytrain.families.sd.convert import openclip_source

        kohya = "lora_te2" if two_encoders else "lora_te"
        layers = sorted({int(m.group(1)) for k in shapes if k.startswith(prefix)
                         and (m := _OPENCLIP_LAYER.match(k[len(prefix):]))})
        for layer in layers:
            for module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                           "mlp.fc1", "mlp.fc2"):
                path_ = f"encoder.layers.{layer}.{module}"
                key, third = openclip_source(path_ + ".weight", prefix)
                if key in shapes:
                    add(names.path_to_name(kohya, "text_model." + path_), key, third, TEXT)
    return Layout(path, arch, description, slots, config)


def check_fits(layout: Layout, modules: dict, lora_label: str, lora_arch: str | None) -> None:
    """UserError (one line, the reason first) when a LoRA's modules do not belong to this checkpoint."""
    if lora_arch is not None and layout.arch is not None and not catalog.same_family(lora_arch, layout.arch):
        raise UserError(f"{lora_label} is a LoRA for {catalog.architecture_label(lora_arch)}, but the base "
                        f"{layout.path.name} is {layout.description}; use a base of the LoRA's architecture")
    missing = sorted(name for name in modules if name not in layout.slots)
    if missing:
        parts = sorted({names.split_name(n)[0] if n.startswith(("lora_unet_", "lora_te")) else n for n in missing})
        raise UserError(f"{lora_label}: {len(missing)} of its {len(modules)} modules have no layer in "
                        f"{layout.path.name} ({layout.description}), e.g. {missing[0]} (parts {', '.join(parts)}); "
                        "it was made for another architecture")
