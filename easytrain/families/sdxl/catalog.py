"""SDXL (Pony, Illustrious, NoobAI eps and v-pred) as the catalog lists it, and its traced memory (light)."""

from __future__ import annotations

from easytrain.families.sdxl.blocks import SDXL
from easytrain.families.spec import STABILITY_LAYOUT, Architecture, ArchitectureMemory

ARCHITECTURES = (
    Architecture("sdxl", "SDXL", "sdxl", "epsilon", 1024, "sdxl_base_v1-0", "stable-diffusion-xl-v1-base", False,
                 STABILITY_LAYOUT, memory_factor=2.5, always_checkpoint=True, bucket_range=(512, 2048),
                 trains_text_encoder=False, block_layout="sdxl", unet_lr=2e-4,
                 uses_clip_skip=False, legacy_flags=frozenset({"sdxl"})),
    # NoobAI-style v-prediction SDXL; kohya marks it by modelspec.prediction_type "v", same base version
    Architecture("sdxl-v", "SDXL v-prediction (NoobAI v-pred)", "sdxl", "v_prediction", 1024, "sdxl_base_v1-0",
                 "stable-diffusion-xl-v1-base", False, STABILITY_LAYOUT, memory_factor=2.5, always_checkpoint=True,
                 bucket_range=(512, 2048), trains_text_encoder=False, block_layout="sdxl", unet_lr=2e-4,
                 uses_clip_skip=False, same_models_as="sdxl",
                 legacy_flags=frozenset({"sdxl", "v_parameterization"})),
)

BLOCK_LAYOUTS = (SDXL,)   # kohya's block numbering of its denoiser (block-wise settings)

# Where the UNet's, the VAE's and the text encoders' weights are in a single-file checkpoint
# (model/early_conversion.py converts those the run holds in fp32 early).
SINGLE_FILE_DENOISER_PREFIX = "model.diffusion_model."
SINGLE_FILE_VAE_PREFIX = "first_stage_model."
SINGLE_FILE_TEXT_ENCODER_PREFIX = "conditioner.embedders."

# Printed by `python bench/memory_trace.py` (precision "fp16" stands for bf16 too: the same bytes; "no" is fp32).
# An architecture built from another's shipped configs shares its entry (same_models_as).
MEMORY = {
    "sdxl": ArchitectureMemory(  # traced at 1024x1024, batch 1
        traced_side=1024,
        parameters={'text_encoder': 123060480,
                    'text_encoder_2': 694659840,
                    'unet': 2567463684,
                    'vae': 83653863},
        lora_per_dim={'text_encoder': 165888, 'text_encoder_2': 737280, 'unet': 2659840, 'unet_convs': 414400},
        text_activation_bytes={('fp16', False): 485041384,
                               ('fp16', True): 23181312,
                               ('no', False): 743828400,
                               ('no', True): 46362624},
        activation_bytes_per_pixel={('fp16', False): 8599.3,
                                    ('fp16', True): 757.6,
                                    ('no', False): 13017.3,
                                    ('no', True): 1195.1},
        vae_encode_bytes_per_pixel=2560.0,
    ),
}
