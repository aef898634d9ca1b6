"""A tiny Flux.1 dev and a tiny Chroma, made in code from fixed seeds, for the tests and quick checks.

The same layout as the real files, small: the transformer in BFL's layout (2 double and 2 single blocks,
hidden 64, 2 heads), a tiny CLIP-L (CLIP's real 49408-token vocabulary, width 32), a tiny T5 encoder
(gated-gelu, relative attention; a tiny vocabulary) and a tiny 16-channel AE (8x down). ``tiny_flux_paths`` writes them once into the cache:

    tiny-flux-vN/models/diffusion_models/tiny-flux-dev.safetensors   BFL keys, no prefix
    tiny-flux-vN/models/diffusion_models/tiny-chroma.safetensors     BFL keys, Chroma
    tiny-flux-vN/models/text_encoders/clip_l.safetensors             text_model.*
    tiny-flux-vN/models/text_encoders/t5xxl_fp16.safetensors         encoder.*, shared.weight
    tiny-flux-vN/models/vae/ae.safetensors                           encoder.down.N.block.M.*
    tiny-flux-vN/diffusers/flux-dev, tiny-flux-vN/diffusers/chroma   FluxPipeline / ChromaPipeline folders

The transformer files carry the tiny marker (``easytrain.model``: "tiny-flux-dev" / "tiny-chroma"),
which is what lets the loader give them the tiny T5 tokenizer; real checkpoints never get it. CLIP-L's
tokenizer is the real one for both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from easytrain.families.flux.detect import CHROMA, FLUX_DEV, FLUX_SCHNELL, TINY_MARKERS
from easytrain.model.tiny_cache import build_once

TINY_FLUX_VERSION = 2
TINY_SEED = 0
MARKERS = TINY_MARKERS

T5_CONFIG = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                 layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                 use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                 decoder_start_token_id=0)

CLIP_CONFIG = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
                   num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                   bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)

AE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                 up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[32, 32, 32, 32],
                 layers_per_block=1, latent_channels=16, norm_num_groups=32, sample_size=256,
                 scaling_factor=0.3611, shift_factor=0.1159, force_upcast=True,
                 use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True)

SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                        max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def tiny_config(kind: str = FLUX_DEV):
    """The tiny transformer's FluxConfig (T5 width 32, CLIP width 32, 16-channel latents packed 2x2)."""
    from easytrain.families.flux.model import FluxConfig, axes_for

    extra = dict(approximator_in_dim=64, approximator_hidden_dim=32, approximator_layers=2) if kind == CHROMA else {}
    return FluxConfig(kind=kind, in_channels=64, out_channels=64, hidden_size=64, num_heads=2, depth=2,
                      depth_single_blocks=2, context_in_dim=T5_CONFIG["d_model"],
                      vec_in_dim=0 if kind == CHROMA else 32, mlp_ratio=4.0, guidance_embed=kind == FLUX_DEV,
                      axes_dim=axes_for(32), **extra)


def _seeded(seed: int, make):
    import torch

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return make()
    finally:
        torch.random.set_rng_state(state)


def build_tiny_transformer(kind: str = FLUX_DEV, seed: int = TINY_SEED):
    """The tiny transformer with random weights (adaLN weights not zero, so every input matters)."""
    import torch

    from easytrain.families.flux.model import FluxTransformer

    def make():
        model = FluxTransformer(tiny_config(kind))
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.ndim == 2:
                    param.normal_(0.0, 0.5 / param.shape[1] ** 0.5 * 2)
                elif name.endswith(".scale"):
                    param.uniform_(0.8, 1.2)
                else:
                    param.normal_(0.0, 0.02)
        return model

    return _seeded(seed + {FLUX_DEV: 0, FLUX_SCHNELL: 10, CHROMA: 20}[kind], make)


