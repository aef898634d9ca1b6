"""How an SD1.x / SD2.x file or folder is recognised (standard library only)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.model.detect import TINY_MARKER_KEY, UNET_PREFIX, Detection, Shapes, read_json

TINY_MARKER = "tiny-sd1"  # the embedded tiny SD1-shaped model
TINY_DESCRIPTION = "easytrain's built-in tiny SD1-shaped test model"
SD1_TEXT_PREFIX = "cond_stage_model.transformer."
SD2_TEXT_PREFIX = "cond_stage_model.model."
_CROSS_ATTN_KEY = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_FAMILY_BY_CROSS_WIDTH = {768: "SD 1.x", 1024: "SD 2.x"}


def from_keys(path: Path, shapes: Shapes, metadata: dict[str, str]) -> Optional[Detection]:
    """SD2 by its OpenCLIP text keys, SD1 by its CLIP ones; SD2's prediction type from metadata or names."""
    if metadata.get(TINY_MARKER_KEY) == TINY_MARKER:
        return Detection("sd1", "epsilon", True, TINY_DESCRIPTION, is_tiny=True)
    keys = shapes.keys()
    if any(k.startswith(SD2_TEXT_PREFIX) for k in keys):
        return _sd2_detection(path, metadata, "SD 2.x (OpenCLIP ViT-H text encoder)")
    if any(k.startswith(SD1_TEXT_PREFIX) for k in keys):
        width = _token_embedding_width(shapes)
        if width in (None, 768):
            return Detection("sd1", "epsilon", True, "SD 1.x (CLIP ViT-L text encoder)")
        # The HF-CLIP text layout is SD1's alone; other sizes are small or experimental SD1-family models.
        return Detection("sd1", "epsilon", True, f"SD 1.x layout with a text width of {width} (not SD1.5's sizes)")
    return None


def explain_partial(path: Path, shapes: Shapes) -> None:
    """A UNet without its text encoder: the cross-attention width still tells the family."""
    cross = shapes.get(_CROSS_ATTN_KEY)
    if cross and len(cross) == 2 and cross[1] in _FAMILY_BY_CROSS_WIDTH:
        raise UserError(
            f"{path}: this {_FAMILY_BY_CROSS_WIDTH[cross[1]]} file has a UNet but no text encoder "
            "(no cond_stage_model.* or conditioner.* keys); give the full checkpoint you generate images with"
        )


def from_folder(path: Path, index: dict, marker: Optional[str]) -> Optional[Detection]:
    if marker == TINY_MARKER:
        return Detection("sd1", "epsilon", True, TINY_DESCRIPTION, is_tiny=True)
    unet_config_file = path / "unet" / "config.json"
    if not unet_config_file.is_file():
        return None
    unet = read_json(unet_config_file)
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    prediction = read_json(scheduler_file).get("prediction_type", "epsilon") if scheduler_file.is_file() else None
    cross = unet.get("cross_attention_dim")
    if cross == 1024:
        if prediction is None:
            return _sd2_detection(path, {}, "SD 2.x diffusers folder")
        arch = "sd2-v" if prediction == "v_prediction" else "sd2"
        return Detection(arch, prediction, True, f"SD 2.x diffusers folder, {prediction}")
    if cross == 768:
        return Detection("sd1", prediction or "epsilon", True, "SD 1.x diffusers folder")
    if prediction == "epsilon":  # small or experimental models: an SD1-style UNet predicting noise
        return Detection("sd1", "epsilon", True, f"SD 1.x-like diffusers folder (cross-attention width {cross})")
    return Detection("sd1", prediction or "epsilon", False,
                     f"SD 1.x-like diffusers folder with cross-attention width {cross}")


def _token_embedding_width(shapes: Shapes) -> int | None:
    for key in (
        SD1_TEXT_PREFIX + "text_model.embeddings.token_embedding.weight",
        SD1_TEXT_PREFIX + "embeddings.token_embedding.weight",
    ):
        shape = shapes.get(key)
        if shape and len(shape) == 2:
            return int(shape[1])
    return None


def _sd2_detection(path: Path, metadata: dict[str, str], family: str) -> Detection:
    hint = _v_prediction_hint(path, metadata)
    if hint is None:
        return Detection(
            "sd2", None, False,
            f"{family}; whether it is the 512 (epsilon) or the 768 v-prediction kind cannot be read from the weights",
        )
    v, reason = hint
    if v:
        return Detection("sd2-v", "v_prediction", True, f"{family}, 768 v-prediction ({reason})")
    return Detection("sd2", "epsilon", True, f"{family}, 512 epsilon ({reason})")


def _v_prediction_hint(path: Path, metadata: dict[str, str]) -> tuple[bool, str] | None:
    """(is_v, why) from metadata, a sidecar .yaml or the file name; None when nothing tells."""
    prediction = metadata.get("modelspec.prediction_type", "").lower()
    if prediction:
        return prediction.startswith("v"), "file metadata"
    if metadata.get("ss_v_parameterization") in ("True", "true"):
        return True, "file metadata"
    yaml = path.with_suffix(".yaml")
    if yaml.is_file():
        text = yaml.read_text(encoding="utf-8", errors="replace")
        is_v = re.search(r"""parameterization:\s*["']?v["']?\s*$""", text, re.MULTILINE) is not None
        return is_v, f"{yaml.name}"
    name = path.stem.lower()
    if "768" in name or re.search(r"(^|[-_ .])v($|[-_ .])|-v\b|vpred|v-pred|v_pred", name):
        return True, "file name"
    if "512" in name or "base" in name:
        return False, "file name"
    return None
