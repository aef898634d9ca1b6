"""Tell which Stable Diffusion architecture a base model is, without loading it.

Standard library only: the wizard calls this right after the user picks a
file, so it must be instant. A .safetensors file starts with an 8-byte
little-endian header length and a JSON header naming every tensor and its
shape; a diffusers folder has JSON configs; a zip-format .ckpt holds a pickle
whose opcodes can be read (never run) to list its key names.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from easytrain.errors import UserError

TINY_MARKER_KEY = "easytrain.model"  # safetensors metadata key / marker file key of the tiny model
TINY_MARKER_VALUE = "tiny-sd1"
TINY_SDXL_MARKER_VALUE = "tiny-sdxl"  # the tiny SDXL-shaped test model
TINY_MARKER_FILE = "easytrain_model.json"

_MAX_HEADER_BYTES = 100 * 1024 * 1024

_UNET_PREFIX = "model.diffusion_model."
_LORA_PATTERN = re.compile(
    r"^(lora_unet_|lora_te\d?_|lycoris_)|\.(lora_up|lora_down|lora_A|lora_B|hada_w1_a|lokr_w1)\b"
)
_SD1_TEXT_PREFIX = "cond_stage_model.transformer."
_SD2_TEXT_PREFIX = "cond_stage_model.model."
_SDXL_TEXT_PREFIX = "conditioner.embedders."
_MARKER_KEYS = ("v_pred", "ztsnr")  # dotless keys that still matter in a .ckpt's key list
_CROSS_ATTN_KEYS = (_UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",   # SD1/SD2
                    _UNET_PREFIX + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight")   # SDXL
_FAMILY_BY_CROSS_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
_SDXL_REFINER_TEXT_PREFIX = "conditioner.embedders.0.model."  # the refiner has bigG alone
# Other model families, by a key fragment only they have: named, not just "not a checkpoint".
_OTHER_FAMILIES = (("joint_blocks.", "an SD3 / SD3.5"), ("double_blocks.", "a Flux"))
CLIP_VOCAB_SIZE = 49408  # the real CLIP BPE's tokens, the only vocabulary a single file trains with
SUPPORTED_FAMILIES = "SD1.x, SD2.x and SDXL (Pony, Illustrious, NoobAI) checkpoints"


@dataclass(frozen=True)
class Detection:
    arch: str | None  # a catalog architecture id, or None when unknown
    prediction_type: str | None  # "epsilon" | "v_prediction" | None when unknown
    sure: bool
    description: str
    is_tiny: bool = False  # easytrain's own embedded tiny model
    zero_terminal_snr: bool = False  # trained with zero terminal SNR (NoobAI-style "ztsnr" key)


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, dict]  # key -> {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str]


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """The JSON header of a .safetensors file; UserError if the file is not one."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) < 8:
            raise UserError(f"{path}: too short to be a .safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len == 0 or header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise UserError(f"{path}: not a valid .safetensors file (its header length is impossible)")
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path}: not a valid .safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: not a valid .safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise UserError(f"{path}: not a valid .safetensors file (its metadata is not a JSON object)")
    needed = 8 + header_len + _data_end(header)
    if needed > size:
        raise UserError(f"{path}: the file is incomplete: its header needs {needed:,} bytes, the file has "
                        f"{size:,} (a download or copy that stopped early); get the file again")
    return SafetensorsHeader(tensors=header, metadata={str(k): str(v) for k, v in metadata.items()})


def _data_end(tensors: dict) -> int:
    """Where the last tensor's bytes end, counted from the end of the header."""
    end = 0
    for info in tensors.values():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
            end = max(end, offsets[1])
    return end


