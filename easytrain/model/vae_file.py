"""Load a separate VAE (kohya's --vae) offline, as a diffusers AutoencoderKL.

From a single file in the original layout (standalone or inside a full
checkpoint, through the key map in convert.py), a single file in the diffusers
layout, a diffusers VAE folder, a whole diffusers model folder (its vae/), or
"builtin:tiny". The VAE is built with the base model's VAE config (``like``),
so its scaling factor stays the one the UNet was trained with; a tensor of the
wrong shape is a UserError naming its key. .ckpt/.pt files load weights only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from easytrain.errors import UserError
from easytrain.families.sd.convert import VAE_PREFIX, vae_key_map
from easytrain.model.vae_check import BUILTIN_TINY, PREFIXES


def load_vae(spec: str, like: Mapping[str, Any], dtype: torch.dtype = torch.float32):
    """The VAE in ``spec``, shaped by ``like`` (the base model's VAE config), frozen, in eval mode."""
    from diffusers import AutoencoderKL

    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    config = {k: v for k, v in dict(like).items() if not k.startswith("_")}
    if spec == BUILTIN_TINY:
        from easytrain.families.sd import tiny

        vae = AutoencoderKL.from_pretrained(tiny.tiny_model_paths().diffusers_dir, subfolder="vae",
                                            local_files_only=True, torch_dtype=dtype)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            vae = _from_folder(path, dtype)
        else:
            vae = AutoencoderKL.from_config(config)
            vae.load_state_dict(_state_for(path, vae, _read_state(path), dtype), strict=True)
    vae.register_to_config(scaling_factor=config.get("scaling_factor", vae.config.scaling_factor))
    vae.requires_grad_(False)
    vae.eval()
    return vae.to(dtype)


def _from_folder(path: Path, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    subfolder = "vae" if (path / "model_index.json").is_file() else None
    try:
        return AutoencoderKL.from_pretrained(path, subfolder=subfolder, local_files_only=True, torch_dtype=dtype)
    except (OSError, EnvironmentError, ValueError) as exc:
        raise UserError(f"vae: {path}: cannot load this diffusers VAE folder ({exc})") from None


def _read_state(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise UserError(f"vae: {path}: cannot read this .safetensors file ({exc})") from None
    import pickle

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"vae: {path}: this file contains code, which easytrain will not run; "
                        "convert it to .safetensors first") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"vae: {path}: cannot read this file ({exc})") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"vae: {path}: does not hold a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _state_for(path: Path, vae, state: dict, dtype: torch.dtype) -> dict:
    """The file's tensors under the diffusers names of ``vae``, whatever the file's layout."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix + "decoder.") for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    names = list(vae.state_dict().keys())
    if all(name in state for name in names):  # already the diffusers layout
        sources = {name: name for name in names}
    else:
        sources = {name: key[len(VAE_PREFIX):] for name, key in vae_key_map(vae.config, names).items()}
    missing = [key for key in sources.values() if key not in state]
    if missing:
        raise UserError(f"vae: {path}: {len(missing)} VAE weights are missing (first: {missing[0]}); "
                        "is it a complete VAE?")
    expected = vae.state_dict()
    result = {}
    for name, key in sources.items():
        tensor, want = state[key], tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            if tensor.numel() != expected[name].numel():
                raise UserError(f"vae: {path}: {key} has shape {list(tensor.shape)} but the base model's VAE "
                                f"needs {list(want)}: this VAE does not fit the base model")
            tensor = tensor.reshape(want)  # the original attention's 1x1 convs are linear layers here
        result[name] = tensor.to(dtype)
    return result
