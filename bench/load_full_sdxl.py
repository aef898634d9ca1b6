"""Load a full-size SDXL single file (random weights) and report time, peak memory and the LoRA module set.

The checkpoint is made here, never downloaded: the four models are built on the
meta device from easytrain's shipped SDXL configs and their Stability-layout
shapes (fused bigG q/k/v, transposed text projection) are streamed into a
.safetensors file one tensor at a time, as bench/load_full_sd15.py does. Then
``load_sdxl`` reads it, parameter counts are checked against SDXL 1.0's, and
the LoRA targets are counted against kohya's (722 UNet + 72 TE1 + 192 TE2
modules, 788 UNet with conv layers). Needs 6.5 GiB of disk (fp16); the loaded
weights stay mapped from the file, so the peak RSS is about 1.3 GiB.

    python bench/load_full_sdxl.py [--dtype fp16|fp32] [--keep PATH]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_full_sd15 import bench_arguments, peak_rss_mib, report_counts, write_and_report  # noqa: E402

SDXL_COUNTS = {
    "unet": 2_567_463_684,
    "vae": 83_653_863,
    "text_encoder": 123_060_480,
    "text_encoder_2": 694_659_840,
}
LORA_MODULES = {"unet": 722, "unet_with_convs": 788, "text_encoder": 72, "text_encoder_2": 192}


def sdxl_meta_models() -> dict:
    """SDXL 1.0's four models on the meta device, from the shipped configs."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from easytrain.families.sdxl.load import SDXL_CONFIG_DIR as folder

    with init_empty_weights():
        return dict(
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")),
        )


def sdxl_original_shapes(models: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Every key of an SDXL 1.0 single file in Stability's layout, with its shape."""
    from easytrain.families.sdxl.convert import sdxl_original_state_dict

    models = models or sdxl_meta_models()
    state = sdxl_original_state_dict(models["unet"], models["vae"], models["text_encoder"], models["text_encoder_2"])
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def lora_module_counts(unet, text_encoder, text_encoder_2) -> dict[str, int]:
    from easytrain.families.sdxl.targets import sdxl_text_encoder_targets, sdxl_unet_targets

    return {
        "unet": len(sdxl_unet_targets(unet, with_convs=False)),
        "unet_with_convs": len(sdxl_unet_targets(unet, with_convs=True)),
        "text_encoder": len(sdxl_text_encoder_targets(text_encoder, second=False)),
        "text_encoder_2": len(sdxl_text_encoder_targets(text_encoder_2, second=True)),
    }


def main() -> int:
    dtype, keep = bench_arguments(__doc__.splitlines()[0])

    from easytrain.families.sdxl.load import load_sdxl

    with tempfile.TemporaryDirectory() as tmp:
        path = keep or Path(tmp) / "sdxl-random.safetensors"
        write_and_report(path, sdxl_original_shapes(), dtype)

        start = time.perf_counter()
        model = load_sdxl(path, dtype=dtype)
        loaded = time.perf_counter() - start
        print(f"loaded as sdxl/{model.prediction_type} in {loaded:.1f} s, peak RSS {peak_rss_mib():.0f} MiB")
        parts = dict(unet=model.unet, vae=model.vae, text_encoder=model.text_encoders[0],
                     text_encoder_2=model.text_encoders[1])
        counts = {part: sum(p.numel() for p in parts[part].parameters()) for part in SDXL_COUNTS}
        sizes_ok = report_counts(counts, SDXL_COUNTS, "parameters", "expected")
        modules = lora_module_counts(model.unet, *model.text_encoders)
        modules_ok = report_counts(modules, LORA_MODULES, "LoRA modules", "kohya")
        return 0 if sizes_ok and modules_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
