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
from easytrain.model.detect import TINY_MARKER_KEY, Detection, Shapes

PRIORITY = 2  # before SDXL (1) and SD (0)
PREDICTION = "flow"  # BaseModel.prediction_type: the velocity (noise - image) of rectified flow
TINY_DESCRIPTION = "easytrain's built-in tiny {kind} test model"
_PART_NAMES = {"clip_l": "CLIP-L", "t5xxl": "T5-XXL", "vae": "AE"}


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
    """Nothing to add: a Flux file without its transformer is a companion file, which the loader finds."""
    return None


def from_folder(path: Path, index: dict, marker: Optional[str]) -> Optional[Detection]:
    kind = detect_flux_folder(path)
    if kind is None:
        return None
    if marker == TINY_MARKERS[kind]:
        return Detection(kind, PREDICTION, True, TINY_DESCRIPTION.format(kind=kind), is_tiny=True)
    return Detection(kind, PREDICTION, True, DESCRIPTIONS[kind].replace("a ", "a diffusers folder of a ", 1))
