"""Does a separate VAE fit the base model? Read from headers and configs, never from the weights.

Standard library only (like detect.py): `check`, `train` and the wizard call it
before anything heavy loads. A VAE may come as a standalone file in the
original layout (`encoder.down.0.block.0...`, as A1111 ships them), a full
checkpoint (`first_stage_model.` keys), a file in the diffusers layout
(`encoder.down_blocks.0.resnets.0...`), a diffusers VAE folder (config.json)
or a whole diffusers model folder (its vae/). Its latent channels and block
widths must equal those of the base model's own VAE.
"""

from __future__ import annotations

import json
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.model.detect import read_safetensors_header

BUILTIN_TINY = "builtin:tiny"
PREFIXES = ("first_stage_model.", "vae.")
LATENT_KEY = "decoder.conv_in.weight"  # [channels, latent channels, 3, 3] in both layouts
_LORA_MARKERS = ("lora_", "lora_up", "lora_down", "hada_", "lokr_")
OTHER_FAMILIES = "SD3 and Flux VAEs have 16 latent channels"


@dataclass(frozen=True)
class VaeShape:
    latent_channels: Optional[int]  # None: not readable without loading (a .ckpt)
    block_out_channels: Optional[tuple[int, ...]]
    source: str  # the tensor key or config file the numbers were read from


def vae_shape(path: Path) -> VaeShape:
    """The shape of the VAE in ``path``; UserError when it holds no VAE."""
    if path.is_dir():
        return _folder_shape(path)
    if not path.is_file():
        raise UserError(f"{path}: not found")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header = read_safetensors_header(path)
        return _shape_from_keys(path, {k: v.get("shape") for k, v in header.tensors.items() if isinstance(v, dict)})
    if suffix in (".ckpt", ".pt", ".pth"):
        keys = _pickle_keys(path)
        if keys is None:  # the legacy (not zip) format: its keys show when it loads
            return VaeShape(None, None, "a legacy-format file")
        return _shape_from_keys(path, {key: None for key in keys})
    raise UserError(f"{path}: a VAE is a .safetensors, .ckpt or .pt file or a diffusers folder, "
                    f"not a '{path.suffix or 'no extension'}' file")


def base_vae_shape(base_model: str) -> Optional[VaeShape]:
    """The shape of the base model's own VAE; None when only loading can tell (a .ckpt)."""
    if base_model == BUILTIN_TINY:
        from easytrain.families.sd import tiny

        return VaeShape(tiny.VAE_CONFIG["latent_channels"], tuple(tiny.VAE_CONFIG["block_out_channels"]),
                        "easytrain's tiny model")
    path = Path(base_model)
    if path.is_dir():
        return _folder_shape(path)
    if path.suffix.lower() != ".safetensors":
        return None
    header = read_safetensors_header(path)
    shapes = {k[len(PREFIXES[0]):]: v.get("shape") for k, v in header.tensors.items()
              if isinstance(v, dict) and k.startswith(PREFIXES[0])}
    return _shape_from_keys(path, shapes) if shapes else None


def check_vae_fits(vae: str | Path, base_model: str, key: str = "vae") -> str:
    """A line saying the VAE fits; raises UserError naming ``key`` and the tensor when it does not.

    ``vae`` and ``base_model`` are resolved paths or "builtin:tiny".
    """
    try:
        found = base_vae_shape(BUILTIN_TINY) if str(vae) == BUILTIN_TINY else vae_shape(Path(vae))
    except UserError as exc:
        raise UserError(f"{key}: {exc}") from None
    base = base_vae_shape(base_model)
    if base is None or found.latent_channels is None or base.latent_channels is None:
        return f"{vae} (its fit is checked when it loads)"
    if found.latent_channels != base.latent_channels:
        raise UserError(
            f"{key}: {vae}: its latents have {found.latent_channels} channels ({found.source}); the base model's "
            f"VAE has {base.latent_channels}: this VAE belongs to another model family ({OTHER_FAMILIES})")
    if found.block_out_channels and base.block_out_channels and found.block_out_channels != base.block_out_channels:
        raise UserError(
            f"{key}: {vae}: its encoder blocks are {list(found.block_out_channels)} channels wide "
            f"({found.source}); the base model's VAE has {list(base.block_out_channels)}: not a VAE for this model")
    return f"{vae} ({found.latent_channels} latent channels, fits the base model)"


def _shape_from_keys(path: Path, shapes: dict) -> VaeShape:
    keys = list(shapes)
    if any(marker in k for k in keys for marker in _LORA_MARKERS):
        raise UserError(f"{path}: this looks like a LoRA ({keys[0]}...), not a VAE")
    for prefix in PREFIXES:
        if any(k.startswith(prefix + "decoder.") for k in keys):
            shapes = {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}
            break
    if not any(k.startswith("encoder.") for k in shapes) or not any(k.startswith("decoder.") for k in shapes):
        first = sorted(keys)[0] if keys else "none"
        raise UserError(f"{path}: not a VAE: no encoder.* and decoder.* keys (first key: {first})")
    latent = shapes.get(LATENT_KEY)
    if not latent:
        return VaeShape(None, None, LATENT_KEY)
    blocks = []
    for pattern in ("encoder.down.{}.block.0.conv2.weight", "encoder.down_blocks.{}.resnets.0.conv2.weight"):
        level = 0
        while shapes.get(pattern.format(level)):
            blocks.append(int(shapes[pattern.format(level)][0]))
            level += 1
        if blocks:
            break
    return VaeShape(int(latent[1]), tuple(blocks) or None, f"{LATENT_KEY} is {list(latent)}")


def _folder_shape(path: Path) -> VaeShape:
    config_path = path / "vae" / "config.json" if (path / "model_index.json").is_file() else path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path}: a VAE folder needs a readable config.json ({config_path} is missing or "
                        "not JSON)") from None
    if not isinstance(config, dict) or "latent_channels" not in config:
        raise UserError(f"{config_path}: not a VAE config (no latent_channels)")
    blocks = config.get("block_out_channels")
    return VaeShape(int(config["latent_channels"]), tuple(blocks) if blocks else None, str(config_path))


def _pickle_keys(path: Path) -> Optional[set[str]]:
    """Key names in a zip-format .ckpt/.pt, read from its pickle's opcodes (nothing runs); None otherwise."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            data = zf.read(name)
    except (zipfile.BadZipFile, OSError, StopIteration):
        return None
    keys: set[str] = set()
    try:
        for _opcode, arg, _pos in pickletools.genops(data):
            if isinstance(arg, str) and "." in arg and " " not in arg:
                keys.add(arg)
    except Exception:  # a damaged pickle: keep what was read before the damage
        pass
    return keys
