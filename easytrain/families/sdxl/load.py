"""Load an SDXL base model, always offline: a Stability-layout single file or a diffusers folder.

Single files stream tensor by tensor into models built on the meta device from
the shipped SDXL configs (or the tiny model's), as load.py does for SD1/SD2; a
6.5-7 GB fp16 checkpoint never exists twice in memory. Both tokenizers are the
real CLIP BPE shipped with easytrain; the second pads with "!".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from easytrain.errors import UserError
from easytrain.families.sdxl import tiny as tiny_sdxl
from easytrain.families.sd.convert import unet_key_map, vae_key_map
from easytrain.families.sdxl.convert import TEXT_PROJECTION_KEY, bigg_source, clip_l_key_map
from easytrain.families.detect import detect_architecture
from easytrain.model.detect import Detection
from easytrain.families.ddpm.schedule import make_noise_scheduler
from easytrain.model.load import (
    CLIP_PAD, BaseModel, TensorSource, config_dict, fill, finish, from_folder, load_clip_tokenizer, names, open_tensors,
    plain_sources,
)
from easytrain.model.quiet import quiet_model_libraries

SDXL_CONFIG_DIR = Path(__file__).parent / "configs" / "sdxl"
BIGG_PAD = "!"


def load_sdxl(path: str | Path, dtype: torch.dtype = torch.float32, *, arch: str = "sdxl",
              prediction_type: str | None = None, zero_terminal_snr: bool | None = None,
              detection: Detection | None = None) -> BaseModel:
    """An SDXL single file (.safetensors/.ckpt) or diffusers folder, frozen and in eval mode.

    ``prediction_type`` / ``zero_terminal_snr`` override what the file says (None: the file decides);
    zero terminal SNR rescales the training schedule's betas (NoobAI-style v-prediction models).
    """
    quiet_model_libraries()
    path = Path(path).expanduser()
    detection = detection or detect_architecture(path)
    parts = _load_folder(path, dtype) if path.is_dir() else _load_single_file(path, detection, dtype)
    prediction = prediction_type or detection.prediction_type or "epsilon"
    ztsnr = detection.zero_terminal_snr if zero_terminal_snr is None else zero_terminal_snr
    return finish(arch, prediction, parts["unet"], parts["vae"], parts["text_encoders"], parts["tokenizers"],
                  str(path), make_noise_scheduler(prediction, zero_terminal_snr=ztsnr))


# ---- diffusers folders -------------------------------------------------------------------------


def _load_folder(folder: Path, dtype: torch.dtype) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if not (folder / part).is_dir():
            raise UserError(f"{folder}: SDXL diffusers folder without its {part}/ subfolder")
    try:
        parts = dict(
            unet=from_folder(UNet2DConditionModel, folder, "unet", torch_dtype=dtype),
            vae=from_folder(AutoencoderKL, folder, "vae", torch_dtype=dtype),
            text_encoder=from_folder(CLIPTextModel, folder, "text_encoder", dtype=dtype),
            text_encoder_2=from_folder(CLIPTextModelWithProjection, folder, "text_encoder_2", dtype=dtype),
        )
    except (OSError, EnvironmentError) as exc:
        raise UserError(f"{folder}: cannot load this diffusers folder: {exc}") from exc
    encoders = (parts.pop("text_encoder"), parts.pop("text_encoder_2"))
    parts["text_encoders"] = encoders
    parts["tokenizers"] = (_folder_tokenizer(folder, "tokenizer", CLIP_PAD, encoders[0]),
                           _folder_tokenizer(folder, "tokenizer_2", BIGG_PAD, encoders[1]))
    return parts


def _folder_tokenizer(folder: Path, subfolder: str, pad: str, text_encoder):
    from transformers import CLIPTokenizer

    if any((folder / subfolder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder=subfolder, local_files_only=True)
    else:
        tokenizer = load_clip_tokenizer(pad)
    if len(tokenizer) > text_encoder.config.vocab_size:
        raise UserError(
            f"{folder}: {subfolder}/ has {len(tokenizer)} tokens but its text encoder expects "
            f"{text_encoder.config.vocab_size}; the folder's {subfolder}/ does not belong to it"
        )
    return tokenizer


# ---- single files ------------------------------------------------------------------------------


def _configs(detection: Detection) -> tuple[dict, dict, Any, Any]:
    """UNet and VAE config dicts and the two text encoder configs, shipped or the tiny model's."""
    from transformers import CLIPTextConfig

    if detection.is_tiny:
        tokenizer, _ = tiny_sdxl.build_tiny_sdxl_tokenizers()
        first, second = tiny_sdxl.text_encoder_configs(len(tokenizer))
        return dict(tiny_sdxl.UNET_CONFIG), dict(tiny_sdxl.VAE_CONFIG), first, second
    return (
        config_dict(SDXL_CONFIG_DIR / "unet" / "config.json"),
        config_dict(SDXL_CONFIG_DIR / "vae" / "config.json"),
        CLIPTextConfig.from_pretrained(str(SDXL_CONFIG_DIR / "text_encoder"), local_files_only=True),
        CLIPTextConfig.from_pretrained(str(SDXL_CONFIG_DIR / "text_encoder_2"), local_files_only=True),
    )


def _load_single_file(path: Path, detection: Detection, dtype: torch.dtype) -> dict:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet_config, vae_config, config_1, config_2 = _configs(detection)
    with open_tensors(path) as source:
        _require_sdxl_layout(path, source)
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(unet_config)
            vae = AutoencoderKL.from_config(vae_config)
            text_encoder = CLIPTextModel(config_1)
            text_encoder_2 = CLIPTextModelWithProjection(config_2)
        fill(path, unet, plain_sources(source, unet_key_map(unet.config, names(unet)), ema=True), dtype,
             may_finish_later=True)
        fill(path, vae, plain_sources(source, vae_key_map(vae.config, names(vae))), dtype)
        fill(path, text_encoder, plain_sources(source, clip_l_key_map(names(text_encoder))), dtype,
             may_finish_later=True)
        fill(path, text_encoder_2, _bigg_sources(source, names(text_encoder_2)), dtype,
             may_finish_later=True)
    if detection.is_tiny:
        tokenizers = tiny_sdxl.build_tiny_sdxl_tokenizers()
    else:
        tokenizers = (load_clip_tokenizer(CLIP_PAD), load_clip_tokenizer(BIGG_PAD))
    return dict(unet=unet, vae=vae, text_encoders=(text_encoder, text_encoder_2), tokenizers=tokenizers)


def _require_sdxl_layout(path: Path, source: TensorSource) -> None:
    if TEXT_PROJECTION_KEY not in source.keys:
        raise UserError(
            f"{path}: no {TEXT_PROJECTION_KEY} key; SDXL single files in Stability's layout hold the "
            "OpenCLIP bigG text encoder under conditioner.embedders.1.model."
        )


def _bigg_sources(source: TensorSource, names: list[str]) -> dict:
    """Sources of the bigG encoder; its text projection is stored transposed."""
    def adapt(key: str, tensor):
        return tensor.T if key == TEXT_PROJECTION_KEY else tensor

    transposing = TensorSource(source.keys, source.get, adapt)
    return {name: (transposing, bigg_source(name)) for name in names}
