"""Load Flux.1 / Chroma offline, from the files people keep, without a second copy in memory.

- The four files ComfyUI users keep: the transformer in BFL's layout (``models/diffusion_models`` or
  ``models/unet``; with or without ``model.diffusion_model.``; bf16, fp16 or fp8 ``float8_e4m3fn``),
  ``clip_l.safetensors`` (transformers' ``text_model.*``), ``t5xxl_fp16.safetensors`` / fp8
  (transformers' T5 encoder ``encoder.block.N.*``, ``shared.weight``) and ``ae.safetensors`` (the
  LDM/BFL VAE layout ``encoder.down.N.block.M.*``). Companions not named are found next to the model
  (companions.py).
- An all-in-one single file: the same four under ``model.diffusion_model.``,
  ``text_encoders.clip_l.transformer.``, ``text_encoders.t5xxl.transformer.`` and ``vae.``.
- A diffusers folder: ``transformer/`` (split q/k/v, converted to BFL's keys here), ``text_encoder/``,
  ``text_encoder_2/``, ``vae/`` and the tokenizers when the folder has them.

Every size is read off the tensor shapes, so small and experimental Flux-shaped files load. Each model
is built on the meta device and filled one tensor at a time from memory-mapped files (``assign=True``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

from easytrain.errors import UserError
from easytrain.families.flux import convert
from easytrain.families.flux.detect import (
    CHROMA,
    CLIP_L_PREFIX,
    T5XXL_PREFIX,
    describe_flux,
    detect_flux,
    detect_flux_folder,
    file_parts,
    transformer_prefix,
)
from easytrain.families.flux.model import FluxConfig, FluxTransformer, build_model
from easytrain.model.detect import TINY_MARKER_FILE, TINY_MARKER_KEY, read_safetensors_header
from easytrain.model.load import BaseModel

CONFIG_DIR = Path(__file__).parent / "configs"
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")  # BFL's first releases used .sft
AE_PREFIXES = ("vae.", "first_stage_model.")
CLIP_TEXT = "text_model."
TINY_PREFIX = "tiny-"  # a TINY_MARKER_KEY value "tiny-flux-dev" / "tiny-chroma": easytrain's tiny models


@dataclass
class FluxParts:
    """A loaded Flux.1 / Chroma model: frozen, in eval mode. Chroma has no CLIP-L."""

    kind: str  # "flux-dev" | "flux-schnell" | "chroma"
    config: FluxConfig
    transformer: FluxTransformer
    vae: Any  # diffusers AutoencoderKL, 16 latent channels, with its scaling and shift factors
    clip_l: Any  # transformers CLIPTextModel, or None (Chroma)
    t5: Any  # transformers T5EncoderModel
    clip_tokenizer: Any
    t5_tokenizer: Any
    source: str
    files: dict = field(default_factory=dict)  # "transformer" / "clip_l" / "t5xxl" / "vae" -> the file read;
    # "marker": the tiny marker of easytrain's own tiny models
    message: str = ""  # which companion files were picked, for the user; "" when all were named

    @property
    def text_encoders(self) -> tuple:
        return (self.t5,) if self.clip_l is None else (self.clip_l, self.t5)

    @property
    def tokenizers(self) -> tuple:
        return (self.t5_tokenizer,) if self.clip_l is None else (self.clip_tokenizer, self.t5_tokenizer)

    @property
    def is_tiny(self) -> bool:
        """easytrain's own tiny model (made in code, with tiny tokenizers)."""
        return "marker" in self.files


