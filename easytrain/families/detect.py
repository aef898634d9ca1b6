"""Which architecture a base model is, without loading it: the families' signatures asked in turn.

Standard library only (the wizard detects right after the user picks a file).
What no family claims is explained: a LoRA, an embedding, a VAE, one part of a
diffusers folder, a model family easytrain does not train.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain import catalog
from easytrain.catalog import AUTO
from easytrain.errors import UserError
from easytrain.families.registry import signatures
from easytrain.model.detect import (
    TINY_MARKER_FILE, TINY_MARKER_KEY, UNET_PREFIX, Detection, Shapes, file_keys, read_json, read_safetensors_header,
)

BUILTIN_TINY = "builtin:tiny"  # the embedded tiny model: nothing to read

_LORA_PATTERN = re.compile(
    r"^(lora_unet_|lora_te\d?_|lycoris_)|\.(lora_up|lora_down|lora_A|lora_B|hada_w1_a|lokr_w1)\b"
)
# Model families easytrain does not train, by a key fragment only they have: named, not just "not a checkpoint".
_OTHER_FAMILIES = (("joint_blocks.", "an SD3 / SD3.5"), ("double_blocks.", "a Flux"))
SUPPORTED_FAMILIES = "SD1.x, SD2.x and SDXL (Pony, Illustrious, NoobAI) checkpoints"


def detect_architecture(path: str | Path) -> Detection:
    """The architecture of a single file (.safetensors, .ckpt) or a diffusers folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"base model not found: {path}")
    if path.is_dir():
        return _detect_folder(path)
    if not path.is_file():  # a pipe or a device would block the read, or never end
        raise UserError(f"{path}: not a regular file; the base model must be a .safetensors or .ckpt file "
                        "or a diffusers folder")
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".ckpt"):
        raise UserError(
            f"{path}: the base model must be a .safetensors or .ckpt file or a diffusers folder, "
            f"not a '{path.suffix or 'no extension'}' file"
        )
    shapes, metadata = file_keys(path)
    if suffix == ".ckpt":
        if not shapes:
            return Detection(None, None, False, "a .ckpt in the legacy format; its architecture is read when it is loaded")
        if not any(k.startswith((UNET_PREFIX, "model_ema.")) for k in shapes):
            raise UserError(f"{path}: not a Stable Diffusion checkpoint (no '{UNET_PREFIX}' keys in it)")
    return detect_from_keys(path, shapes, metadata)


def detect_from_keys(path: Path, shapes: Shapes, metadata: dict[str, str]) -> Detection:
    keys = list(shapes)
    _refuse_non_checkpoints(path, keys)
    for signature in signatures():
        found = signature.from_keys(path, shapes, metadata)
        if found is not None:
            return found
    for signature in signatures():
        signature.explain_partial(path, shapes)     # a part of a model some family knows: say which
    raise UserError(f"{path}: not a Stable Diffusion checkpoint (no text encoder keys found)")


def _refuse_non_checkpoints(path: Path, keys: list[str]) -> None:
    if not keys:
        raise UserError(f"{path}: the file holds no tensors; it is not a Stable Diffusion checkpoint")
    lora_keys = [k for k in keys if _LORA_PATTERN.search(k)]
    if lora_keys:
        raise UserError(
            f"{path}: this looks like a LoRA ({lora_keys[0].split('.')[0]}... keys), not a base model; "
            "give the checkpoint you generate images with"
        )
    for fragment, family in _OTHER_FAMILIES:
        if any(fragment in k for k in keys):
            raise UserError(f"{path}: this is {family} model; easytrain trains LoRAs for {SUPPORTED_FAMILIES}")
    if any(k in ("emb_params", "string_to_param") or k.startswith(("clip_l", "clip_g")) for k in keys) and len(keys) <= 4:
        raise UserError(f"{path}: this looks like a textual inversion embedding, not a base model")
    if not any(k.startswith((UNET_PREFIX, "model_ema.diffusion_model")) for k in keys):
        if any(k.startswith(("encoder.down", "decoder.up")) for k in keys):
            raise UserError(f"{path}: this looks like a VAE file, not a full base model")
        if any(k.startswith(("down_blocks.", "up_blocks.")) for k in keys):
            raise UserError(
                f"{path}: this looks like one part of a diffusers folder (UNet weights only); "
                "give the whole diffusers folder (the one with model_index.json) instead"
            )
        raise UserError(
            f"{path}: not a Stable Diffusion checkpoint: none of its {len(keys)} keys has the "
            f"'{UNET_PREFIX}' prefix of a UNet (first key: {sorted(keys)[0]!r})"
        )