def detect_architecture(path: str | Path) -> Detection:
    """Detect SD1 / SD2 (512 or 768-v) / SDXL from a file or a diffusers folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"base model not found: {path}")
    if path.is_dir():
        return _detect_diffusers_folder(path)
    if not path.is_file():  # a pipe or a device would block the read, or never end
        raise UserError(f"{path}: not a regular file; the base model must be a .safetensors or .ckpt file "
                        "or a diffusers folder")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header = read_safetensors_header(path)
        shapes = {k: v.get("shape") for k, v in header.tensors.items() if isinstance(v, dict)}
        return _detect_from_keys(path, shapes, header.metadata)
    if suffix == ".ckpt":
        return _detect_ckpt(path)
    raise UserError(
        f"{path}: the base model must be a .safetensors or .ckpt file or a diffusers folder, "
        f"not a '{path.suffix or 'no extension'}' file"
    )


def _detect_from_keys(path: Path, shapes: dict[str, list | None], metadata: dict[str, str]) -> Detection:
    """Key layout decides the family; metadata, file name and a sidecar .yaml decide SD2's prediction type."""
    keys = shapes.keys()
    _refuse_non_checkpoints(path, keys)
    if metadata.get(TINY_MARKER_KEY) == TINY_MARKER_VALUE:
        return Detection("sd1", "epsilon", True, "easytrain's built-in tiny SD1-shaped test model", is_tiny=True)
    if metadata.get(TINY_MARKER_KEY) == TINY_SDXL_MARKER_VALUE:
        found = _sdxl_detection(keys, metadata)
        description = found.description.replace("SDXL (two text encoders)", "easytrain's built-in tiny SDXL-shaped test model")
        return replace(found, description=description, is_tiny=True)

    if any(k.startswith(_SDXL_TEXT_PREFIX) for k in keys):
        if any(k.startswith(_SDXL_REFINER_TEXT_PREFIX) for k in keys):
            raise UserError(f"{path}: this is the SDXL refiner (one OpenCLIP text encoder); LoRAs are trained "
                            "on SDXL base models and their fine-tunes: give one of those")
        return _sdxl_detection(keys, metadata)

    if any(k.startswith(_SD2_TEXT_PREFIX) for k in keys):
        return _sd2_detection(path, metadata, "SD 2.x (OpenCLIP ViT-H text encoder)")

    if any(k.startswith(_SD1_TEXT_PREFIX) for k in keys):
        _refuse_other_vocabularies(path, shapes)
        width = _token_embedding_width(shapes)
        if width in (None, 768):
            return Detection("sd1", "epsilon", True, "SD 1.x (CLIP ViT-L text encoder)")
        # The HF-CLIP text layout is SD1's alone; other sizes are small or experimental SD1-family models.
        return Detection("sd1", "epsilon", True, f"SD 1.x layout with a text width of {width} (not SD1.5's sizes)")

    # UNet without a text encoder: the cross-attention width still tells the family.
    for key in _CROSS_ATTN_KEYS:
        cross = shapes.get(key)
        if cross and len(cross) == 2 and cross[1] in _FAMILY_BY_CROSS_WIDTH:
            raise UserError(
                f"{path}: this {_FAMILY_BY_CROSS_WIDTH[cross[1]]} file has a UNet but no text encoder "
                "(no cond_stage_model.* or conditioner.* keys); give the full checkpoint you generate images with"
            )
    raise UserError(f"{path}: not a Stable Diffusion checkpoint (no text encoder keys found)")


def _sdxl_detection(keys, metadata: dict[str, str]) -> Detection:
    """NoobAI-style v-prediction files carry empty ``v_pred`` and often ``ztsnr`` keys."""
    v_pred = "v_pred" in keys or metadata.get("modelspec.prediction_type", "").lower().startswith("v")
    ztsnr = "ztsnr" in keys or metadata.get("ss_zero_terminal_snr", "").lower() == "true"
    description = "SDXL (two text encoders)"
    if v_pred:
        description += ", v-prediction"
    if ztsnr:
        description += ", zero terminal SNR"
    return Detection("sdxl-v" if v_pred else "sdxl", "v_prediction" if v_pred else "epsilon", True, description,
                     zero_terminal_snr=ztsnr)


def _refuse_non_checkpoints(path: Path, keys) -> None:
    keys = list(keys)
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
    if not any(k.startswith((_UNET_PREFIX, "model_ema.diffusion_model")) for k in keys):
        if any(k.startswith(("encoder.down", "decoder.up")) for k in keys):
            raise UserError(f"{path}: this looks like a VAE file, not a full base model")
        if any(k.startswith(("down_blocks.", "up_blocks.")) for k in keys):
            raise UserError(
                f"{path}: this looks like one part of a diffusers folder (UNet weights only); "
                "give the whole diffusers folder (the one with model_index.json) instead"
            )
        raise UserError(
            f"{path}: not a Stable Diffusion checkpoint: none of its {len(keys)} keys has the "
            f"'{_UNET_PREFIX}' prefix of a UNet (first key: {sorted(keys)[0]!r})"
        )


def _token_embedding_shape(shapes: dict[str, list | None]) -> tuple[int, int] | None:
    for key in (
        _SD1_TEXT_PREFIX + "text_model.embeddings.token_embedding.weight",
        _SD1_TEXT_PREFIX + "embeddings.token_embedding.weight",
    ):
        shape = shapes.get(key)
        if shape and len(shape) == 2:
            return int(shape[0]), int(shape[1])
    return None


def _token_embedding_width(shapes: dict[str, list | None]) -> int | None:
    shape = _token_embedding_shape(shapes)
    return shape[1] if shape else None


def _refuse_other_vocabularies(path: Path, shapes: dict[str, list | None]) -> None:
    """Train loads an SD1 single file only with CLIP's own tokenizer (model/infer.py): say so before it loads."""
    shape = _token_embedding_shape(shapes)
    if shape is not None and shape[0] != CLIP_VOCAB_SIZE:
        raise UserError(f"{path}: {other_vocabulary(shape[0])}")


