"""Load a base model for training, always offline.

Single files (.safetensors, .ckpt) are read tensor by tensor into models built
on the meta device from the shipped per-architecture configs, so a 2-4 GB
checkpoint never exists twice in memory and nothing is fetched from a hub.
Diffusers folders load through ``from_pretrained(local_files_only=True)``.
The base weights come back frozen (requires_grad False) and in eval mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from easytrain.errors import UserError
from easytrain.model import tiny
from easytrain.model.convert import (
    CLIP_OLD_PREFIX,
    CLIP_PREFIX,
    clip_key_map,
    openclip_source,
    unet_key_map,
    vae_key_map,
)
from easytrain import catalog
from easytrain.model.detect import Detection, detect_architecture, read_safetensors_header
from easytrain.model.quiet import quiet_model_libraries

CONFIG_ROOT = Path(__file__).parent / "configs"
CLIP_TOKENIZER_DIR = CONFIG_ROOT / "clip_tokenizer"
BUILTIN_TINY = "builtin:tiny"
CLIP_PAD = "<|endoftext|>"


@dataclass
class BaseModel:
    """The frozen parts of a base model, as its architecture adapter loaded them."""

    arch: str  # a catalog architecture id
    prediction_type: str  # "epsilon" | "v_prediction"
    unet: Any
    vae: Any
    text_encoders: tuple  # one per text encoder, in the architecture's order
    tokenizers: tuple  # one per text encoder
    noise_scheduler: Any  # diffusers DDPMScheduler used for training
    source: str

    @property
    def text_encoder(self):
        return self.text_encoders[0]

    @property
    def tokenizer(self):
        return self.tokenizers[0]


def load_base_model(spec: str, architecture: str = "auto", dtype: torch.dtype = torch.float32) -> BaseModel:
    """Load "builtin:tiny", a .safetensors/.ckpt file or a diffusers folder through its architecture's adapter.

    ``architecture`` is "auto" (from the file) or a catalog id (the user's
    answer, which wins where the file cannot tell).
    """
    from easytrain.arch.registry import adapter_for

    if architecture != catalog.AUTO and architecture not in catalog.ARCHITECTURES:
        allowed = ", ".join(catalog.ARCHITECTURE_IDS)
        raise UserError(f"architecture: must be auto or one of {allowed}, got {architecture!r}")
    quiet_model_libraries()
    if spec == BUILTIN_TINY:
        return adapter_for(catalog.TINY_MODEL_ARCH).load_builtin_tiny(dtype)

    path = Path(spec).expanduser()
    detection = detect_architecture(path)
    arch, prediction = _resolve_architecture(path, detection, architecture)
    return adapter_for(arch, path).load(path, detection, arch, prediction, dtype)


def make_noise_scheduler(prediction_type: str):
    """The DDPM training schedule of SD1/SD2/SDXL: scaled_linear 0.00085..0.012 over 1000 steps."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,  # as SD's own scheduler configs: the samplers made from this config expect it
        prediction_type=prediction_type,
    )


def load_clip_tokenizer(pad_token: str = CLIP_PAD):
    """The real CLIP BPE tokenizer (49408 tokens) shipped with easytrain; SD2 pads with "!"."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token=pad_token, local_files_only=True)


def _resolve_architecture(path: Path, detection: Detection, answer: str) -> tuple[str, str]:
    if answer == catalog.AUTO:
        if detection.arch is None or not detection.sure:
            members = catalog.family_members(detection.arch) if detection.arch else ()
            choices = " or ".join(members) if len(members) > 1 else ", ".join(catalog.ARCHITECTURE_IDS)
            raise UserError(
                f"{path}: cannot tell the architecture for sure ({detection.description}); "
                f"set architecture to {choices} in the answers"
            )
        arch = detection.arch
    else:
        arch = answer
        if detection.arch is not None and not catalog.same_family(detection.arch, arch):
            raise UserError(
                f"{path}: architecture is set to {arch}, but the file is {detection.description}; "
                f"set architecture to auto or {detection.arch}"
            )
    if answer != catalog.AUTO or detection.prediction_type is None:
        prediction = catalog.architecture(arch).prediction_type
    else:
        prediction = detection.prediction_type
    return arch, prediction


# ---- diffusers folders -------------------------------------------------------------------------


def load_sd_folder(folder: Path, arch: str, prediction: str, dtype: torch.dtype, *, pad_token: str) -> BaseModel:
    """A diffusers folder with one CLIP text encoder (SD1/SD2 layout)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    for part in ("unet", "vae", "text_encoder"):
        if not (folder / part).is_dir():
            raise UserError(f"{folder}: diffusers folder without its {part}/ subfolder")
    try:
        unet = _from_folder(UNet2DConditionModel, folder, "unet", torch_dtype=dtype)
        vae = _from_folder(AutoencoderKL, folder, "vae", torch_dtype=dtype)
        text_encoder = _from_folder(CLIPTextModel, folder, "text_encoder", dtype=dtype)
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