def load_flux(spec: str | Path, *, dtype: torch.dtype = torch.bfloat16, text_dtype: Optional[torch.dtype] = None,
              clip_l: str | Path | None = None, t5xxl: str | Path | None = None, vae: str | Path | None = None,
              linear_dtype: Optional[torch.dtype] = None, t5_tokenizer: str | Path | None = None) -> FluxParts:
    """A Flux.1 dev/schnell or Chroma model from a single file (with its companions) or a diffusers folder.

    ``clip_l`` / ``t5xxl`` / ``vae`` are the answers naming the companion files (None: the all-in-one
    file's own, else found next to the model). ``dtype``: the transformer and AE; ``text_dtype``: the
    text encoders (default ``dtype``); ``linear_dtype``: storage of the blocks' Linear weights (fp8);
    ``t5_tokenizer``: the answer naming the T5 tokenizer's folder (None: tokenizer.t5_tokenizer_places).
    """
    from easytrain.families.flux.companions import find_companions
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    path = Path(spec).expanduser()
    text_dtype = text_dtype or dtype
    if path.is_dir():
        return load_flux_folder(path, dtype=dtype, text_dtype=text_dtype, clip_l=clip_l, t5xxl=t5xxl, vae=vae,
                                linear_dtype=linear_dtype, t5_tokenizer=t5_tokenizer)
    header = _header(path)
    kind = detect_flux(header.tensors)
    if kind is None:
        raise UserError(f"{path}: not a Flux.1 or Chroma transformer (no double_blocks / img_in keys)")
    inside = file_parts(header.tensors)
    companions = find_companions(path, kind, clip_l=clip_l, t5xxl=t5xxl, vae=vae, inside=inside)
    tiny = str(header.metadata.get(TINY_MARKER_KEY, "")).startswith(TINY_PREFIX)
    # before the big loads: a missing file fails fast
    clip_tokenizer, t5_tokenizer = _tokenizers(kind, tiny, model=path, answer=t5_tokenizer)

    transformer = load_transformer(path, dtype, linear_dtype=linear_dtype)
    ae = load_ae(companions.vae, dtype)
    t5 = load_t5xxl(companions.t5xxl, text_dtype)
    clip = None if kind == CHROMA else load_clip_l(companions.clip_l, text_dtype)
    _check_vocab(companions.t5xxl, t5_tokenizer, t5.config.vocab_size, "T5")
    files = {"transformer": str(path), **companions.files}
    if tiny:
        files["marker"] = header.metadata[TINY_MARKER_KEY]
    return _finish(FluxParts(kind, transformer.config, transformer, ae, clip, t5, clip_tokenizer, t5_tokenizer,
                             str(path), files, companions.message))


