"""How an SDXL file or folder is recognised (standard library only); NoobAI-style v-pred and ztsnr marks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.model.detect import TINY_MARKER_KEY, UNET_PREFIX, Detection, Shapes, read_json

TINY_MARKER = "tiny-sdxl"  # the tiny SDXL-shaped test model
TINY_DESCRIPTION = "easytrain's built-in tiny SDXL-shaped test model"
TEXT_PREFIX = "conditioner.embedders."
REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."  # the refiner has bigG alone
_CROSS_ATTN_KEY = UNET_PREFIX + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
_CROSS_WIDTH = 2048
_DESCRIPTION = "SDXL (two text encoders)"
# Its diffusers folders have a UNet like SD1/SD2's, whose signature takes any UNet folder: ask this one first.
PRIORITY = 1


def from_keys(path: Path, shapes: Shapes, metadata: dict[str, str]) -> Optional[Detection]:
    keys = shapes.keys()
    if metadata.get(TINY_MARKER_KEY) == TINY_MARKER:
        found = _detection(keys, metadata)
        return replace(found, description=found.description.replace(_DESCRIPTION, TINY_DESCRIPTION), is_tiny=True)
    if not any(k.startswith(TEXT_PREFIX) for k in keys):
        return None
    if any(k.startswith(REFINER_TEXT_PREFIX) for k in keys):
        raise UserError(f"{path}: this is the SDXL refiner (one OpenCLIP text encoder); LoRAs are trained "
                        "on SDXL base models and their fine-tunes: give one of those")
    return _detection(keys, metadata)


def explain_partial(path: Path, shapes: Shapes) -> None:
    cross = shapes.get(_CROSS_ATTN_KEY)
    if cross and len(cross) == 2 and cross[1] == _CROSS_WIDTH:
        raise UserError(
            f"{path}: this SDXL file has a UNet but no text encoder "
            "(no cond_stage_model.* or conditioner.* keys); give the full checkpoint you generate images with"
        )


def from_folder(path: Path, index: dict, marker: Optional[str]) -> Optional[Detection]:
    if marker == TINY_MARKER:
        return Detection("sdxl", "epsilon", True, TINY_DESCRIPTION, is_tiny=True)
    unet_config_file = path / "unet" / "config.json"
    if not unet_config_file.is_file():
        return None
    unet = read_json(unet_config_file)
    if not ("text_encoder_2" in index or unet.get("addition_embed_type") == "text_time"
            or unet.get("cross_attention_dim") == _CROSS_WIDTH):
        return None
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    scheduler = read_json(scheduler_file) if scheduler_file.is_file() else {}
    prediction = scheduler.get("prediction_type", "epsilon") if scheduler_file.is_file() else None
    ztsnr = bool(scheduler.get("rescale_betas_zero_snr"))
    description = "SDXL diffusers folder" + (", v-prediction" if prediction == "v_prediction" else "")
    description += ", zero terminal SNR" if ztsnr else ""
    arch = "sdxl-v" if prediction == "v_prediction" else "sdxl"
    return Detection(arch, prediction or "epsilon", True, description, zero_terminal_snr=ztsnr)


def _detection(keys, metadata: dict[str, str]) -> Detection:
    """NoobAI-style v-prediction files carry empty ``v_pred`` and often ``ztsnr`` keys."""
    v_pred = "v_pred" in keys or metadata.get("modelspec.prediction_type", "").lower().startswith("v")
    ztsnr = "ztsnr" in keys or metadata.get("ss_zero_terminal_snr", "").lower() == "true"
    description = _DESCRIPTION
    if v_pred:
        description += ", v-prediction"
    if ztsnr:
        description += ", zero terminal SNR"
    return Detection("sdxl-v" if v_pred else "sdxl", "v_prediction" if v_pred else "epsilon", True, description,
                     zero_terminal_snr=ztsnr)
