"""SD1.x and SD2.x as the catalog lists them, and the memory bench/memory_trace.py traced for them (light)."""

from __future__ import annotations

from easytrain.families.sd.blocks import SD
from easytrain.families.spec import DIFFUSERS_LAYOUT, Architecture, ArchitectureMemory

ARCHITECTURES = (
    Architecture("sd1", "SD1.x", "sd1", "epsilon", 512, "sd_v1", "stable-diffusion-v1", False, DIFFUSERS_LAYOUT),
    Architecture("sd2", "SD2.x 512 (epsilon)", "sd2", "epsilon", 512, "sd_v2", "stable-diffusion-v2-512", True,
                 DIFFUSERS_LAYOUT, legacy_flags=frozenset({"v2"})),
    Architecture("sd2-v", "SD2.x 768 (v-prediction)", "sd2", "v_prediction", 768, "sd_v2_768_v",
                 "stable-diffusion-v2-768-v", True, DIFFUSERS_LAYOUT,
                 legacy_flags=frozenset({"v2", "v_parameterization"})),
)

BLOCK_LAYOUTS = (SD,)   # kohya's block numbering of its denoiser (block-wise settings)

# Where the UNet's, the VAE's and the text encoders' weights are in a single-file checkpoint
# (model/early_conversion.py converts those the run holds in fp32 early).
SINGLE_FILE_DENOISER_PREFIX = "model.diffusion_model."
SINGLE_FILE_VAE_PREFIX = "first_stage_model."
SINGLE_FILE_TEXT_ENCODER_PREFIX = "cond_stage_model."

# Printed by `python bench/memory_trace.py` (precision "fp16" stands for bf16 too: the same bytes; "no" is fp32).
MEMORY = {
    "sd1": ArchitectureMemory(  # traced at 512x512, batch 1
        traced_side=512,
        parameters={'text_encoder': 123060480, 'unet': 859520964, 'vae': 83653863},
        lora_per_dim={'text_encoder': 165888, 'unet': 423936, 'unet_convs': 626880},
        text_activation_bytes={('fp16', False): 97839660,
                               ('fp16', True): 4257792,
                               ('no', False): 156341064,
                               ('no', True): 8515584},
        activation_bytes_per_pixel={('fp16', False): 5210.6,
                                    ('fp16', True): 1316.3,
                                    ('no', False): 7210.7,
                                    ('no', True): 1837.1},
        vae_encode_bytes_per_pixel=2560.0,
    ),
    "sd2": ArchitectureMemory(  # traced at 512x512, batch 1
        traced_side=512,
        parameters={'text_encoder': 340387840, 'unet': 865910724, 'vae': 83653863},
        lora_per_dim={'text_encoder': 423936, 'unet': 432128, 'unet_convs': 626880},
        text_activation_bytes={('fp16', False): 219716912,
                               ('fp16', True): 10881024,
                               ('no', False): 333581160,
                               ('no', True): 21762048},
        activation_bytes_per_pixel={('fp16', False): 5067.4,
                                    ('fp16', True): 1160.4,
                                    ('no', False): 7209.5,
                                    ('no', True): 1836.6},
        vae_encode_bytes_per_pixel=2560.0,
    ),
    "sd2-v": ArchitectureMemory(  # traced at 768x768, batch 1
        traced_side=768,
        parameters={'text_encoder': 340387840, 'unet': 865910724, 'vae': 83653863},
        lora_per_dim={'text_encoder': 423936, 'unet': 432128, 'unet_convs': 626880},
        text_activation_bytes={('fp16', False): 219716912,
                               ('fp16', True): 10881024,
                               ('no', False): 333581160,
                               ('no', True): 21762048},
        activation_bytes_per_pixel={('fp16', False): 5012.6,
                                    ('fp16', True): 1161.1,
                                    ('no', False): 7165.0,
                                    ('no', True): 1839.0},
        vae_encode_bytes_per_pixel=2560.0,
    ),
}
