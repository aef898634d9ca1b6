"""Find a Flux transformer's companion files (CLIP-L, T5-XXL, AE) where ComfyUI keeps them.

ComfyUI's tree: the transformer in ``models/diffusion_models`` or ``models/unet`` (or
``models/checkpoints``), the text encoders in ``models/text_encoders`` or ``models/clip``, the AE in
``models/vae``. Answers naming a file always win; an all-in-one file supplies its own parts; otherwise
each part is looked for in those folders and next to the model, by its usual names first
(``clip_l*.safetensors``, ``t5xxl*.safetensors`` preferring fp16 over fp8, ``ae.safetensors``), then by
what a file's header holds. Only headers are read (standard library).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from easytrain.errors import UserError
from easytrain.families.flux.detect import CHROMA

MODEL_FOLDERS = ("diffusion_models", "unet", "checkpoints")
TEXT_FOLDERS = ("text_encoders", "clip")
VAE_FOLDERS = ("vae",)
SUFFIXES = (".safetensors", ".sft")
LATENT_CHANNELS = 16

LABELS = {"clip_l": "CLIP-L text encoder", "t5xxl": "T5-XXL text encoder", "vae": "AE (VAE)"}
USUAL_NAMES = {"clip_l": "clip_l.safetensors", "t5xxl": "t5xxl_fp16.safetensors", "vae": "ae.safetensors"}


@dataclass
class Companions:
    """The files each part comes from; ``message`` says which were picked (empty when all were named)."""

    clip_l: Optional[Path]
    t5xxl: Path
    vae: Path
    files: dict = field(default_factory=dict)
    message: str = ""


def search_folders(model: Path, part: str) -> list[Path]:
    """Where ``part`` ("clip_l", "t5xxl", "vae") is looked for next to ``model``, in order."""
    here = model.parent
    folders = [here]
    roots = [here.parent] if here.name in MODEL_FOLDERS else []
    roots.append(here)  # four files in one folder with models/-style subfolders beside them
    names = VAE_FOLDERS if part == "vae" else TEXT_FOLDERS
    for root in roots:
        folders += [root / name for name in names]
    seen: list[Path] = []
    for folder in folders:
        if folder not in seen and folder.is_dir():
            seen.append(folder)
    return seen


def find_companions(model: Path, kind: str, *, clip_l=None, t5xxl=None, vae=None,
                    inside: Sequence[str] = ()) -> Companions:
    """The CLIP-L (None for Chroma), T5-XXL and AE files for the transformer ``model``."""
    answers = {"clip_l": clip_l, "t5xxl": t5xxl, "vae": vae}
    parts = ("t5xxl", "vae") if kind == CHROMA else ("clip_l", "t5xxl", "vae")
    chosen: dict[str, Path] = {}
    picked: list[str] = []
    for part in parts:
        if answers[part]:
            path = Path(answers[part]).expanduser()
            if not path.is_file():
                raise UserError(f"{part}: {path}: no such file")
            chosen[part] = path
        elif part in inside:
            chosen[part] = model
        else:
            folders = search_folders(model, part)
            found = _pick(part, folders, exclude=model)
            if found is None:
                where = ", ".join(str(f) for f in folders)
                raise UserError(f"{model.name}: no {LABELS[part]} ({USUAL_NAMES[part]}) found in {where}; "
                                f"set {part} in the answers to its file")
            chosen[part] = found
            picked.append(f"{LABELS[part]} {found}")
    message = ""
    if picked:
        message = (f"Picked for {model.name}: " + ", ".join(picked)
                   + " (name other files with " + ", ".join(p for p in parts if not answers[p] and p not in inside)
                   + " in the answers).")
    return Companions(chosen.get("clip_l"), chosen["t5xxl"], chosen["vae"],
                      {part: str(path) for part, path in chosen.items()}, message)


def _pick(part: str, folders: Sequence[Path], exclude: Path) -> Optional[Path]:
    candidates = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in SUFFIXES and path.is_file() and path.resolve() != exclude.resolve():
                candidates.append(path)
    named = sorted((p for p in candidates if _name_rank(part, p.name) is not None),
                   key=lambda p: _name_rank(part, p.name))
    for path in named + [p for p in candidates if p not in named]:
        if holds(path) == part:
            return path
    return None


def _name_rank(part: str, name: str) -> Optional[int]:
    """Lower is better; None when the name is not one this part usually has."""
    name = name.lower()
    if part == "clip_l":
        return 0 if name.startswith("clip_l") else (1 if "clip_l" in name or "clip-l" in name else None)
    if part == "t5xxl":
        if "t5" not in name:
            return None
        return 0 if "fp16" in name else 1 if ("bf16" in name or "fp32" in name) else 2 if "fp8" not in name else 3
    if part == "vae":
        return 0 if name in ("ae.safetensors", "ae.sft") else (1 if "ae" in name.split(".")[0] else None)
    return None


def holds(path: Path) -> Optional[str]:
    """What a standalone file is by its keys: "clip_l", "t5xxl", "vae", or None (unreadable, other)."""
    from easytrain.model.detect import read_safetensors_header

    try:
        tensors = read_safetensors_header(path).tensors
    except (UserError, OSError):
        return None
    for key, info in tensors.items():
        if key.endswith("text_model.embeddings.token_embedding.weight"):
            return "clip_l"
        if key.endswith("encoder.block.0.layer.0.SelfAttention.q.weight"):
            return "t5xxl"
        if key in ("encoder.conv_out.weight", "vae.encoder.conv_out.weight"):
            shape = info.get("shape") if isinstance(info, dict) else None
            return "vae" if shape and shape[0] == 2 * LATENT_CHANNELS else None  # not SD's 4-channel VAEs
    return None
