"""Sample images from the live training modules of the tiny model (CPU, 64 px, 2 steps)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from easytrain.families.sd.tiny import build_tiny_components
from easytrain.sampling import SamplePrompt, contact_sheet_path
from easytrain.families.sd.sampling import generate_samples
from easytrain.sampling.sheet import CAPTION_LINES, caption_font, contact_sheet, wrap_text

STEPS = 2


@pytest.fixture(scope="session")
def tiny_parts():
    return build_tiny_components(0)


def sample(parts, tmp_path, prompts, *, unet=None, text_encoder=None, epoch=1, name="demo", **kwargs):
    return generate_samples(
        unet=unet if unet is not None else parts["unet"], vae=parts["vae"],
        text_encoder=text_encoder if text_encoder is not None else parts["text_encoder"],
        tokenizer=parts["tokenizer"], prompts=prompts, output_dir=tmp_path, name=name, epoch=epoch,
        device="cpu", dtype=torch.float32, scheduler_config=parts["scheduler"].config, **kwargs,
    )


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_files_sizes_sheet_and_progress(tiny_parts, tmp_path):
    prompts = [
        SamplePrompt("a red circle", negative="blue", width=64, height=64, seed=3, steps=STEPS),
        SamplePrompt("a green square on a yellow triangle", width=64, height=96, seed=12, cfg=4.0, steps=STEPS),
        SamplePrompt("a photo of a shape", width=80, height=64, seed=0, steps=STEPS),
    ]
    progress = []
    paths = sample(tiny_parts, tmp_path, prompts, on_progress=lambda done, total: progress.append((done, total)))

    folder = tmp_path / "sample"
    assert [p.name for p in paths] == ["demo_e000001_00_3.png", "demo_e000001_01_12.png", "demo_e000001_02_0.png"]
    assert all(p.parent == folder for p in paths)
    assert sorted(f.name for f in folder.iterdir()) == sorted([p.name for p in paths] + ["demo_e000001_sheet.png"])
    assert progress == [(1, 3), (2, 3), (3, 3)]
    for path, prompt in zip(paths, prompts):
        with Image.open(path) as image:
            assert image.size == (prompt.width, prompt.height)
            assert image.text["parameters"].startswith(prompt.prompt)
            assert f"Seed: {prompt.seed}, Size: {prompt.width}x{prompt.height}" in image.text["parameters"]
    with Image.open(paths[0]) as image:
        assert "Negative prompt: blue" in image.text["parameters"]
    with Image.open(contact_sheet_path(tmp_path, "demo", 1)) as sheet:
        assert sheet.width >= 2 * 64 and sheet.height >= 2 * 64   # a 2 x 2 grid for three samples


def test_same_seed_same_image_other_seed_other_image(tiny_parts, tmp_path):
    base = SamplePrompt("a red circle", width=64, height=64, seed=5, steps=STEPS)
    first = sample(tiny_parts, tmp_path / "a", [base, base.__class__(**{**base.__dict__, "seed": 6})])
    again = sample(tiny_parts, tmp_path / "b", [base], epoch=0)
    assert again[0].name == "demo_e000000_00_5.png"     # epoch 0: before training
    assert np.array_equal(pixels(first[0]), pixels(again[0]))
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))


def test_modes_and_global_rng_are_left_as_found(tiny_parts, tmp_path):
    unet, text_encoder, vae = tiny_parts["unet"], tiny_parts["text_encoder"], tiny_parts["vae"]
    unet.train()
    unet.conv_in.eval()                 # a mixed state must come back exactly, not as all-train
    text_encoder.train()
    vae.eval()
    before = {id(m): m.training for part in (unet, text_encoder, vae) for m in part.modules()}
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    try:
        sample(tiny_parts, tmp_path, [SamplePrompt("a blue square", width=64, height=64, seed=1, steps=STEPS)])
        after = {id(m): m.training for part in (unet, text_encoder, vae) for m in part.modules()}
        assert after == before
        assert unet.training and text_encoder.training and not vae.training and not unet.conv_in.training
        assert torch.equal(torch.get_rng_state(), rng_before)
    finally:
        unet.train()
    assert torch.is_grad_enabled()


def test_clip_skip_changes_the_conditioning(tiny_parts, tmp_path):
    prompt = [SamplePrompt("a red circle", width=64, height=64, seed=2, steps=STEPS)]
    last = sample(tiny_parts, tmp_path / "skip1", prompt, clip_skip=1)
    penultimate = sample(tiny_parts, tmp_path / "skip2", prompt, clip_skip=2)
    assert not np.array_equal(pixels(last[0]), pixels(penultimate[0]))


def test_ddim_and_v_prediction_run(tiny_parts, tmp_path):
    prompt = [SamplePrompt("a red circle", width=64, height=64, seed=2, steps=STEPS)]
    ddim = sample(tiny_parts, tmp_path / "ddim", prompt, sampler="ddim", prediction_type="v_prediction")
    euler = sample(tiny_parts, tmp_path / "euler", prompt)
    assert not np.array_equal(pixels(ddim[0]), pixels(euler[0]))
    with pytest.raises(ValueError, match="sampler"):
        sample(tiny_parts, tmp_path / "bad", prompt, sampler="plms")


def test_live_lora_adapter_is_used_and_left_in_place(tiny_parts, tmp_path):
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    unet = copy.deepcopy(tiny_parts["unet"])
    prompt = [SamplePrompt("a red circle", width=64, height=64, seed=4, steps=STEPS)]
    plain = sample(tiny_parts, tmp_path / "plain", prompt, unet=unet)

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    inject_adapter_in_model(config, unet)
    lora_b = [p for n, p in unet.named_parameters() if "lora_B" in n]
    assert lora_b
    with torch.no_grad():
        for p in lora_b:
            p.mul_(50.0)                # a clearly visible effect at 2 steps
    weights_before = [p.detach().clone() for p in lora_b]
    adapted = sample(tiny_parts, tmp_path / "lora", prompt, unet=unet)
    assert not np.array_equal(pixels(plain[0]), pixels(adapted[0]))
    # not merged, not unloaded, not changed
    assert any(isinstance(m, LoraLayer) for m in unet.modules())
    assert all(torch.equal(a, b) for a, b in zip(weights_before, lora_b))

    # the live weights are read at sampling time: zero the update and the plain image is back
    with torch.no_grad():
        for p in lora_b:
            p.zero_()
    zeroed = sample(tiny_parts, tmp_path / "zeroed", prompt, unet=unet)
    assert np.array_equal(pixels(plain[0]), pixels(zeroed[0]))


def test_contact_sheet_captions_wrap_and_truncate():
    font = caption_font()
    lines = wrap_text("word " * 200, font, 120, CAPTION_LINES)
    assert len(lines) == CAPTION_LINES and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 120 for line in lines)
    assert wrap_text("x" * 300, font, 100, 2)[0].startswith("x")          # one unbreakable word is cut
    sheet = contact_sheet([Image.new("RGB", (1024, 512), "red")] * 5, ["a"] * 5)
    assert sheet.width < 3 * 400 + 100                                     # thumbnails, 3 columns


def test_mixed_precision_bf16_base_with_fp32_adapters(tmp_path):
    """As in a bf16 run: frozen weights in bf16, easytrain's LoRA in fp32, sampling under autocast."""
    from easytrain.families.sd.targets import apply_network
    from easytrain.network.spec import NetworkSpec

    parts = build_tiny_components(0)
    network = apply_network(parts["unet"], parts["text_encoder"], NetworkSpec("LoRA", 4, 2.0))
    network.cast_base(torch.bfloat16)
    parts["vae"].to(torch.bfloat16)
    paths = generate_samples(
        unet=parts["unet"], vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
        prompts=[SamplePrompt("a red circle", negative="blue", width=64, height=64, seed=1, steps=STEPS)],
        output_dir=tmp_path, name="bf16", epoch=2, device="cpu", dtype=torch.bfloat16, clip_skip=2,
    )
    image = pixels(paths[0])
    assert image.shape == (64, 64, 3) and image.std() > 0
    assert {p.dtype for p in network.trainable_parameters()} == {torch.float32}
