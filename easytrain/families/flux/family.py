"""Flux.1 [dev], [schnell] and Chroma as a family: what the loop, validation, the network and sampling use.

Loaded from the four files ComfyUI users keep (transformer, clip_l, t5xxl, ae: load.py), trained as
kohya's flux_train_network.py trains them: the flow-matching objective (objective.py), kohya's
lora_flux module set (targets.py), T5 and CLIP-L outputs cached when the encoders are frozen, the
transformer optionally stored in fp8 (fp8.py) and with blocks swapped to the CPU (block_swap.py),
samples with the flow Euler sampler (sampling.py).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Optional

import torch

from easytrain.families.base import Family, fill_text_cache
from easytrain.families.flux.options import T5_TOKENS, flow_settings, variant_of

CHROMA = "chroma"
class FluxConditioner:
    """Captions -> the transformer's text arguments, text.FluxText.transformer_kwargs: ``txt``, ``txt_attention_mask``
    (None unless the T5 mask applies) and ``y`` (CLIP-L's pooled output; not for Chroma), as
    FluxObjective.predict hands them to the transformer."""

    def __init__(self, text_encoders, tokenizers, *, arch: str, device, train_text_encoder: bool,
                 cache_text: bool, apply_t5_attn_mask: bool) -> None:
        self.chroma = arch == CHROMA
        if self.chroma:
            (self.t5,), (self.t5_tokenizer,) = text_encoders, tokenizers
            self.clip, self.clip_tokenizer = None, None
        else:
            self.clip, self.t5 = text_encoders
            self.clip_tokenizer, self.t5_tokenizer = tokenizers
        self.max_length = min(T5_TOKENS[variant_of(arch)], self.t5_tokenizer.model_max_length or 10 ** 6)
        self.device = device
        self.train_text_encoder = train_text_encoder
        self.apply_t5_attn_mask = apply_t5_attn_mask
        self.cache: Optional[dict] = {} if cache_text else None

    def _encode(self, captions) -> dict:
        from easytrain.families.flux.text import encode_prompts

        text = encode_prompts(captions, t5=self.t5, t5_tokenizer=self.t5_tokenizer, max_length=self.max_length,
                              clip_l=self.clip, clip_tokenizer=self.clip_tokenizer,
                              apply_t5_attn_mask=self.apply_t5_attn_mask, chroma=self.chroma)
        return {key: None if value is None else value.to(self.device)
                for key, value in text.transformer_kwargs().items()}

    def precache(self, captions) -> None:
        fill_text_cache(self._cached, captions)

    def _cached(self, captions) -> dict:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            with torch.no_grad():
                encoded = self._encode(missing)
            for index, caption in enumerate(missing):
                self.cache[caption] = {key: None if value is None else value[index]
                                       for key, value in encoded.items()}
        rows = [self.cache[c] for c in captions]
        return {key: None if rows[0][key] is None else torch.stack([row[key] for row in rows]).to(self.device)
                for key in rows[0]}

    def __call__(self, batch) -> dict:
        if self.cache is not None:
            return self._cached(batch.captions)
        with torch.set_grad_enabled(self.train_text_encoder):
            return self._encode(batch.captions)


def swaps_blocks_on(device) -> bool:
    """Whether blocks_to_swap applies on ``device``: a GPU's memory is what swapping saves; on the CPU the
    blocks stay where they are (a test makes this true to run the swap with the CPU on both sides)."""
    return torch.device(device).type != "cpu"


class Flux(Family):
    family = "flux"
    vae_encodes_in_half = False  # the AE encodes in fp32 when latents are not cached, as SDXL's VAE

    def load(self, path: Path, detection, arch: str, prediction: str, dtype, options=None, vae=None):
        from easytrain.families.flux.load import load_base_model

        options = options or {}
        return load_base_model(path, arch, dtype, prediction_type=prediction, clip_l=options.get("clip_l"),
                               t5xxl=options.get("t5xxl"), vae=vae, t5_tokenizer=options.get("t5_tokenizer"))

    def store_base(self, base, dtype) -> None:
        """fp8_base: the blocks' frozen Linear weights stored in fp8 (computed in bf16, or the run's fp16), after
        the network is attached: its own layers stay fp32 (kohya's --fp8_base)."""
        if not base.options.get("fp8_base"):
            return
        from easytrain.families.flux.fp8 import store_in_fp8

        compute = dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        store_in_fp8(base.unet, compute_dtype=compute,
                     include=lambda name, _: name.startswith(("double_blocks.", "single_blocks.")))

    def load_builtin_tiny(self, dtype, vae=None):
        from easytrain.families.flux.load import load_builtin_tiny

        return load_builtin_tiny("flux-dev", dtype)

    def to_device(self, base, device) -> bool:
        """With blocks_to_swap, those blocks' frozen weights stay on the CPU and come in for their turn."""
        swap = int(base.options.get("blocks_to_swap") or 0)
        if not swap or not swaps_blocks_on(device):
            base.unet.to(device)
            return True
        from easytrain.families.flux.block_swap import enable_block_swap, move_except_swapped

        enable_block_swap(base.unet, swap, device)
        move_except_swapped(base.unet, device)
        return False

    def objective(self, base, loss, device):
        from easytrain.families.flux.objective import FluxObjective

        options = getattr(base, "options", MappingProxyType({}))
        return FluxObjective(flow_settings(base.arch, options), variant_of(base.arch), loss, device=device)

    def network_models(self, base) -> dict:
        """The transformer and the text encoders that train: Chroma's T5 (its only one); CLIP-L, and T5 only
        when train_t5 asks for it (kohya's default trains CLIP-L alone)."""
        if base.arch == CHROMA:
            (t5,) = base.text_encoders
            return {"unet": base.unet, "text_encoder": t5}
        clip, t5 = base.text_encoders
        return {"unet": base.unet, "text_encoder": clip,
                "text_encoder_2": t5 if base.options.get("train_t5") else None}

    def network_targets(self, models: dict, spec) -> list:
        from easytrain.families.flux.targets import flux_targets

        chroma = "text_encoder_2" not in models
        t5 = models.get("text_encoder") if chroma else models.get("text_encoder_2")
        return flux_targets({"unet": models.get("unet"), "clip_l": None if chroma else models.get("text_encoder"),
                             "t5": t5}, CHROMA if chroma else "dev", train_transformer=spec.train_unet,
                            train_clip=spec.train_text_encoder and not chroma,
                            train_t5=spec.train_text_encoder and t5 is not None)

    def conditioner(self, text_encoders, tokenizers, *, clip_skip, max_token_length, device, train_text_encoder,
                    cache_text, options=None):
        options = options or {}
        arch = self._arch_of(text_encoders)
        settings = flow_settings(arch, options)
        return FluxConditioner(text_encoders, tokenizers, arch=arch, device=device,
                               train_text_encoder=train_text_encoder, cache_text=cache_text,
                               apply_t5_attn_mask=settings.apply_t5_attn_mask or arch == CHROMA)

    @staticmethod
    def _arch_of(text_encoders) -> str:
        return CHROMA if len(text_encoders) == 1 else "flux-dev"

    def render_samples(self, *, base, unet, text_encoders, prompts, output_dir, name, epoch, device, dtype,
                       clip_skip, max_token_length, on_progress=None, step=None):
        from easytrain.families.flux.samples import render_flux_samples

        return render_flux_samples(base=base, transformer=unet, text_encoders=text_encoders, prompts=prompts,
                                   output_dir=output_dir, name=name, epoch=epoch, step=step, device=device,
                                   dtype=dtype, on_progress=on_progress)
