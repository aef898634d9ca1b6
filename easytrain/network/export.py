"""Write a network as a kohya-format .safetensors file, atomically, with hashes."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import torch

from easytrain.fsutil import atomic_write_bytes

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32, "fp32": torch.float32}


def save_dtype(value: str | torch.dtype) -> torch.dtype:
    """A torch dtype from an answers value ("fp16", "bf16", "float") or a dtype."""
    if isinstance(value, torch.dtype):
        if value not in SAVE_DTYPES.values():
            raise ValueError(f"save dtype must be one of float16, bfloat16, float32, got {value}")
        return value
    try:
        return SAVE_DTYPES[value]
    except KeyError:
        raise ValueError(f"save precision must be one of fp16, bf16, float, got {value!r}") from None


def data_section(blob: bytes) -> bytes:
    """The tensor bytes of a safetensors file: everything after the 8-byte length and the JSON header."""
    (header_len,) = struct.unpack("<Q", blob[:8])
    return blob[8 + header_len:]


def model_hash(blob: bytes) -> str:
    """sshs_model_hash: sha256 of the bytes after the header (kohya's addnet_hash_safetensors)."""
    return hashlib.sha256(data_section(blob)).hexdigest()


def legacy_hash(blob: bytes) -> str:
    """sshs_legacy_hash: first 8 hex digits of sha256 of 64 KiB at offset 1 MiB (kohya's addnet_hash_legacy)."""
    return hashlib.sha256(blob[0x100000:0x100000 + 0x10000]).hexdigest()[:8]


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with string metadata, and the two sshs_* hashes added as kohya does.

    kohya hashes a serialisation that carries only the ss_* metadata; the model
    hash depends on the tensor bytes alone, so it also matches the final file.
    """
    from safetensors.torch import save

    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str; {key!r} has {type(value).__name__}")
    training_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    probe = save(tensors, metadata=training_only)
    full = dict(metadata)
    full["sshs_model_hash"] = model_hash(probe)
    full["sshs_legacy_hash"] = legacy_hash(probe)
    blob = save(tensors, metadata=full)
    if model_hash(blob) != full["sshs_model_hash"]:  # the tensor section must not depend on the header
        raise RuntimeError("safetensors wrote different tensor bytes for the same tensors")
    return blob


def save_lora(network, path: str | Path, *, dtype: str | torch.dtype = torch.float16,
              metadata: dict[str, str] | None = None) -> Path:
    """Write ``network`` to ``path`` in kohya format, in ``dtype``; returns the path.

    The file is written atomically: a crash or a full disk leaves any earlier
    file at ``path`` untouched.
    """
    path = Path(path)
    tensors = network.kohya_state_dict(save_dtype(dtype))
    atomic_write_bytes(path, serialize(tensors, dict(metadata or {})))
    return path