def _detect_folder(path: Path) -> Detection:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise UserError(
            f"{path}: a folder must be a diffusers model folder (one with model_index.json); "
            "for a single file, give the .safetensors or .ckpt file itself"
        )
    index = read_json(index_file)
    for weights in sorted(path.glob("*/*.safetensors")):  # an incomplete copy fails here, not after loading
        read_safetensors_header(weights)
    marker = read_json(path / TINY_MARKER_FILE).get(TINY_MARKER_KEY) if (path / TINY_MARKER_FILE).is_file() else None
    for signature in signatures():
        found = signature.from_folder(path, index, marker)
        if found is not None:
            return found
    if not (path / "unet" / "config.json").is_file():
        pipeline = index.get("_class_name") if isinstance(index, dict) else None
        if (path / "transformer").is_dir() and isinstance(pipeline, str):  # SD3, Flux, PixArt, ...: no UNet
            raise UserError(f"{path}: this is a {pipeline} folder (a transformer, not a UNet); "
                            f"easytrain trains LoRAs for {SUPPORTED_FAMILIES}")
        raise UserError(f"{path}: diffusers folder without unet/config.json")
    raise UserError(f"{path}: a diffusers folder of no architecture easytrain knows")


@dataclass(frozen=True)
class Resolved:
    """The architecture a base model trains as: read from its header once, then carried in the plan."""

    arch: str                           # a catalog architecture id
    prediction_type: str                # what the file (or, when the answer names one, the catalog) says
    detection: Optional[Detection]      # what the header said; None for the embedded tiny model

    @property
    def tiny(self) -> bool:
        return self.detection is None or self.detection.is_tiny


def resolve_architecture(base_model: str, answer: str = AUTO) -> Resolved:
    """The architecture ``base_model`` trains as, given the answers' ``architecture`` ("auto" or an id).

    The one place the file's header and the answer meet: the plan, `check`, the
    wizard's defaults and the loader all take this. A UserError says what to set
    when the file cannot tell, or when the answer names another family.
    """
    if answer != AUTO and answer not in catalog.ARCHITECTURES:
        raise UserError(f"architecture: must be auto or one of {', '.join(catalog.ARCHITECTURE_IDS)}, got {answer!r}")
    if base_model == BUILTIN_TINY:
        arch = catalog.TINY_MODEL_ARCH
        return Resolved(arch, catalog.architecture(arch).prediction_type, None)
    path = Path(base_model).expanduser()
    detection = detect_architecture(path)
    if answer == AUTO:
        if detection.arch is None or not detection.sure:
            members = catalog.family_members(detection.arch) if detection.arch else ()
            choices = " or ".join(members) if len(members) > 1 else ", ".join(catalog.ARCHITECTURE_IDS)
            raise UserError(f"{path}: cannot tell the architecture for sure ({detection.description}); "
                            f"set architecture to {choices} in the answers")
        arch = detection.arch
    else:
        arch = answer
        if detection.arch is not None and not catalog.same_family(detection.arch, arch):
            raise UserError(f"{path}: architecture is set to {arch}, but the file is {detection.description}; "
                            f"set architecture to auto or {detection.arch}")
    if answer != AUTO or detection.prediction_type is None:
        prediction = catalog.architecture(arch).prediction_type
    else:
        prediction = detection.prediction_type
    return Resolved(arch, prediction, detection)
