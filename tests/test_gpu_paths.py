"""Issue 29's GPU-only defects, each shown on the CPU.

No test here needs a GPU. Where the defect is a device or a dtype, the test
checks where (or in which dtype) each tensor is made: a forward hook records
the dtype a layer computed in, a forward pre-hook records the device of the
ids an encoder is given, a fake "cuda" device or the meta device stands in
for the GPU, and torch.cuda's functions are replaced by recorders.
"""

from __future__ import annotations

import torch

from easytrain.sampling import SamplePrompt

STEPS = 2


def _decoder_dtypes(vae) -> list:
    """The dtype of each output of the VAE decoder's last conv (a forward hook): what the decode computed in."""
    seen = []
    vae.decoder.conv_out.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def test_sd_samples_decode_outside_autocast_in_the_vaes_precision(tmp_path):
    """Sampling runs under the run's autocast; the VAE decode must not (bf16 autocast on the CPU stands in
    for fp16 autocast on a GPU: before the fix the decoder computed in bf16, now in the VAE's fp32)."""
    from easytrain.model.tiny import build_tiny_components
    from easytrain.sampling.generate import generate_samples

    parts = build_tiny_components(0)
    seen = _decoder_dtypes(parts["vae"])
    unet_dtypes = []
    parts["unet"].conv_out.register_forward_hook(lambda _m, _i, out: unet_dtypes.append(out.dtype))
    generate_samples(unet=parts["unet"], vae=parts["vae"], text_encoder=parts["text_encoder"],
                     tokenizer=parts["tokenizer"], prompts=[SamplePrompt("a red circle", width=64, height=64,
                                                                         seed=1, steps=STEPS)],
                     output_dir=tmp_path, name="s", epoch=1, device="cpu", dtype=torch.bfloat16)
    assert set(unet_dtypes) == {torch.bfloat16}      # the denoising loop still runs under autocast
    assert seen == [torch.float32]


def test_sdxl_samples_decode_outside_autocast_and_are_not_black(tmp_path):
    from PIL import Image

    from easytrain.model.tiny_sdxl import build_tiny_sdxl_components
    from easytrain.sampling.sdxl import generate_sdxl_samples

    parts = build_tiny_sdxl_components()
    seen = _decoder_dtypes(parts["vae"])
    paths = generate_sdxl_samples(
        unet=parts["unet"], vae=parts["vae"], text_encoders=(parts["text_encoder"], parts["text_encoder_2"]),
        tokenizers=(parts["tokenizer"], parts["tokenizer_2"]),
        prompts=[SamplePrompt("a red square", negative="green", width=64, height=64, seed=3, steps=STEPS)],
        output_dir=tmp_path, name="x", epoch=1, device="cpu", dtype=torch.bfloat16,
        scheduler_config=parts["scheduler"].config)
    assert seen == [torch.float32]
    with Image.open(paths[0]) as image:
        assert image.size == (64, 64) and max(image.convert("L").getextrema()) > 0


def test_an_fp16_vae_marked_force_upcast_decodes_in_fp32():
    from types import SimpleNamespace

    from easytrain.sampling.decode import vae_decode_dtype

    half = SimpleNamespace(dtype=torch.float16, config=SimpleNamespace(force_upcast=True))
    assert vae_decode_dtype(half) == torch.float32
    assert vae_decode_dtype(SimpleNamespace(dtype=torch.float16, config=SimpleNamespace(force_upcast=False))) \
        == torch.float16
    assert vae_decode_dtype(SimpleNamespace(dtype=torch.float32, config=SimpleNamespace())) == torch.float32