def load_flux_folder(folder: Path, *, dtype: torch.dtype, text_dtype: torch.dtype, clip_l=None, t5xxl=None,
                     vae=None, linear_dtype: Optional[torch.dtype] = None, t5_tokenizer=None) -> FluxParts:
    """A diffusers Flux (FluxPipeline) or Chroma (ChromaPipeline) folder; answers naming files override."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, T5EncoderModel

    kind = detect_flux_folder(folder)
    if kind is None:
        raise UserError(f"{folder}: not a diffusers Flux or Chroma folder (model_index.json and transformer/config.json)")
    t5_part = "text_encoder" if kind == CHROMA else "text_encoder_2"
    needed = ["transformer", "vae", t5_part] + ([] if kind == CHROMA else ["text_encoder"])
    for part in needed:
        if not (folder / part).is_dir():
            raise UserError(f"{folder}: diffusers folder without its {part}/ subfolder")
    tiny = (folder / TINY_MARKER_FILE).is_file()
    clip_tokenizer, t5_tokenizer = _tokenizers(kind, tiny, folder, answer=t5_tokenizer)
    transformer = load_transformer(folder / "transformer", dtype, linear_dtype=linear_dtype)
    try:
        ae = load_ae(Path(vae), dtype) if vae else AutoencoderKL.from_pretrained(
            folder, subfolder="vae", local_files_only=True, torch_dtype=dtype)
        t5 = load_t5xxl(Path(t5xxl), text_dtype) if t5xxl else T5EncoderModel.from_pretrained(
            folder, subfolder=t5_part, local_files_only=True, dtype=text_dtype)
        clip = None
        if kind != CHROMA:
            clip = load_clip_l(Path(clip_l), text_dtype) if clip_l else CLIPTextModel.from_pretrained(
                folder, subfolder="text_encoder", local_files_only=True, dtype=text_dtype)
    except (OSError, EnvironmentError, ValueError) as exc:
        raise UserError(f"{folder}: cannot load this diffusers folder: {exc}") from None
    _check_vocab(folder, t5_tokenizer, t5.config.vocab_size, "T5")
    if clip is not None:
        _check_vocab(folder, clip_tokenizer, clip.config.vocab_size, "CLIP-L")
    files = {"transformer": str(folder / "transformer")}
    if tiny:
        files["marker"] = json.loads((folder / TINY_MARKER_FILE).read_text(encoding="utf-8")).get(TINY_MARKER_KEY, "")
    return _finish(FluxParts(kind, transformer.config, transformer, ae, clip, t5, clip_tokenizer, t5_tokenizer,
                             str(folder), files, ""))


def _finish(parts: FluxParts) -> FluxParts:
    for model in (parts.transformer, parts.vae, parts.clip_l, parts.t5):
        if model is not None:
            model.requires_grad_(False)
            model.eval()
    return parts


def _t5_length(kind: str, tiny: bool) -> int:
    from easytrain.families.flux.tokenizer import t5_max_length

    return 32 if tiny else t5_max_length(kind)


def _tokenizers(kind: str, tiny: bool, folder: Optional[Path] = None, *, model: Optional[Path] = None,
                answer=None) -> tuple[Any, Any]:
    """(CLIP-L tokenizer or None, T5 tokenizer): the ``answer`` naming a T5 tokenizer folder; a diffusers
    ``folder``'s own when it has them; else the real ones (tokenizer.t5_tokenizer_places, from ``model``;
    the tiny models: the tiny T5 tokenizer)."""
    from transformers import CLIPTokenizer, T5TokenizerFast

    from easytrain.families.flux import tokenizer as tok

    clip_tokenizer = None
    if kind != CHROMA:
        own = folder / "tokenizer" if folder is not None else None
        if own is not None and any((own / n).is_file() for n in ("vocab.json", "tokenizer.json")):
            clip_tokenizer = CLIPTokenizer.from_pretrained(str(own), local_files_only=True)
        else:
            clip_tokenizer = tok.load_clip_l_tokenizer()
    own = folder / ("tokenizer" if kind == CHROMA else "tokenizer_2") if folder is not None else None
    if own is not None and not answer and any((own / n).is_file() for n in ("tokenizer.json", "spiece.model")):
        t5_tokenizer = T5TokenizerFast.from_pretrained(str(own), local_files_only=True)
        t5_tokenizer.model_max_length = _t5_length(kind, tiny)
    elif tiny:
        t5_tokenizer = tok.build_tiny_t5_tokenizer(_t5_length(kind, True))
    else:
        t5_tokenizer = tok.load_t5_tokenizer(tok.t5_max_length(kind), model=model or folder, answer=answer)
    return clip_tokenizer, t5_tokenizer


def _check_vocab(where: Path, tokenizer, rows: int, what: str) -> None:
    if len(tokenizer) > rows:
        raise UserError(f"{where}: the {what} tokenizer has {len(tokenizer)} tokens but the text encoder has "
                        f"{rows} rows; is it a {'T5 v1.1 XXL' if what == 'T5' else 'CLIP-L'} text encoder?")


# ---- sizes from shapes -------------------------------------------------------------------------

CLIP_VOCAB = 49408


def _indices(shapes: Mapping[str, tuple], pattern: str) -> list[int]:
    """The distinct numbers the first group of ``pattern`` takes over the keys (block indices)."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in shapes for m in [regex.match(key)] if m})


def _groups(channels, preferred: int = 32) -> int:
    """The largest group-norm group count up to ``preferred`` that divides every channel count."""
    common = math.gcd(*(int(c) for c in channels))
    return max(g for g in range(1, preferred + 1) if common % g == 0)


# ---- reading safetensors ----------------------------------------------------------------------


def _header(path: Path):
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise UserError(f"{path}: Flux files are read as .safetensors only; convert it first")
    return read_safetensors_header(path)


