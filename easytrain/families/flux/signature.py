"""How a Flux.1 dev / schnell or Chroma file or folder is recognised (standard library only).

The seam's detection (families/detect.py) asks each family's signature in turn. A Flux transformer has
no UNet (no ``model.diffusion_model.input_blocks``) and no SD text encoder keys, so this signature is
asked before SD's and SDXL's (PRIORITY), and the file's companions are only named in the description.
The architecture ids are the kinds: "flux-dev", "flux-schnell", "chroma"; the denoiser predicts the flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from easytrain.families.flux.detect import (
    DESCRIPTIONS,
    TINY_MARKERS,
    detect_flux,
    detect_flux_folder,
    file_parts,
)
from easytrain.errors import UserError
from easytrain.model.detect import TINY_MARKER_KEY, Detection, Shapes

PRIORITY = 2  # before SDXL (1) and SD (0)
PREDICTION = "flow"  # BaseModel.prediction_type: the velocity (noise - image) of rectified flow
TINY_DESCRIPTION = "easytrain's built-in tiny {kind} test model"
_PART_NAMES = {"clip_l": "CLIP-L", "t5xxl": "T5-XXL", "vae": "AE"}
FLUX_PIPELINES = ("FluxPipeline", "ChromaPipeline", "FluxImg2ImgPipeline", "FluxKontextPipeline")


def from_keys(path: Path, shapes: Shapes, metadata: dict[str, str]) -> Optional[Detection]:
    kind = detect_flux(shapes)
    if kind is None:
        return None
    if metadata.get(TINY_MARKER_KEY) == TINY_MARKERS[kind]:
        return Detection(kind, PREDICTION, True, TINY_DESCRIPTION.format(kind=kind), is_tiny=True)
    inside = [_PART_NAMES[p] for p in file_parts(shapes) if p in _PART_NAMES]
    description = DESCRIPTIONS[kind] + (f"; this file also holds {', '.join(inside)}" if inside else "")
    return Detection(kind, PREDICTION, True, description)


def explain_partial(path: Path, shapes: Shapes) -> None:
    """Flux transformer keys that are not a whole transformer: an incomplete or cut file."""
    blocks = [k for k in shapes if "double_blocks." in k or "single_blocks." in k]
    if blocks:
        raise UserError(f"{path}: this holds Flux.1 transformer blocks ({blocks[0]}, ...) but not a whole "
                        f"transformer ({len(shapes)} tensors, a full one has 780); is the file complete?")


def from_folder(path: Path, index: dict, marker: Optional[str]) -> Optional[Detection]:
    kind = detect_flux_folder(path)
    if kind is None:
        if index.get("_class_name") in FLUX_PIPELINES:
            raise UserError(f"{path}: a diffusers {index['_class_name']} folder whose transformer/ easytrain "
                            "cannot read (no config.json or weights there); is the copy complete?")
        return None
    if marker == TINY_MARKERS[kind]:
        return Detection(kind, PREDICTION, True, TINY_DESCRIPTION.format(kind=kind), is_tiny=True)
    return Detection(kind, PREDICTION, True, DESCRIPTIONS[kind].replace("a ", "a diffusers folder of a ", 1))
