"""The embedded tiny model: SD1-shaped, made in code from a fixed seed.

It is the base model of the demo run and of the tests. Nothing is downloaded:
the UNet, VAE and CLIP text encoder are built from small configs, and the
tokenizer is a byte-level CLIP BPE with a handful of merges written here.
The layout mirrors SD1.x (cross-attention down/up blocks, two resnets per
block, conv proj_in/proj_out, 8x VAE downscale) so that key conversion,
LoRA targeting and export exercise the same paths as a real checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from easytrain.model.tiny_cache import build_once

TINY_SEED = 0
TINY_VERSION = 1  # bump when the architecture below changes; invalidates caches

UNET_CONFIG = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=2,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
    use_linear_projection=False,
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 32, 32, 32),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
)


def _byte_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_TINY_WORDS = ("red", "green", "blue", "yellow", "circle", "square", "triangle", "shape", "photo", "of", "a", "the")


def tiny_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A small CLIP-style BPE vocabulary: every byte, every byte + '</w>', a few whole words."""
    chars = list(_byte_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            a, b = pieces[0], pieces[1]
            merges.append((a, b))
            pieces = [a + b] + pieces[2:]
            if pieces[0] not in vocab_list:
                vocab_list.append(pieces[0])
    # de-duplicate merges while keeping order
    seen: set[tuple[str, str]] = set()
    unique = [m for m in merges if not (m in seen or seen.add(m))]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, unique


def build_tiny_tokenizer(folder: Path | None = None, pad_token: str = "<|endoftext|>"):
    """A real CLIPTokenizer over the tiny vocabulary (saved to ``folder`` if given)."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab_and_merges()
    tok = CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token)
    tok.model_max_length = 77
    if folder is not None:
        tok.save_pretrained(str(folder))
    return tok


def text_encoder_config(vocab_size: int):
    from transformers import CLIPTextConfig

    vocab, _ = tiny_vocab_and_merges()
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        hidden_act="quick_gelu",
        # given here, not left at CLIP's defaults (49406/49407), which lie outside the tiny vocabulary
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )


def build_tiny_components(seed: int = TINY_SEED) -> dict:
    """Fresh tiny components in fp32: unet, vae, text_encoder, tokenizer, scheduler."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = build_tiny_tokenizer()
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**VAE_CONFIG)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(text_encoder_config(len(tokenizer)))
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = PNDMScheduler(**SCHEDULER_CONFIG)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def save_tiny_diffusers(folder: Path, seed: int = TINY_SEED) -> Path:
    """Write the tiny model as a diffusers folder (model_index.json layout)."""
    from diffusers import StableDiffusionPipeline

    parts = build_tiny_components(seed)
    pipe = StableDiffusionPipeline(
        unet=parts["unet"], vae=parts["vae"], text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"], scheduler=parts["scheduler"],
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


class TinyPaths(NamedTuple):
    diffusers_dir: Path
    single_file: Path


def tiny_model_paths(cache_dir: str | os.PathLike | None = None) -> TinyPaths:
    """The cached tiny model as a diffusers folder and as an original-layout single file.

    Built once per TINY_VERSION: everything is written into a temporary folder
    that is renamed into place, so a crash or a concurrent build never leaves a
    half-written model behind.
    """
    final = build_once(f"tiny-v{TINY_VERSION}", _build_tiny_cache, cache_dir)
    return TinyPaths(final / "diffusers", final / "tiny-sd1.safetensors")


def mark_tiny(diffusers_dir: Path, marker: str, version: int) -> dict[str, str]:
    """Write the marker file that detection reads in the diffusers folder; return the single file's metadata."""
    from easytrain.model.detect import TINY_MARKER_FILE, TINY_MARKER_KEY

    text = json.dumps({TINY_MARKER_KEY: marker, "version": version})
    (diffusers_dir / TINY_MARKER_FILE).write_text(text + "\n", encoding="utf-8")
    return {TINY_MARKER_KEY: marker, "easytrain.tiny_version": str(version)}


def _build_tiny_cache(folder: Path) -> None:
    from easytrain.families.sd.convert import write_single_file
    from easytrain.families.sd.signature import TINY_MARKER as TINY_MARKER_VALUE
    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    metadata = mark_tiny(save_tiny_diffusers(folder / "diffusers"), TINY_MARKER_VALUE, TINY_VERSION)
    parts = build_tiny_components()
    write_single_file(parts["unet"], parts["vae"], parts["text_encoder"], folder / "tiny-sd1.safetensors", metadata)