def other_vocabulary(vocab: int) -> str:
    return (f"the text encoder has a {vocab}-token vocabulary; easytrain trains single-file models only with "
            f"CLIP's own {CLIP_VOCAB_SIZE}-token vocabulary. Save the model as a diffusers folder with its tokenizer/")


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


def _detect_ckpt(path: Path) -> Detection:
    """Read a zip-format .ckpt's pickle for its keys and shapes (model/ckpt_pickle.py); nothing in it runs."""
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not pickles:
                raise zipfile.BadZipFile("no data.pkl")
            data = zf.read(pickles[0])
    except (zipfile.BadZipFile, OSError):
        return Detection(None, None, False, "a .ckpt in the legacy format; its architecture is read when it is loaded")
    from easytrain.model.ckpt_pickle import read_ckpt

    shapes, others = read_ckpt(path, data)   # as train reads it: code and non-tensors are refused here
    if not any(k.startswith((_UNET_PREFIX, "model_ema.")) for k in shapes):
        raise UserError(f"{path}: not a Stable Diffusion checkpoint (no '{_UNET_PREFIX}' keys in it)")
    # a top-level {"easytrain.model": "tiny-sd1"} entry marks the tiny model saved as .ckpt (tiny-sdxl likewise)
    marker = others.get(TINY_MARKER_KEY)
    metadata = {TINY_MARKER_KEY: marker} if marker in (TINY_MARKER_VALUE, TINY_SDXL_MARKER_VALUE) else {}
    return _detect_from_keys(path, shapes, metadata)


def _detect_diffusers_folder(path: Path) -> Detection:
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise UserError(
            f"{path}: a folder must be a diffusers model folder (one with model_index.json); "
            "for a single file, give the .safetensors or .ckpt file itself"
        )
    index = _read_json(index_file)
    for weights in sorted(path.glob("*/*.safetensors")):  # an incomplete copy fails here, not after loading
        read_safetensors_header(weights)
    if (path / TINY_MARKER_FILE).is_file():
        marker = _read_json(path / TINY_MARKER_FILE)
        if marker.get(TINY_MARKER_KEY) == TINY_MARKER_VALUE:
            return Detection("sd1", "epsilon", True, "easytrain's built-in tiny SD1-shaped test model", is_tiny=True)
        if marker.get(TINY_MARKER_KEY) == TINY_SDXL_MARKER_VALUE:
            return Detection("sdxl", "epsilon", True, "easytrain's built-in tiny SDXL-shaped test model", is_tiny=True)
    unet_config_file = path / "unet" / "config.json"
    if not unet_config_file.is_file():
        pipeline = index.get("_class_name") if isinstance(index, dict) else None
        if (path / "transformer").is_dir() and isinstance(pipeline, str):  # SD3, Flux, PixArt, ...: no UNet
            raise UserError(f"{path}: this is a {pipeline} folder (a transformer, not a UNet); "
                            f"easytrain trains LoRAs for {SUPPORTED_FAMILIES}")
        raise UserError(f"{path}: diffusers folder without unet/config.json")
    unet = _read_json(unet_config_file)
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    scheduler = _read_json(scheduler_file) if scheduler_file.is_file() else {}
    prediction = scheduler.get("prediction_type", "epsilon") if scheduler_file.is_file() else None
    cross = unet.get("cross_attention_dim")
    is_xl = "text_encoder_2" in index or unet.get("addition_embed_type") == "text_time" or cross == 2048
    if is_xl:
        ztsnr = bool(scheduler.get("rescale_betas_zero_snr"))
        description = "SDXL diffusers folder" + (", v-prediction" if prediction == "v_prediction" else "")
        description += ", zero terminal SNR" if ztsnr else ""
        arch = "sdxl-v" if prediction == "v_prediction" else "sdxl"
        return Detection(arch, prediction or "epsilon", True, description, zero_terminal_snr=ztsnr)
    if cross == 1024:
        if prediction is None:
            return _sd2_detection(path, {}, "SD 2.x diffusers folder")
        arch = "sd2-v" if prediction == "v_prediction" else "sd2"
        return Detection(arch, prediction, True, f"SD 2.x diffusers folder, {prediction}")
    if cross == 768:
        return Detection("sd1", prediction or "epsilon", True, "SD 1.x diffusers folder")
    if prediction == "epsilon":  # small or experimental models: an SD1-style UNet predicting noise
        return Detection("sd1", "epsilon", True, f"SD 1.x-like diffusers folder (cross-attention width {cross})")
    return Detection("sd1", prediction or "epsilon", False, f"SD 1.x-like diffusers folder with cross-attention width {cross}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read this JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data
