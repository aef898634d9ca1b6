"""Tell Flux.1 dev, Flux.1 schnell and Chroma apart from a file's key names. Standard library only.

The wizard calls this right after the user picks a file, so nothing heavy is imported here. Black
Forest Labs' layout (ComfyUI's ``models/diffusion_models``): ``double_blocks.N.*``, ``single_blocks.N.*``;
dev has ``guidance_in``, schnell does not; Chroma (Flux-schnell based) has ``distilled_guidance_layer``
instead of ``time_in``/``vector_in``/``guidance_in``. The keys may carry ``model.diffusion_model.``
(all-in-one files, some exports). A diffusers transformer (``transformer_blocks``,
``single_transformer_blocks``, ``x_embedder``) is told apart the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Optional, TypeVar

FLUX_DEV = "flux-dev"
FLUX_SCHNELL = "flux-schnell"
CHROMA = "chroma"
KINDS = (FLUX_DEV, FLUX_SCHNELL, CHROMA)

DESCRIPTIONS = {
    FLUX_DEV: "a Flux.1 [dev] model (12B, guidance-distilled; CLIP-L + T5-XXL, 16-channel AE)",
    FLUX_SCHNELL: "a Flux.1 [schnell] model (12B, timestep-distilled; CLIP-L + T5-XXL, 16-channel AE)",
    CHROMA: "a Chroma model (8.9B, Flux.1 [schnell] based; T5-XXL only, 16-channel AE)",
}

# the TINY_MARKER_KEY ("easytrain.model") values of easytrain's tiny models made in code (tiny.py)
TINY_MARKERS = {FLUX_DEV: "tiny-flux-dev", FLUX_SCHNELL: "tiny-flux-schnell", CHROMA: "tiny-chroma"}

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")  # tried in this order
TRANSFORMER_PREFIX = PREFIXES[0]
# the all-in-one layout (ComfyUI's "checkpoint" Flux files): everything besides the transformer
CLIP_L_PREFIX = "text_encoders.clip_l.transformer."
T5XXL_PREFIX = "text_encoders.t5xxl.transformer."
VAE_PREFIX = "vae."

_T = TypeVar("_T")


def transformer_prefix(keys: Iterable[str]) -> str:
    """The prefix in front of the BFL transformer keys ("" when none)."""
    keys = list(keys)
    for prefix in PREFIXES:
        if any(k.startswith(prefix + "double_blocks.") for k in keys):
            return prefix
    return ""


def strip_prefix(tensors: Mapping[str, _T]) -> dict[str, _T]:
    """The transformer's entries of a BFL-layout mapping, under their bare names (``img_in.weight``)."""
    prefix = transformer_prefix(tensors)
    if not prefix:
        return dict(tensors)
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def detect_flux(tensors: Mapping[str, object]) -> Optional[str]:
    """"flux-dev", "flux-schnell", "chroma" or None from a header's keys (values are not looked at)."""
    keys = list(tensors)
    prefix = transformer_prefix(keys)
    names = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    bfl = any(n.startswith("double_blocks.") for n in names) and any(n.startswith("img_in.") for n in names)
    diffusers = (any(n.startswith("single_transformer_blocks.") for n in names)
                 and any(n.startswith("x_embedder.") for n in names))
    if not (bfl or diffusers):
        return None
    if any(n.startswith("distilled_guidance_layer.") for n in names):
        return CHROMA
    guidance = "guidance_in." if bfl else "time_text_embed.guidance_embedder."
    return FLUX_DEV if any(n.startswith(guidance) for n in names) else FLUX_SCHNELL


def describe_flux(kind: str) -> str:
    return DESCRIPTIONS[kind]


def file_parts(tensors: Mapping[str, object]) -> tuple[str, ...]:
    """Which components a single file carries: "transformer", "clip_l", "t5xxl", "vae" (all-in-one files)."""
    keys = list(tensors)
    parts = []
    if detect_flux(tensors):
        parts.append("transformer")
    for name, prefix in (("clip_l", CLIP_L_PREFIX), ("t5xxl", T5XXL_PREFIX), ("vae", VAE_PREFIX)):
        if any(k.startswith(prefix) for k in keys):
            parts.append(name)
    return tuple(parts)


def detect_flux_folder(folder: str | Path) -> Optional[str]:
    """The kind of a diffusers Flux/Chroma folder from its JSON configs, or None."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        transformer = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = str(transformer.get("_class_name", ""))
    if name == "ChromaTransformer2DModel" or index.get("_class_name") == "ChromaPipeline":
        return CHROMA
    if name != "FluxTransformer2DModel":
        return None
    return FLUX_DEV if transformer.get("guidance_embeds") else FLUX_SCHNELL
