"""Load a base model through the family its architecture belongs to, always offline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from easytrain.families.detect import BUILTIN_TINY, Resolved, resolve_architecture
from easytrain.families.registry import family_for
from easytrain.model.load import BaseModel
from easytrain.model.quiet import quiet_model_libraries


def load_base_model(spec: str, architecture: str = "auto", dtype: torch.dtype = torch.float32, *,
                    resolved: Optional[Resolved] = None) -> BaseModel:
    """Load "builtin:tiny", a .safetensors/.ckpt file or a diffusers folder, frozen and in eval mode.

    ``resolved`` is the plan's reading of the file (families/detect.py); without it the file's header is read
    here, with ``architecture`` ("auto" or a catalog id: the answer, which wins where the file cannot tell).
    """
    resolved = resolved or resolve_architecture(spec, architecture)
    quiet_model_libraries()
    family = family_for(resolved.arch)
    if spec == BUILTIN_TINY:
        return family.load_builtin_tiny(dtype)
    path = Path(spec).expanduser()
    return family.load(path, resolved.detection, resolved.arch, resolved.prediction_type, dtype)
