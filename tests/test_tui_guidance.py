"""The wizard's batch-size guidance, driven by Pilot at 80x24: VRAM-aware defaults and scaled learning rates."""

from __future__ import annotations

from pathlib import Path

import pytest

from easytrain import machine
from easytrain import questions as Q
from tests._tui_helpers import SIZE, answer, make_workdir, new_app, press, question_key, screen_name, shown_text, \
    start_new, to_question, to_review


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(machine, "best_mixed_precision", lambda: "fp16")
    return make_workdir(tmp_path)


@pytest.mark.parametrize("gib,resolution,arch,batch,checkpointing", [
    (6, 512, "sd1", 1, True), (8, 512, "sd1", 1, True), (10, 512, "sd1", 2, True), (12, 512, "sd1", 3, True),
    (24, 512, "sd1", 6, False), (24, 768, "sd1", 2, True), (12, 1024, "sdxl", 1, True), (24, 1024, "sdxl", 2, True),
    (80, 1024, "sdxl", 6, True),
])
def test_vram_table(monkeypatch, gib, resolution, arch, batch, checkpointing):
    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("Test GPU", gib))
    values = Q.applicable_values({"architecture": arch, "resolution": resolution})
    assert (values["batch_size"], values["gradient_checkpointing"]) == (batch, checkpointing)


def test_without_a_gpu_the_defaults_stay_as_documented():
    assert machine.gpu_info() is None  # EASYTRAIN_GPU_MEMORY=none in the tests
    values = Q.applicable_values({})
    assert (values["batch_size"], values["gradient_checkpointing"]) == (2, True)
    assert Q.vram_reason("batch_size", values) is None


def test_scaled_learning_rates_follow_the_square_root_and_skip_adaptive_optimizers():
    values = Q.applicable_values({})
    assert Q.scaled_learning_rates(values, 2, 8) == {"unet_lr": 1e-3, "text_encoder_lr": 2e-4}
    assert Q.scaled_learning_rates(values, 2, 2) == {}
    assert Q.scaled_learning_rates(Q.applicable_values({"optimizer": "Prodigy"}), 2, 8) == {}


async def test_a_12_gb_gpu_proposes_batch_3_and_says_why(workdir, monkeypatch):
    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("Test GPU", 12.0))
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_question(pilot, "batch_size")
        assert "Enter keeps 3" in shown_text(app, "#hint")
        assert shown_text(app, "#note").startswith("Your GPU (Test GPU, 12 GB) fits about batch 3")
        await press(pilot, "enter")  # the default: nothing to scale
        assert question_key(app) == "length_by"


async def test_changing_the_batch_offers_scaled_learning_rates(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_question(pilot, "batch_size")
        await answer(pilot, "8")
        assert screen_name(app) == "ConfirmScreen"
        question = str(app.screen.query_one("#confirm-question").content)
        assert "Batch 2 -> 8" in question and "unet_lr 0.0005 -> 0.001 and text_encoder_lr 0.0001 -> 0.0002" \
            in question
        await press(pilot, "y")
        assert question_key(app) == "length_by"
        state = app.wizard.state
        assert (state.value("unet_lr"), state.value("text_encoder_lr")) == (1e-3, 2e-4)
        await press(pilot, "escape")
        assert question_key(app) == "batch_size"
        await answer(pilot, "4")  # back down: offered again, declined
        await press(pilot, "n")
        assert (state.value("unet_lr"), state.value("text_encoder_lr")) == (1e-3, 2e-4)
        await press(pilot, "ctrl+s")
        assert "Effective batch: 4 images per step" in shown_text(app, "#summary")


async def test_the_vae_question_refuses_a_vae_of_another_family(workdir):
    import torch
    from safetensors.torch import save_file

    save_file({"encoder.conv_in.weight": torch.zeros(32, 3, 3, 3), "decoder.conv_in.weight": torch.zeros(32, 16, 3, 3)},
              str(workdir / "flux_vae.safetensors"))
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await press(pilot, "ctrl+s", "escape")  # the review, then back to the advanced gate
        assert question_key(app) == "advanced_settings"
        await press(pilot, "up", "enter")
        await to_question(pilot, "vae")
        await answer(pilot, "flux_vae.safetensors")
        assert question_key(app) == "vae"
        assert shown_text(app, "#error").startswith("flux_vae.safetensors: its latents have 16 channels "
                                                    "(decoder.conv_in.weight is [32, 16, 3, 3])")
        await answer(pilot, "builtin:tiny")
        assert question_key(app) != "vae" and app.wizard.state.value("vae") == "builtin:tiny"
    assert sorted(p.name for p in workdir.iterdir()) == ["flux_vae.safetensors", "images"]


def test_gpu_memory_is_read_from_nvidia_smi_without_torch(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\ncase "$1" in\n  -L) echo "GPU 0: NVIDIA GeForce RTX 3060 (UUID: GPU-x)";;\n'
                    '  *) echo "NVIDIA GeForce RTX 3060, 12288";;\nesac\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("EASYTRAIN_GPU_MEMORY")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(machine, "NVIDIA_PROC", tmp_path / "no-proc")
    for cached in (machine.has_cuda_gpu, machine.gpu_info):
        cached.cache_clear()
    try:
        assert machine.gpu_info() == machine.GpuInfo("NVIDIA GeForce RTX 3060", 12.0)
        assert Q.applicable_values({})["batch_size"] == 3
        monkeypatch.setenv("EASYTRAIN_GPU_MEMORY", "6")  # answers made here for a 6 GB card
        machine.gpu_info.cache_clear()
        assert Q.applicable_values({})["batch_size"] == 1
    finally:
        for cached in (machine.has_cuda_gpu, machine.gpu_info):
            cached.cache_clear()


async def test_the_review_shows_the_memory_estimate_and_warns_on_a_small_card(workdir, monkeypatch):
    """A full-size SDXL file (the wizard reads only its header) on a 6 GB card: the estimate does not fit."""
    from _model_helpers import write_fake_checkpoint

    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("Test GPU", 6.0))
    write_fake_checkpoint(workdir / "xl.safetensors", "sdxl")
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot, base_model="xl.safetensors")
        await to_review(pilot)
        summary = shown_text(app, "#summary")
    assert "GPU memory: about 7.3 GiB estimated for SDXL at 1024x1024" in summary
    assert "! GPU memory: about 7.3 GiB estimated, more than the 6 GiB of Test GPU" in summary


async def test_the_tiny_model_never_warns_about_memory(workdir, monkeypatch):
    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("Test GPU", 1.0))
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_review(pilot)
        summary = shown_text(app, "#summary")
    assert "GPU memory: about" in summary and "tiny test model" in summary and "more than the" not in summary
    assert "(times the GPUs of a multi-GPU launch)" in summary   # with a GPU only (issue 26)