class TensorFiles:
    """Memory-mapped tensors of one or more .safetensors files, by key (a sharded model is several)."""

    def __init__(self, paths):
        from safetensors import safe_open

        self.paths = [Path(p) for p in paths]
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, str] = {}
        self._where: dict[str, int] = {}
        self._handles = []
        for index, path in enumerate(self.paths):
            header = _header(path)
            for key, info in header.tensors.items():
                self.shapes[key] = tuple(info.get("shape") or ())
                self.dtypes[key] = str(info.get("dtype"))
                self._where[key] = index
            self._handles.append(safe_open(str(path), framework="pt", device="cpu"))

    def __enter__(self) -> "TensorFiles":
        return self

    def __exit__(self, *exc) -> None:
        self._handles.clear()

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        """The tensor; a ComfyUI "scaled fp8" weight (``X.weight`` with ``X.scale_weight``) comes back
        multiplied by its scale, in float32."""
        tensor = self._handles[self._where[key]].get_tensor(key)
        if key.endswith(".weight"):
            scale_key = key[: -len("weight")] + "scale_weight"
            if scale_key in self._where:
                scale = self._handles[self._where[scale_key]].get_tensor(scale_key).float()
                tensor = tensor.float() * scale
        return tensor

    def under(self, prefix: str) -> dict[str, tuple]:
        """Shapes of the keys under ``prefix``, by the rest of their name."""
        return {k[len(prefix):]: v for k, v in self.shapes.items() if k.startswith(prefix)}


def _fill(model, sources: Mapping[str, tuple[str, Callable[[], torch.Tensor]]], dtype_for: Callable[[str], torch.dtype],
          where: Path, what: str) -> None:
    """Materialise a meta-device ``model``: ``sources`` maps each parameter to (file key, reader)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = [name for name in expected if name not in sources]
    if missing:
        raise UserError(f"{where}: {len(missing)} weights of the {what} are missing from the file "
                        f"(first: {missing[0]}); is it a complete {what}?")
    state = {}
    for name, shape in expected.items():
        key, read = sources[name]
        tensor = read()
        if tuple(tensor.shape) != shape:
            if tensor.numel() != math.prod(shape):
                raise UserError(f"{where}: {key} has shape {list(tensor.shape)} but the {what} it belongs to "
                                f"expects {list(shape)}")
            tensor = tensor.reshape(shape)  # the AE's 1x1-conv attention as Linear layers
        state[name] = tensor.to(dtype_for(name)).contiguous()
    model.load_state_dict(state, strict=True, assign=True)


def _plain(files: TensorFiles, names, prefix: str = "", rename: Callable[[str], str] = lambda n: n) -> dict:
    result = {}
    for name in names:
        key = prefix + rename(name)
        if key in files:
            result[name] = (key, lambda key=key: files.get(key))
    return result


# ---- the transformer --------------------------------------------------------------------------


def load_transformer(path: str | Path, dtype: torch.dtype = torch.bfloat16, *,
                     linear_dtype: Optional[torch.dtype] = None) -> FluxTransformer:
    """The transformer of a BFL-layout file (any prefix, any storage dtype) or of a diffusers
    ``transformer/`` folder, converted to BFL's keys; frozen, in eval mode.

    ``linear_dtype`` stores the double and single blocks' Linear weights in another dtype (fp8 storage);
    everything else is ``dtype``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "transformer").is_dir():
            path = path / "transformer"
        with TensorFiles(_shards(path)) as files:
            return _load_diffusers_transformer(files, path, dtype, linear_dtype)
    with TensorFiles([path]) as files:
        if "x_embedder.weight" in files:  # one file in diffusers' layout
            return _load_diffusers_transformer(files, path, dtype, linear_dtype)
        prefix = transformer_prefix(files.shapes)
        config = _config(path, files.under(prefix))
        model = build_model(config)
        _fill(model, _plain(files, model.state_dict().keys(), prefix), _dtypes(dtype, linear_dtype), path,
              "Flux transformer")
    return _frozen(model)


def _load_diffusers_transformer(files: TensorFiles, where: Path, dtype: torch.dtype, linear_dtype) -> FluxTransformer:
    recipes = convert.bfl_recipes(files.shapes)
    model = build_model(_config(where, convert.bfl_shapes(files.shapes)))
    sources = {name: (recipe.sources[0], lambda recipe=recipe: convert.fuse(recipe, files.get))
               for name, recipe in recipes.items()}
    _fill(model, sources, _dtypes(dtype, linear_dtype), where, "Flux transformer")
    return _frozen(model)