def _from_folder(cls, folder: Path, subfolder: str, **kwargs):
    """A component of a diffusers folder; folders saved with only fp16 variant files load too."""
    try:
        return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True, **kwargs)
    except (OSError, EnvironmentError):
        if not any((folder / subfolder).glob("*.fp16.*")):
            raise
        return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True, variant="fp16", **kwargs)


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
    """The configs shipped for ``arch`` (model/configs/ARCH) and its tokenizer."""
    from transformers import CLIPTextConfig

    folder = CONFIG_ROOT / arch
    return _Parts(
        unet_config=_config_dict(folder / "unet" / "config.json"),
        vae_config=_config_dict(folder / "vae" / "config.json"),
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
    from easytrain.model import infer

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


def _config_dict(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def load_single_file(path: Path, parts: _Parts, arch: str, prediction: str, dtype: torch.dtype) -> BaseModel:
    """A single file with one CLIP text encoder (SD1/SD2 layout), streamed into meta-device models."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    with _open_tensors(path) as source:
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(parts.unet_config)
            vae = AutoencoderKL.from_config(parts.vae_config)
            text_encoder = CLIPTextModel(parts.text_encoder_config)
        _fill(path, unet, _plain_sources(source, unet_key_map(unet.config, _names(unet)), ema=True), dtype)
        _fill(path, vae, _plain_sources(source, vae_key_map(vae.config, _names(vae))), dtype)
        _fill(path, text_encoder, _text_sources(path, source, _names(text_encoder), parts.openclip_text), dtype)
    return _finish(arch, prediction, unet, vae, text_encoder, parts.make_tokenizer(), str(path))


def _names(model) -> list[str]:
    return list(model.state_dict().keys())


class _TensorSource:
    """Key lookup over a safetensors file (memory-mapped) or a weights-only .ckpt state dict."""

    def __init__(self, keys, get):
        self.keys = set(keys)
        self.get = get


class _open_tensors:
    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def __enter__(self) -> _TensorSource:
        if self.path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            handle = self._handle.__enter__()
            return _TensorSource(handle.keys(), handle.get_tensor)
        state = _load_ckpt_weights_only(self.path)
        return _TensorSource(state.keys(), state.__getitem__)

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.__exit__(*exc)


def _load_ckpt_weights_only(path: Path) -> dict:
    import pickle

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: this .ckpt contains code, which easytrain will not run; "
            "convert it to .safetensors first (for example with a trusted tool you already use)"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"{path}: cannot read this .ckpt file ({exc})") from exc
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: this .ckpt does not hold a plain state dict of tensors")
    return state


def _is_zip(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


# A source says how to produce one tensor: (original key, slice of a fused q/k/v tensor or None).
_Source = tuple[str, int | None]


def _plain_sources(source: _TensorSource, key_map: dict[str, str], ema: bool = False) -> dict[str, tuple[_TensorSource, _Source]]:
    result = {}
    for name, key in key_map.items():
        if key not in source.keys and ema:
            # ldm EMA copies: model_ema.<name without dots>, used when the plain key is absent
            ema_key = "model_ema." + key.removeprefix("model.").replace(".", "")
            if ema_key in source.keys:
                key = ema_key
        result[name] = (source, (key, None))
    return result


def _text_sources(path: Path, source: _TensorSource, names: list[str], openclip: bool):
    if openclip:
        return {name: (source, openclip_source(name)) for name in names}
    new_layout = any(k.startswith(CLIP_PREFIX) for k in source.keys)
    prefix = CLIP_PREFIX if new_layout else CLIP_OLD_PREFIX
    return {name: (source, (key, None)) for name, key in clip_key_map(names, prefix).items()}


def _fill(path: Path, model, sources: dict, dtype: torch.dtype) -> None:
    """Materialise a meta-device model from the file, one tensor at a time."""
    expected = model.state_dict()
    missing = [key for _name, (src, (key, _)) in sources.items() if key not in src.keys]
    if missing:
        raise UserError(
            f"{path}: {len(missing)} weights of the {type(model).__name__} are missing from the file "
            f"(first: {missing[0]}); is it a complete Stable Diffusion checkpoint of this architecture?"
        )
    state = {}
    for name, (src, (key, third)) in sources.items():
        tensor = src.get(key)
        if third is not None:
            size = tensor.shape[0] // 3
            tensor = tensor[third * size:(third + 1) * size]
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            if tensor.numel() != _numel(want):
                raise UserError(
                    f"{path}: {key} has shape {tuple(tensor.shape)} but this architecture expects {want}; "
                    "is the architecture answer right?"
                )
            tensor = tensor.reshape(want)  # 1x1 conv <-> linear (VAE attention, SD2 proj_in/out)
        state[name] = tensor.to(dtype).contiguous()
    model.load_state_dict(state, strict=True, assign=True)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _finish(arch, prediction, unet, vae, text_encoder, tokenizer, source) -> BaseModel:
    return finish(arch, prediction, unet, vae, (text_encoder,), (tokenizer,), source)


def finish(arch, prediction, unet, vae, text_encoders: tuple, tokenizers: tuple, source: str) -> BaseModel:
    """Frozen, in eval mode, with the training noise schedule of its prediction type."""
    for model in (unet, vae, *text_encoders):
        model.requires_grad_(False)
        model.eval()
    return BaseModel(
        arch=arch,
        prediction_type=prediction,
        unet=unet,
        vae=vae,
        text_encoders=tuple(text_encoders),
        tokenizers=tuple(tokenizers),
        noise_scheduler=make_noise_scheduler(prediction),
        source=source,
    )
