"""SDXL (and its families: Pony, Illustrious, NoobAI eps and v-pred): two text encoders, added conditioning.

Trained as kohya's sdxl_train_network.py trains it: the conditioning of
families/sdxl/text.py (both encoders' penultimate states, bigG's pooled output,
size/crop time ids), UNet modules named in Stability's layout
(families/sdxl/targets.py), text encoders as lora_te1_ (CLIP-L) and lora_te2_
(bigG). Clip skip does not apply. The SDXL VAE overflows in fp16, so it encodes
in fp32.
"""

from __future__ import annotations

from pathlib import Path

from easytrain.families.ddpm.family import DdpmFamily
from easytrain.families.sdxl.text import SdxlConditioner


class SDXL(DdpmFamily):
    family = "sdxl"
    vae_encodes_in_half = False

    def load(self, path: Path, detection, arch: str, prediction: str, dtype):
        from easytrain.families.sdxl.load import load_sdxl

        return load_sdxl(path, dtype, arch=arch, prediction_type=prediction, detection=detection)

    def load_builtin_tiny(self, dtype):
        raise NotImplementedError("the built-in tiny model is SD1-shaped")

    def network_models(self, base) -> dict:
        text_encoder, text_encoder_2 = base.text_encoders
        return {"unet": base.unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}

    def network_targets(self, models: dict, spec) -> list:
        from easytrain.families.sdxl.targets import sdxl_text_encoder_targets, sdxl_unet_targets

        targets = []
        if spec.train_unet and models.get("unet") is not None:
            targets += sdxl_unet_targets(models["unet"], with_convs=spec.targets_convs)
        if spec.train_text_encoder:
            for part, second in (("text_encoder", False), ("text_encoder_2", True)):
                if models.get(part) is not None:
                    targets += sdxl_text_encoder_targets(models[part], second=second)
        return targets

    def conditioner(self, text_encoders, tokenizers, *, clip_skip, max_token_length, device, train_text_encoder,
                    cache_text):
        return SdxlConditioner(tuple(text_encoders), tuple(tokenizers), max_token_length=max_token_length,
                               device=device, train_text_encoder=train_text_encoder, cache_text=cache_text)

    def render_samples(self, *, base, unet, text_encoders, prompts, output_dir, name, epoch, device, dtype,
                       clip_skip, max_token_length, on_progress=None, step=None):
        from easytrain.families.sdxl.sampling import generate_sdxl_samples

        return generate_sdxl_samples(
            unet=unet, vae=base.vae, text_encoders=tuple(text_encoders), tokenizers=tuple(base.tokenizers),
            prompts=prompts, output_dir=output_dir, name=name, epoch=epoch, step=step, device=device, dtype=dtype,
            prediction_type=base.prediction_type, scheduler_config=base.noise_scheduler.config,
            max_token_length=max_token_length, on_progress=on_progress,
        )
