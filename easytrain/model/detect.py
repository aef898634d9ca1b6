"""What a base model file or folder holds, read without loading it: headers, key names, configs.

Standard library only: the wizard calls detection right after the user picks a
file, so it must be instant. A .safetensors file starts with an 8-byte
little-endian header length and a JSON header naming every tensor and its
shape; a diffusers folder has JSON configs; a zip-format .ckpt holds a pickle
whose opcodes can be read (never run) to list its key names. Which family a
file belongs to is decided by the families' signatures (families/detect.py).
"""

from __future__ import annotations

import json
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from easytrain.errors import UserError

TINY_MARKER_KEY = "easytrain.model"  # safetensors metadata key / marker file key of easytrain's tiny models
TINY_MARKER_FILE = "easytrain_model.json"
TINY_MARKER_PREFIX = "tiny-"  # every tiny model's marker value starts so ("tiny-sd1", "tiny-sdxl", ...)
UNET_PREFIX = "model.diffusion_model."  # the denoiser's prefix in A1111-style single files
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")  # Black Forest Labs' first releases used .sft

_MAX_HEADER_BYTES = 100 * 1024 * 1024

# Shapes by key (None where only the name is known, as in a .ckpt's pickle).
Shapes = dict[str, "list | None"]


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
    data_start: int = 0  # where the tensors' bytes begin in the file ("data_offsets" count from here)


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
    return SafetensorsHeader(tensors=header, metadata={str(k): str(v) for k, v in metadata.items()},
                             data_start=8 + header_len)


def _data_end(tensors: dict) -> int:
    """Where the last tensor's bytes end, counted from the end of the header."""
    end = 0
    for info in tensors.values():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
            end = max(end, offsets[1])
    return end


def file_keys(path: Path) -> tuple[Shapes, dict[str, str]]:
    """(shapes by key, metadata) of a .safetensors file, or of a zip-format .ckpt (read, never run).

    A .ckpt's metadata holds only easytrain's tiny marker, when it has one. A legacy (non-zip) .ckpt gives
    nothing: ({}, {}).
    """
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        header = read_safetensors_header(path)
        return {k: v.get("shape") for k, v in header.tensors.items() if isinstance(v, dict)}, header.metadata
    try:
        with zipfile.ZipFile(path) as zf:
            pickles = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not pickles:
                raise zipfile.BadZipFile("no data.pkl")
            data = zf.read(pickles[0])
    except (zipfile.BadZipFile, OSError):
        return {}, {}
    from easytrain.model.ckpt_pickle import read_ckpt

    shapes, others = read_ckpt(path, data)   # as train reads it: code and non-tensors are refused here
    marker = others.get(TINY_MARKER_KEY)
    # a top-level {"easytrain.model": "tiny-..."} entry marks a tiny model saved as .ckpt
    metadata = {TINY_MARKER_KEY: marker} if isinstance(marker, str) and marker.startswith(TINY_MARKER_PREFIX) else {}
    return shapes, metadata


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read this JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data
