"""`check` on Flux.1 / Chroma: the family's memory estimate and levers, and the refusals known before loading."""

from __future__ import annotations

import pytest

from _train_helpers import tiny_plan

from easytrain.errors import UserError


@pytest.fixture(scope="module")
def flux_paths():
    from easytrain.families.flux.tiny import tiny_flux_paths

    return tiny_flux_paths()


def flux_plan(tmp_path, paths, chroma=False, **answers):
    settings = dict(base_model=str(paths.chroma if chroma else paths.dev), architecture="auto", resolution=512,
                    mixed_precision="bf16", optimizer="AdamW8bit", gradient_checkpointing=True, batch_size=1,
                    network_dim=16, network_alpha=16.0, train_parts="unet_only", shuffle_captions=False,
                    text_encoder_lr=0.0)
    return tiny_plan(tmp_path, **{**settings, **answers})


def test_check_estimates_flux_with_its_own_levers(tmp_path, flux_paths, monkeypatch):
    """With a GPU known (the tiny model on a CPU gets no full-size figures at all)."""
    from easytrain import machine
    from easytrain.commands.check import plan_lines

    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("a 48 GB card", 48.0))
    text = "\n".join(plan_lines(flux_plan(tmp_path, flux_paths)))
    assert "GPU memory: about" in text and "Flux.1 [dev] at 512x512" in text and "bf16 base" in text
    assert "tiny test model" in text
    assert "GPU memory for Flux.1 at 512x512, batch 1, LoRA dim 16 (estimates):" in text
    assert "fp8 base, 16 blocks swapped, 8-bit AdamW" in text
    assert "clip skip n/a (Flux.1 takes CLIP-L's pooled output, not a hidden layer)" in text


def test_check_marks_the_levers_that_fit_the_gpu(tmp_path, flux_paths, monkeypatch):
    from easytrain import machine
    from easytrain.commands.check import memory_lines, inspect_base_model

    monkeypatch.setenv("EASYTRAIN_GPU_MEMORY", "12")
    machine.gpu_info.cache_clear()
    monkeypatch.setattr(machine, "gpu_info", machine.gpu_info.__wrapped__)  # read the variable set here
    plan = flux_plan(tmp_path, flux_paths, resolution=1024, fp8_base=True, blocks_to_swap=16)
    lines, warnings = memory_lines(plan, inspect_base_model(plan))
    levers = [line for line in lines if line.startswith("  ") and "GiB" in line and ("fits" in line or "too much" in line)]
    assert len(levers) == 6, lines
    assert levers[0].endswith("too much") and levers[3].endswith("fits")
    assert warnings == []  # the tiny file fits anywhere


def test_the_memory_dispatch_uses_the_familys_estimator(tmp_path, flux_paths):
    from easytrain.families.flux.memory import FluxSetup
    from easytrain.memory_estimate import denoiser_parameters, estimate_plan, has_estimate

    plan = flux_plan(tmp_path, flux_paths, fp8_base=True, blocks_to_swap=28)
    found = estimate_plan(plan, "flux-dev")
    assert isinstance(found.setup, FluxSetup) and found.setup.fp8_base and found.setup.blocks_to_swap == 28
    assert has_estimate("chroma") and denoiser_parameters("flux-dev") > 10 ** 10


def test_run_estimate_skips_the_tiny_flux_transformer(tmp_path, flux_paths):
    import torch

    from easytrain.train.memory_peaks import run_estimate

    plan = flux_plan(tmp_path, flux_paths)
    assert run_estimate(plan, "flux-dev", torch.nn.Linear(4, 4)) is None
    full = torch.nn.Module()
    full.weight = torch.nn.Parameter(torch.empty(12 * 10 ** 9, device="meta"))
    assert run_estimate(plan, "flux-dev", full).total_gib > 5