def _shards(folder: Path) -> list[Path]:
    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        weight_map = json.loads(index[0].read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no .safetensors weights in this diffusers transformer folder")
    plain = [f for f in files if ".fp16." not in f.name]
    return plain or files


def _config(path: Path, shapes: Mapping[str, tuple]) -> FluxConfig:
    try:
        return FluxConfig.from_header(shapes)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def _dtypes(dtype: torch.dtype, linear_dtype: Optional[torch.dtype]) -> Callable[[str], torch.dtype]:
    def dtype_for(name: str) -> torch.dtype:
        if linear_dtype is not None and name.endswith(".weight") and name.startswith(("double_blocks.", "single_blocks.")) \
                and not name.endswith((".scale",)) and ".norm." not in name:
            return linear_dtype
        return dtype
    return dtype_for


def _frozen(model):
    model.requires_grad_(False)
    model.eval()
    return model


# ---- CLIP-L -----------------------------------------------------------------------------------


def load_clip_l(path: str | Path, dtype: torch.dtype = torch.bfloat16):
    """transformers' CLIPTextModel from ``clip_l.safetensors`` (``text_model.*``) or an all-in-one file,
    sized from its shapes; real checkpoints must have CLIP's 49408-token vocabulary."""
    from accelerate import init_empty_weights
    from transformers import CLIPTextModel

    path = Path(path).expanduser()
    with TensorFiles([path]) as files:
        prefix = _clip_prefix(path, files)
        config = clip_config(files.under(prefix))
        with init_empty_weights():
            model = CLIPTextModel(config)
        names = [n for n in model.state_dict().keys()]
        sources = _plain(files, names, prefix, lambda n: n if n.startswith(CLIP_TEXT) else CLIP_TEXT + n)
        _fill(model, sources, lambda _n: dtype, path, "CLIP-L text encoder")
    return _frozen(model)


def _clip_prefix(path: Path, files: TensorFiles) -> str:
    for prefix in ("", CLIP_L_PREFIX, "cond_stage_model.transformer.", "te1.", "clip_l."):
        if prefix + CLIP_TEXT + "embeddings.token_embedding.weight" in files:
            return prefix
    raise UserError(f"{path}: not a CLIP-L text encoder (no text_model.embeddings.token_embedding.weight)")


def clip_config(shapes: Mapping[str, tuple]):
    """A CLIPTextConfig from ``text_model.*`` shapes (CLIP-L's own when the sizes are CLIP-L's)."""
    from transformers import CLIPTextConfig

    vocab, hidden = shapes[CLIP_TEXT + "embeddings.token_embedding.weight"]
    if vocab != CLIP_VOCAB:
        raise UserError(f"the CLIP-L text encoder has a {vocab}-token vocabulary, not CLIP's {CLIP_VOCAB}")
    values = json.loads((CONFIG_DIR / "clip_l.json").read_text(encoding="utf-8"))
    values.pop("model_type", None)
    values.update(
        vocab_size=vocab, hidden_size=hidden, projection_dim=hidden,
        intermediate_size=shapes[CLIP_TEXT + "encoder.layers.0.mlp.fc1.weight"][0],
        num_hidden_layers=len(_indices(shapes, r"text_model\.encoder\.layers\.(\d+)\.")),
        num_attention_heads=hidden // 64 if hidden % 64 == 0 else max(h for h in range(1, 9) if hidden % h == 0),
        max_position_embeddings=shapes[CLIP_TEXT + "embeddings.position_embedding.weight"][0],
    )
    return CLIPTextConfig(**values)


# ---- T5-XXL -----------------------------------------------------------------------------------


def load_t5xxl(path: str | Path, dtype: torch.dtype = torch.bfloat16):
    """transformers' T5EncoderModel from ``t5xxl_fp16.safetensors`` / fp8 or an all-in-one file, sized
    from its shapes (T5 v1.1 XXL: d_model 4096, d_ff 10240, 24 layers, 64 heads, gated-gelu)."""
    from accelerate import init_empty_weights
    from transformers import T5EncoderModel

    path = Path(path).expanduser()
    with TensorFiles([path]) as files:
        prefix = _t5_prefix(path, files)
        config = t5_config(files.under(prefix))
        with init_empty_weights():
            model = T5EncoderModel(config)
        names = list(model.state_dict().keys())
        sources = _plain(files, names, prefix)
        embedding = next((prefix + k for k in ("shared.weight", "encoder.embed_tokens.weight") if prefix + k in files), None)
        if embedding is not None:  # files keep one of the two tied names
            for name in ("shared.weight", "encoder.embed_tokens.weight"):
                sources.setdefault(name, (embedding, lambda: files.get(embedding)))
        _fill(model, sources, lambda _n: dtype, path, "T5-XXL text encoder")
    model.encoder.embed_tokens.weight = model.shared.weight  # one table in memory, as transformers ties them
    return _frozen(model)


def _t5_prefix(path: Path, files: TensorFiles) -> str:
    for prefix in ("", T5XXL_PREFIX, "te3.", "t5xxl."):
        if prefix + "encoder.block.0.layer.0.SelfAttention.q.weight" in files:
            return prefix
    raise UserError(f"{path}: not a T5 text encoder (no encoder.block.0.layer.0.SelfAttention.q.weight)")


def t5_config(shapes: Mapping[str, tuple]):
    """A T5Config (encoder only) from the shapes, on the shipped T5 v1.1 XXL config."""
    from transformers import T5Config

    values = json.loads((CONFIG_DIR / "t5xxl.json").read_text(encoding="utf-8"))
    values.pop("model_type", None)
    embed = shapes.get("shared.weight") or shapes["encoder.embed_tokens.weight"]
    bias = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    heads = bias[1]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    ff_key = "encoder.block.0.layer.1.DenseReluDense." + ("wi_0.weight" if gated else "wi.weight")
    values.update(
        vocab_size=embed[0], d_model=embed[1], num_heads=heads,
        d_kv=shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // heads,
        d_ff=shapes[ff_key][0], relative_attention_num_buckets=bias[0],
        num_layers=len(_indices(shapes, r"encoder\.block\.(\d+)\.")),
        feed_forward_proj="gated-gelu" if gated else "relu",
    )
    if not gated:
        values.update(dense_act_fn="relu", is_gated_act=False)
    return T5Config(**values)


# ---- the AE -----------------------------------------------------------------------------------


def load_ae(path: str | Path, dtype: torch.dtype = torch.bfloat16):
    """diffusers' AutoencoderKL from ``ae.safetensors`` (BFL/LDM layout), an all-in-one file (``vae.``) or
    a diffusers VAE folder; 16 latent channels, scaling 0.3611 and shift 0.1159 (the shipped config)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    path = Path(path).expanduser()
    if path.is_dir():
        sub = "vae" if (path / "vae").is_dir() else None
        try:
            return _frozen(AutoencoderKL.from_pretrained(path, subfolder=sub, local_files_only=True, torch_dtype=dtype))
        except (OSError, EnvironmentError, ValueError) as exc:
            raise UserError(f"{path}: cannot load this diffusers VAE folder ({exc})") from None
    with TensorFiles([path]) as files:
        prefix = _ae_prefix(path, files)
        shapes = files.under(prefix)
        config = ae_config(shapes)
        with init_empty_weights():
            model = AutoencoderKL.from_config(config)
        names = list(model.state_dict().keys())
        if all(prefix + n in files for n in names):  # a file already in diffusers' layout
            sources = _plain(files, names, prefix)
        else:
            key_map = convert.ae_key_map(names, len(model.config.block_out_channels))
            sources = _plain(files, names, prefix, key_map.__getitem__)
        _fill(model, sources, lambda _n: dtype, path, "AE (VAE)")
    return _frozen(model)


def _ae_prefix(path: Path, files: TensorFiles) -> str:
    for prefix in ("",) + AE_PREFIXES:
        if prefix + "encoder.conv_in.weight" in files and prefix + "decoder.conv_out.weight" in files:
            return prefix
    raise UserError(f"{path}: not an AE / VAE (no encoder.conv_in / decoder.conv_out weights)")


def ae_config(shapes: Mapping[str, tuple]) -> dict:
    """AutoencoderKL's config from LDM-layout shapes, on the shipped Flux AE config."""
    values = json.loads((CONFIG_DIR / "ae.json").read_text(encoding="utf-8"))
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in shapes:  # diffusers layout
        levels = _indices(shapes, r"encoder\.down_blocks\.(\d+)\.")
        channels = [shapes[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"][0] for i in levels]
        per_level = len(_indices(shapes, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))
    else:
        levels = _indices(shapes, r"encoder\.down\.(\d+)\.")
        channels = [shapes[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in levels]
        per_level = len(_indices(shapes, r"encoder\.down\.0\.block\.(\d+)\."))
    values.update(
        in_channels=shapes["encoder.conv_in.weight"][1],
        out_channels=shapes["decoder.conv_out.weight"][0],
        down_block_types=["DownEncoderBlock2D"] * len(levels),
        up_block_types=["UpDecoderBlock2D"] * len(levels),
        block_out_channels=channels,
        layers_per_block=per_level,
        latent_channels=shapes["encoder.conv_out.weight"][0] // 2,
        norm_num_groups=_groups(channels),
        use_quant_conv="quant_conv.weight" in shapes,
        use_post_quant_conv="post_quant_conv.weight" in shapes,
    )
    return values


def describe(parts: FluxParts) -> str:
    return describe_flux(parts.kind)


# ---- the family seam's record -----------------------------------------------------------------


@dataclass
class FluxBaseModel(BaseModel):
    """BaseModel (model/load.py) for Flux.1 / Chroma: ``unet`` is the FluxTransformer, ``text_encoders``
    (CLIP-L, T5-XXL) or (T5-XXL,) for Chroma; ``noise_scheduler`` is None (the flow objective needs none)."""

    kind: str = ""
    config: Optional[FluxConfig] = None
    files: dict = field(default_factory=dict)  # as FluxParts.files
    message: str = ""  # which companion files were picked, for the user

    @property
    def transformer(self) -> FluxTransformer:
        return self.unet

    @property
    def is_tiny(self) -> bool:
        return "marker" in self.files


def base_model(parts: FluxParts, arch: Optional[str] = None, prediction_type: str = "flow") -> FluxBaseModel:
    """The seam's record of a loaded Flux model (``arch`` defaults to its kind)."""
    return FluxBaseModel(arch=arch or parts.kind, prediction_type=prediction_type, unet=parts.transformer,
                         vae=parts.vae, text_encoders=parts.text_encoders, tokenizers=parts.tokenizers,
                         noise_scheduler=None, source=parts.source, kind=parts.kind, config=parts.config,
                         files=dict(parts.files), message=parts.message)


def load_base_model(path: str | Path, arch: Optional[str] = None, dtype: torch.dtype = torch.bfloat16, *,
                    prediction_type: str = "flow", **options) -> FluxBaseModel:
    """``load_flux`` as the seam's record; ``options``: clip_l, t5xxl, vae, text_dtype, linear_dtype.

    A Family's ``load(path, detection, arch, prediction, dtype)`` calls this with the answers naming the
    companion files."""
    parts = load_flux(path, dtype=dtype, **options)
    if arch is not None and _kind_of(arch) not in (None, parts.kind):
        raise UserError(f"{path}: architecture is set to {arch}, but the file is {describe_flux(parts.kind)}; "
                        f"set architecture to auto or {parts.kind}")
    return base_model(parts, arch, prediction_type)


def load_builtin_tiny(kind: str, dtype: torch.dtype = torch.float32, **options) -> FluxBaseModel:
    """The tiny Flux dev / Chroma made in code (cached), loaded from its ComfyUI-style four files."""
    from easytrain.families.flux.tiny import tiny_flux_paths

    paths = tiny_flux_paths()
    return base_model(load_flux(paths.chroma if kind == CHROMA else paths.dev, dtype=dtype, **options), kind)


def _kind_of(arch: str) -> Optional[str]:
    from easytrain.families.flux.detect import KINDS

    return arch if arch in KINDS else None
