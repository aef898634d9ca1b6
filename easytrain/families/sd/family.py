"""SD1.x and SD2.x: one CLIP text encoder, hidden states as the only conditioning.

SD1 uses OpenAI's CLIP ViT-L (pad with the end token); SD2 uses OpenCLIP ViT-H
stored in the OpenCLIP layout (fused q/k/v) and pads with "!". Both are trained
as kohya's train_network.py trains them: clip skip, captions in 75-token
chunks, UNet names in the diffusers module path, one text encoder as lora_te_.
"""

from __future__ import annotations

from pathlib import Path

import torch

from easytrain.families.base import fill_text_cache
from easytrain.families.ddpm.family import DdpmFamily
from easytrain.families.clip_text import TextStateCache, encode_tokens, tokenize_captions
from easytrain.families.sd import load
from easytrain.model.load import BUILTIN_TINY, CLIP_PAD
from easytrain.host_copy import to_device


class ClipConditioner:
    """Captions -> ``encoder_hidden_states`` from one CLIP text encoder."""

    def __init__(self, text_encoder, tokenizer, *, clip_skip: int, max_token_length: int, device,
                 train_text_encoder: bool, cache_text: bool) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.clip_skip = clip_skip
        self.max_token_length = max_token_length
        self.device = device
        self.train_text_encoder = train_text_encoder
        # A frozen text encoder and fixed captions give the same states every epoch: encode each caption once.
        self.cache = (TextStateCache(text_encoder, tokenizer, clip_skip=clip_skip, max_token_length=max_token_length,
                                     device=device) if cache_text else None)

    def precache(self, captions) -> None:
        fill_text_cache(self.cache, captions)

    def __call__(self, batch) -> dict:
        if self.cache is not None:
            return {"encoder_hidden_states": self.cache(batch.captions)}
        input_ids = to_device(tokenize_captions(self.tokenizer, batch.captions, self.max_token_length), self.device)
        with torch.set_grad_enabled(self.train_text_encoder):
            states = encode_tokens(self.text_encoder, input_ids, self.clip_skip)
        return {"encoder_hidden_states": states}


class StableDiffusion(DdpmFamily):
    """What SD1 and SD2 share; the subclasses set the tokenizer's pad and the text encoder's file layout."""

    pad_token = CLIP_PAD
    openclip_text = False           # the file keeps the text encoder in the OpenCLIP layout
    infers_sizes = False            # configs may be read off a file whose sizes differ from the shipped ones

    def shipped_parts(self, arch: str):
        return load.shipped_parts(arch, pad=self.pad_token, openclip_text=self.openclip_text)

    def load(self, path: Path, detection, arch: str, prediction: str, dtype):
        if path.is_dir():
            return load.load_sd_folder(path, arch, prediction, dtype, pad_token=self.pad_token)
        if detection.is_tiny:
            return load.load_single_file(path, load.tiny_parts(), arch, prediction, dtype)
        parts = self.shipped_parts(arch)
        if self.infers_sizes and path.suffix.lower() == ".safetensors":
            parts = load.parts_for_sizes(path, parts)
        return load.load_single_file(path, parts, arch, prediction, dtype)

    def network_models(self, base) -> dict:
        return {"unet": base.unet, "text_encoder": base.text_encoder}

    def network_targets(self, models: dict, spec) -> list:
        from easytrain.families.sd.targets import find_targets

        return find_targets(models.get("unet"), models.get("text_encoder"), spec)

    def conditioner(self, text_encoders, tokenizers, *, clip_skip, max_token_length, device, train_text_encoder,
                    cache_text):
        (text_encoder,), (tokenizer,) = text_encoders, tokenizers
        return ClipConditioner(text_encoder, tokenizer, clip_skip=clip_skip, max_token_length=max_token_length,
                               device=device, train_text_encoder=train_text_encoder, cache_text=cache_text)

    def render_samples(self, *, base, unet, text_encoders, prompts, output_dir, name, epoch, device, dtype,
                       clip_skip, max_token_length, on_progress=None, step=None):
        from easytrain.families.sd.sampling import generate_samples

        (text_encoder,), (tokenizer,) = text_encoders, base.tokenizers
        return generate_samples(
            unet=unet, vae=base.vae, text_encoder=text_encoder, tokenizer=tokenizer, prompts=prompts,
            output_dir=output_dir, name=name, epoch=epoch, step=step, device=device, dtype=dtype, clip_skip=clip_skip,
            prediction_type=base.prediction_type, scheduler_config=base.noise_scheduler.config,
            max_token_length=max_token_length, on_progress=on_progress,
        )


class SD1(StableDiffusion):
    family = "sd1"
    infers_sizes = True

    def load_builtin_tiny(self, dtype):
        from easytrain.families.sd import tiny

        model = load.load_sd_folder(tiny.tiny_model_paths().diffusers_dir, "sd1", "epsilon", dtype,
                                    pad_token=self.pad_token)
        model.source = BUILTIN_TINY
        return model


class SD2(StableDiffusion):
    family = "sd2"
    pad_token = "!"
    openclip_text = True