@pytest.mark.parametrize("answers,names", [
    (dict(min_snr_gamma=5), ["min_snr_gamma"]),
    (dict(debiased_estimation_loss=True, zero_terminal_snr=True), ["debiased_estimation", "zero_terminal_snr"]),
    (dict(scale_v_pred_loss_like_noise_pred=True, v_parameterization=True),
     ["scale_v_pred_loss_like_noise_pred", "v_parameterization"]),
    (dict(loss_type="huber", huber_schedule="snr"), ["huber_schedule"]),
    (dict(network_type="LoHa", network_dim=8, network_alpha=4.0), ["network_type LoHa"]),
    (dict(network_type="LoCon"), ["network_type LoCon"]),
    (dict(dora=True), ["dora"]),
    (dict(down_lr_weight="1,1,1,1,1,1,1,1,1,1,1,1"), ["down_lr_weight"]),
    (dict(train_t5=True), ["train_t5"]),
])
def test_the_plan_refuses_what_the_flux_trainer_would(tmp_path, flux_paths, answers, names):
    with pytest.raises(UserError) as caught:
        flux_plan(tmp_path, flux_paths, **answers)
    text = str(caught.value) + "\n" + "\n".join(getattr(caught.value, "problems", []))
    assert "Flux.1 [dev] cannot train with" in text
    for name in names:
        assert name in text


def test_every_refusal_comes_in_one_error(tmp_path, flux_paths):
    with pytest.raises(UserError) as caught:
        flux_plan(tmp_path, flux_paths, min_snr_gamma=5, network_type="LoKr", noise_offset=0.05)
    assert len(caught.value.problems) == 3


def test_huber_with_a_flow_schedule_and_train_t5_with_a_text_lr_pass(tmp_path, flux_paths):
    plan = flux_plan(tmp_path, flux_paths, loss_type="huber", huber_schedule="exponential", train_t5=True,
                     train_parts="both", text_encoder_lr=1e-5)
    assert plan.network.train_text_encoder and plan.model.options["train_t5"]


def test_ignored_settings_and_clip_skip_are_warnings(tmp_path, flux_paths):
    plan = flux_plan(tmp_path, flux_paths, weighting_scheme="cosmap", clip_skip=1)
    assert any(w.startswith("weighting_scheme is ignored: cosmap") for w in plan.warnings)
    assert any(w.startswith("clip_skip 1 is ignored: Flux.1 takes CLIP-L's pooled output") for w in plan.warnings)


def test_chroma_warns_that_train_t5_is_its_text_encoder(tmp_path, flux_paths):
    plan = flux_plan(tmp_path, flux_paths, chroma=True, train_t5=True, train_parts="both", text_encoder_lr=1e-5)
    assert any(w.startswith("train_t5 is ignored") for w in plan.warnings)
    from easytrain.memory_estimate import estimate_plan

    assert dict(estimate_plan(plan, "chroma").parts)["T5-XXL"] > 0


def test_check_and_the_summary_name_the_transformer_and_a_web_ui_that_runs_flux(tmp_path, flux_paths):
    """A Flux run trains a transformer, not a UNet, and AUTOMATIC1111 runs no Flux: Forge is named instead."""
    from easytrain import catalog
    from easytrain.commands.check import plan_lines
    from easytrain.progress.summary import summary_lines
    from easytrain.train import events as ev

    plan = flux_plan(tmp_path, flux_paths)
    text = "\n".join(plan_lines(plan))
    assert "training: transformer at " in text and "UNet" not in text.split("training:")[1].split("\n")[0]
    final = tmp_path / "out" / "mine.safetensors"
    finished = ev.RunFinished(10, 12.0, str(final), 0.1, (str(final),))
    lines = summary_lines(finished, webui=catalog.architecture(plan.model.architecture).webui)
    assert "To use it in Forge: copy mine.safetensors into stable-diffusion-webui-forge/models/Lora," in lines
    assert not any("AUTOMATIC1111" in line for line in lines)
    sd = summary_lines(finished)
    assert "To use it in AUTOMATIC1111: copy mine.safetensors into stable-diffusion-webui/models/Lora," in sd
