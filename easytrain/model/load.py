"""What every family shares for loading a base model, always offline.

Single files are read tensor by tensor (safetensors memory-mapped, .ckpt only
through weights-only loading) into models built on the meta device, so a
multi-GB checkpoint never exists twice in memory; diffusers folders load through
``from_pretrained(local_files_only=True)``. ``BaseModel`` is the record a
family's loader returns: the frozen parts, in eval mode. Which family loads a
file is chosen in families/registry.py; nothing here knows the families.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from easytrain.errors import UserError
from easytrain.model.detect import SAFETENSORS_SUFFIXES

CONFIG_ROOT = Path(__file__).parent / "configs"
CLIP_TOKENIZER_DIR = CONFIG_ROOT / "clip_tokenizer"
BUILTIN_TINY = "builtin:tiny"
CLIP_PAD = "<|endoftext|>"


@dataclass
class BaseModel:
    """The frozen parts of a base model, as its family's loader made them."""

    arch: str  # a catalog architecture id
    prediction_type: str  # what the denoiser predicts: a family's own word ("epsilon", "v_prediction", "flow")
    unet: Any  # the denoiser (a UNet, or a family's transformer)
    vae: Any
    text_encoders: tuple  # one per text encoder, in the family's order
    tokenizers: tuple  # one per text encoder
    noise_scheduler: Any  # the family's training schedule, or None when its objective needs none
    source: str
    options: Mapping[str, Any] = field(default_factory=dict)  # the answers to the family's own questions

    @property
    def text_encoder(self):
        return self.text_encoders[0]

    @property
    def tokenizer(self):
        return self.tokenizers[0]


def load_clip_tokenizer(pad_token: str = CLIP_PAD):
    """The real CLIP BPE tokenizer (49408 tokens) shipped with easytrain; SD2 and SDXL's bigG pad with "!"."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token=pad_token, local_files_only=True)


def from_folder(cls, folder: Path, subfolder: str, **kwargs):
    """A component of a diffusers folder; folders saved with only fp16 variant files load too."""
    try:
        return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True, **kwargs)
    except (OSError, EnvironmentError):
        if not any((folder / subfolder).glob("*.fp16.*")):
            raise
        return cls.from_pretrained(folder, subfolder=subfolder, local_files_only=True, variant="fp16", **kwargs)


def config_dict(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if not k.startswith("_")}


def names(model) -> list[str]:
    return list(model.state_dict().keys())


class TensorSource:
    """Key lookup over a safetensors file (memory-mapped) or a weights-only .ckpt state dict. ``adapt(key,
    tensor)`` turns a stored tensor into the model's (a transpose); it applies to what ``get`` reads and to
    what the early conversion holds alike."""

    def __init__(self, keys, get, adapt=None):
        self.keys = set(keys)
        self._read = get
        self.adapt = adapt or (lambda _key, tensor: tensor)

    def get(self, key: str):
        return self.adapt(key, self._read(key))


class open_tensors:
    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def __enter__(self) -> TensorSource:
        if self.path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors import safe_open

            self._handle = safe_open(str(self.path), framework="pt", device="cpu")
            handle = self._handle.__enter__()
            return TensorSource(handle.keys(), handle.get_tensor)
        state = _load_ckpt_weights_only(self.path)
        return TensorSource(state.keys(), state.__getitem__)

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
Source = tuple[str, int | None]


def plain_sources(source: TensorSource, key_map: dict[str, str], ema: bool = False) -> dict[str, tuple[TensorSource, Source]]:
    result = {}
    for name, key in key_map.items():
        if key not in source.keys and ema:
            # ldm EMA copies: model_ema.<name without dots>, used when the plain key is absent
            ema_key = "model_ema." + key.removeprefix("model.").replace(".", "")
            if ema_key in source.keys:
                key = ema_key
        result[name] = (source, (key, None))
    return result


def fill(path: Path, model, sources: dict, dtype: torch.dtype, *, may_finish_later: bool = False) -> None:
    """Materialise a meta-device model from the file, one tensor at a time.

    ``may_finish_later``: inside ``deferred_copies.copying_on_a_thread()``, tensors that need converting
    to ``dtype`` are allocated now and written on a thread, or taken from the run's early conversion
    (model/early_conversion.py), converted or not yet; the caller waits (the copies' ``wait()``) before
    reading them. Without it, the early conversion gives only what it has converted.
    """
    from easytrain.model import deferred_copies, early_conversion

    later = deferred_copies.current() if may_finish_later else None
    early = early_conversion.current()
    expected = model.state_dict()
    missing = [key for _name, (src, (key, _)) in sources.items() if key not in src.keys]
    if missing:
        raise UserError(
            f"{path}: {len(missing)} weights of the {type(model).__name__} are missing from the file "
            f"(first: {missing[0]}); is it a complete Stable Diffusion checkpoint of this architecture?"
        )
    if early is not None and later is not None:
        later.before_waiting(early.complete)
    state = {}
    for name, (src, (key, third)) in sources.items():
        want = tuple(expected[name].shape)
        converted = early.claim(path, key, dtype, can_wait=later is not None) if early is not None else None
        if converted is not None:  # fp32: a view of the early conversion's shared memory, its values there or due
            converted = _shaped(path, key, src.adapt(key, converted), third, want)
            if converted.is_contiguous():
                state[name] = converted
                continue
            if early.holds_values(key):  # transposed by adapt: a copy of its own
                state[name] = converted.contiguous()
                continue
            # a transposed view of values not there yet: the file's, as without the early conversion
        tensor = _shaped(path, key, src.get(key), third, want)
        if later is not None and tensor.dtype != dtype:
            state[name] = torch.empty(want, dtype=dtype)
            later.add(state[name], tensor)
        else:
            state[name] = tensor.to(dtype).contiguous()
    model.load_state_dict(state, strict=True, assign=True)


def _shaped(path: Path, key: str, tensor: torch.Tensor, third: int | None, want: tuple[int, ...]) -> torch.Tensor:
    """A stored tensor as the model's parameter ``want``: one third of a fused q/k/v, or reshaped."""
    if third is not None:
        size = tensor.shape[0] // 3
        tensor = tensor[third * size:(third + 1) * size]
    if tuple(tensor.shape) != want:
        if tensor.numel() != _numel(want):
            raise UserError(
                f"{path}: {key} has shape {tuple(tensor.shape)} but this architecture expects {want}; "
                "is the architecture answer right?"
            )
        tensor = tensor.reshape(want)  # 1x1 conv <-> linear (VAE attention, SD2 proj_in/out)
    return tensor


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def freeze(*models) -> None:
    """Base weights are never trained: no gradients, eval mode."""
    for model in models:
        model.requires_grad_(False)
        model.eval()


def finish(arch: str, prediction: str, unet, vae, text_encoders: tuple, tokenizers: tuple, source: str,
           noise_scheduler: Optional[Any]) -> BaseModel:
    """The record of a loaded base model, its parts frozen and in eval mode."""
    freeze(unet, vae, *text_encoders)
    return BaseModel(arch=arch, prediction_type=prediction, unet=unet, vae=vae, text_encoders=tuple(text_encoders),
                     tokenizers=tuple(tokenizers), noise_scheduler=noise_scheduler, source=source)