def build_tiny_text_and_ae(seed: int = TINY_SEED) -> dict:
    """The tiny CLIP-L, T5 encoder and AE with their tokenizers (fp32)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from easytrain.families.flux.tokenizer import build_tiny_t5_tokenizer, load_clip_l_tokenizer

    clip_tokenizer = load_clip_l_tokenizer()
    t5_tokenizer = build_tiny_t5_tokenizer()
    clip = _seeded(seed + 1, lambda: CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)))
    t5 = _seeded(seed + 2, lambda: T5EncoderModel(T5Config(**T5_CONFIG)))
    ae = _seeded(seed + 3, lambda: AutoencoderKL(**AE_CONFIG))
    for model in (clip, t5, ae):
        model.eval()
    return dict(clip_l=clip, t5=t5, vae=ae, clip_tokenizer=clip_tokenizer, t5_tokenizer=t5_tokenizer)


class TinyFluxPaths(NamedTuple):
    root: Path
    dev: Path  # models/diffusion_models/tiny-flux-dev.safetensors
    chroma: Path  # models/diffusion_models/tiny-chroma.safetensors
    clip_l: Path
    t5xxl: Path
    ae: Path
    dev_diffusers: Path
    chroma_diffusers: Path


def tiny_flux_paths(cache_dir: str | os.PathLike | None = None) -> TinyFluxPaths:
    """The cached tiny models, built once per TINY_FLUX_VERSION (model/tiny_cache.py)."""
    return _paths(build_once(f"tiny-flux-v{TINY_FLUX_VERSION}", write_tiny_flux, cache_dir))


def _paths(root: Path) -> TinyFluxPaths:
    models = root / "models"
    return TinyFluxPaths(root, models / "diffusion_models" / "tiny-flux-dev.safetensors",
                         models / "diffusion_models" / "tiny-chroma.safetensors",
                         models / "text_encoders" / "clip_l.safetensors",
                         models / "text_encoders" / "t5xxl_fp16.safetensors", models / "vae" / "ae.safetensors",
                         root / "diffusers" / "flux-dev", root / "diffusers" / "chroma")


def write_tiny_flux(root: Path) -> TinyFluxPaths:
    """Write the tiny dev and Chroma models under ``root``: the ComfyUI four-file tree and diffusers folders."""
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    paths = _paths(Path(root))
    parts = build_tiny_text_and_ae()
    for kind, target in ((FLUX_DEV, paths.dev), (CHROMA, paths.chroma)):
        write_bfl_transformer(build_tiny_transformer(kind), target, {"easytrain.model": MARKERS[kind],
                                                                     "easytrain.tiny_version": str(TINY_FLUX_VERSION)})
    write_clip_l(parts["clip_l"], paths.clip_l)
    write_t5xxl(parts["t5"], paths.t5xxl)
    write_ae(parts["vae"], paths.ae)
    for kind, target in ((FLUX_DEV, paths.dev_diffusers), (CHROMA, paths.chroma_diffusers)):
        write_diffusers_folder(build_tiny_transformer(kind), parts, target, marker=MARKERS[kind])
    return paths


# ---- writers (the layouts people's files have) ------------------------------------------------


def _save(state: dict, path: Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save_file

    from easytrain.fsutil import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=dict(metadata or {}))
    return path


def write_bfl_transformer(model, path: Path, metadata: dict | None = None, *, prefix: str = "", dtype=None) -> Path:
    """The transformer as a BFL-layout file (``prefix`` "model.diffusion_model." as some exports have)."""
    state = {prefix + k: (v if dtype is None else v.to(dtype)) for k, v in model.state_dict().items()}
    return _save(state, Path(path), metadata)


def write_clip_l(model, path: Path) -> Path:
    """CLIP-L as ComfyUI's ``clip_l.safetensors``: transformers' ``text_model.*`` keys."""
    return _save({k if k.startswith("text_model.") else "text_model." + k: v
                  for k, v in model.state_dict().items() if not k.endswith("position_ids")}, Path(path))


def write_t5xxl(model, path: Path, dtype=None) -> Path:
    """The T5 encoder as ``t5xxl_fp16.safetensors``: ``shared.weight`` and ``encoder.*`` (one embedding copy)."""
    state = {k: (v if dtype is None else v.to(dtype)) for k, v in model.state_dict().items()
             if k != "encoder.embed_tokens.weight"}
    return _save(state, Path(path))


def write_ae(vae, path: Path) -> Path:
    """The AE in BFL's / LDM's layout (``encoder.down.0.block.0.conv1.weight``, 1x1-conv attention)."""
    from easytrain.families.flux.convert import ae_key

    levels = len(vae.config.block_out_channels)
    state = {}
    for name, tensor in vae.state_dict().items():
        if ".attentions." in name and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the LDM attention uses 1x1 convolutions
        state[ae_key(name, levels)] = tensor
    return _save(state, Path(path))


def diffusers_transformer(model):
    """Our transformer as diffusers' FluxTransformer2DModel / ChromaTransformer2DModel, same weights."""
    from diffusers import ChromaTransformer2DModel, FluxTransformer2DModel

    from easytrain.families.flux.convert import bfl_to_diffusers, diffusers_config

    cls = ChromaTransformer2DModel if model.config.chroma else FluxTransformer2DModel
    result = cls(**diffusers_config(model.config))
    result.load_state_dict(bfl_to_diffusers(model.state_dict()), strict=True)
    return result.eval()


def write_diffusers_folder(model, parts: dict, folder: Path, marker: str | None = None) -> Path:
    """A FluxPipeline / ChromaPipeline folder holding ``model`` and the tiny text encoders and AE."""
    import json

    from diffusers import ChromaPipeline, FlowMatchEulerDiscreteScheduler, FluxPipeline

    from easytrain.model.detect import TINY_MARKER_FILE, TINY_MARKER_KEY

    scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    transformer = diffusers_transformer(model)
    if model.config.chroma:
        pipe = ChromaPipeline(scheduler=scheduler, vae=parts["vae"], text_encoder=parts["t5"],
                              tokenizer=parts["t5_tokenizer"], transformer=transformer)
    else:
        pipe = FluxPipeline(scheduler=scheduler, vae=parts["vae"], text_encoder=parts["clip_l"],
                            tokenizer=parts["clip_tokenizer"], text_encoder_2=parts["t5"],
                            tokenizer_2=parts["t5_tokenizer"], transformer=transformer)
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    if marker:
        text = json.dumps({TINY_MARKER_KEY: marker, "version": TINY_FLUX_VERSION})
        (folder / TINY_MARKER_FILE).write_text(text + "\n", encoding="utf-8")
    return folder
