"""Load an SD1.x / SD2.x base model: a single file in the A1111 (LDM) layout or a diffusers folder.

Single files stream into meta-device models built from the configs shipped in
families/sd/configs/ (or read off the tensor shapes, for SD1-layout files of
other sizes), with one CLIP text encoder: OpenAI's layout (SD1) or OpenCLIP's
with fused q/k/v (SD2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from easytrain.errors import UserError
from easytrain.families.ddpm.schedule import make_noise_scheduler
from easytrain.families.sd import tiny
from easytrain.families.sd.convert import CLIP_OLD_PREFIX, CLIP_PREFIX, clip_key_map, openclip_source, unet_key_map, vae_key_map
from easytrain.model.detect import read_safetensors_header
from easytrain.model.load import (
    BaseModel, TensorSource, config_dict, fill, finish, from_folder, load_clip_tokenizer, names, open_tensors, plain_sources,
)

CONFIG_ROOT = Path(__file__).parent / "configs"


def load_sd_folder(folder: Path, arch: str, prediction: str, dtype: torch.dtype, *, pad_token: str) -> BaseModel:
    """A diffusers folder with one CLIP text encoder (SD1/SD2 layout)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    for part in ("unet", "vae", "text_encoder"):
        if not (folder / part).is_dir():
            raise UserError(f"{folder}: diffusers folder without its {part}/ subfolder")
    try:
        unet = from_folder(UNet2DConditionModel, folder, "unet", torch_dtype=dtype)
        vae = from_folder(AutoencoderKL, folder, "vae", torch_dtype=dtype)
        text_encoder = from_folder(CLIPTextModel, folder, "text_encoder", dtype=dtype)
    except (OSError, EnvironmentError) as exc:
        raise UserError(f"{folder}: cannot load this diffusers folder: {exc}") from exc
    if any((folder / "tokenizer" / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    else:
        tokenizer = load_clip_tokenizer(pad_token)
    if len(tokenizer) > text_encoder.config.vocab_size:  # a larger embedding table is fine, a smaller one is not
        raise UserError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the text encoder expects "
            f"{text_encoder.config.vocab_size}; the folder's tokenizer/ does not belong to its text_encoder/"
        )
    return _finish(arch, prediction, unet, vae, text_encoder, tokenizer, str(folder))


# ---- single files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    """What a single file needs besides its weights: configs and the tokenizer."""

    unet_config: dict
    vae_config: dict
    text_encoder_config: Any  # transformers CLIPTextConfig
    make_tokenizer: Callable[[], Any]
    openclip_text: bool  # SD2: the OpenCLIP layout with fused q/k/v


def shipped_parts(arch: str, *, pad: str, openclip_text: bool) -> _Parts:
    """The configs shipped for ``arch`` (families/sd/configs/ARCH) and its tokenizer."""
    from transformers import CLIPTextConfig

    folder = CONFIG_ROOT / arch
    return _Parts(
        unet_config=config_dict(folder / "unet" / "config.json"),
        vae_config=config_dict(folder / "vae" / "config.json"),
        text_encoder_config=CLIPTextConfig.from_pretrained(str(folder / "text_encoder"), local_files_only=True),
        make_tokenizer=lambda: load_clip_tokenizer(pad),
        openclip_text=openclip_text,
    )


def tiny_parts() -> _Parts:
    tokenizer = tiny.build_tiny_tokenizer()
    return _Parts(
        unet_config=dict(tiny.UNET_CONFIG),
        vae_config=dict(tiny.VAE_CONFIG),
        text_encoder_config=tiny.text_encoder_config(len(tokenizer)),
        make_tokenizer=lambda: tokenizer,
        openclip_text=False,
    )


def parts_for_sizes(path: Path, shipped: _Parts) -> _Parts:
    """The shipped SD1 configs, or configs read off the file when its sizes are not SD1.5's."""
    from easytrain.families.sd import infer

    shapes = {k: tuple(v.get("shape") or ()) for k, v in read_safetensors_header(path).tensors.items()
              if isinstance(v, dict)}
    text_prefix = infer.sd1_text_prefix(shapes)
    try:
        same = (shapes[infer.UNET + "input_blocks.0.0.weight"][0] == shipped.unet_config["block_out_channels"][0]
                and shapes[text_prefix + "embeddings.token_embedding.weight"][1] == shipped.text_encoder_config.hidden_size
                and infer.unet_config(shapes)["block_out_channels"] == tuple(shipped.unet_config["block_out_channels"])
                and infer.vae_config(shapes)["block_out_channels"] == tuple(shipped.vae_config["block_out_channels"]))
    except (KeyError, TypeError, IndexError, StopIteration):
        return shipped  # not the layout inference understands; the loader names what is missing
    if same:
        return shipped
    return _Parts(
        unet_config=infer.unet_config(shapes),
        vae_config=infer.vae_config(shapes),
        text_encoder_config=infer.text_encoder_config(shapes, text_prefix, pad_token_id=49407),
        make_tokenizer=shipped.make_tokenizer,
        openclip_text=False,
    )


def load_single_file(path: Path, parts: _Parts, arch: str, prediction: str, dtype: torch.dtype) -> BaseModel:
    """A single file with one CLIP text encoder (SD1/SD2 layout), streamed into meta-device models."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    with open_tensors(path) as source:
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(parts.unet_config)
            vae = AutoencoderKL.from_config(parts.vae_config)
            text_encoder = CLIPTextModel(parts.text_encoder_config)
        fill(path, unet, plain_sources(source, unet_key_map(unet.config, names(unet)), ema=True), dtype,
             may_finish_later=True)
        fill(path, vae, plain_sources(source, vae_key_map(vae.config, names(vae))), dtype)
        fill(path, text_encoder, _text_sources(path, source, names(text_encoder), parts.openclip_text), dtype,
             may_finish_later=True)
    return _finish(arch, prediction, unet, vae, text_encoder, parts.make_tokenizer(), str(path))


def _text_sources(path: Path, source: TensorSource, names: list[str], openclip: bool):
    if openclip:
        return {name: (source, openclip_source(name)) for name in names}
    new_layout = any(k.startswith(CLIP_PREFIX) for k in source.keys)
    prefix = CLIP_PREFIX if new_layout else CLIP_OLD_PREFIX
    return {name: (source, (key, None)) for name, key in clip_key_map(names, prefix).items()}


def _finish(arch, prediction, unet, vae, text_encoder, tokenizer, source) -> BaseModel:
    return finish(arch, prediction, unet, vae, (text_encoder,), (tokenizer,), source, make_noise_scheduler(prediction))
