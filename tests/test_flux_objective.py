"""Flux's flow-matching objective (families/flux/objective.py) against kohya's formulas and diffusers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from easytrain.families.flux import objective as fo
from easytrain.families.flux.objective import FlowObjective, FlowSettings


def _gen(seed=0):
    return torch.Generator("cpu").manual_seed(seed)


def test_latent_shift_and_scale_round_trip():
    z = torch.randn(2, 16, 8, 8, generator=_gen())
    assert torch.allclose(fo.scale_latents(z), (z - 0.1159) * 0.3611)
    assert torch.allclose(fo.unscale_latents(fo.scale_latents(z)), z, atol=1e-6)

    class AE:
        def encode(self, pixels):
            return SimpleNamespace(latent_dist=SimpleNamespace(
                sample=lambda generator=None: torch.full((1, 16, 2, 2), 2.0), mode=lambda: torch.ones(1, 16, 2, 2)))

    expected = torch.full((1, 16, 2, 2), (2 - 0.1159) * 0.3611)
    assert torch.allclose(fo.encode_latents(AE(), torch.zeros(1, 3, 16, 16)), expected)
    assert torch.allclose(fo.encode_latents(AE(), torch.zeros(1, 3, 16, 16), sample=False),
                          torch.full((1, 16, 2, 2), (1 - 0.1159) * 0.3611))


def test_packing_matches_diffusers_and_round_trips():
    from diffusers import FluxPipeline

    x = torch.randn(2, 16, 6, 10, generator=_gen())
    packed = fo.pack_latents(x)
    assert packed.shape == (2, 15, 64)
    assert torch.equal(packed, FluxPipeline._pack_latents(x, 2, 16, 6, 10))
    assert torch.equal(fo.unpack_latents(packed, 6, 10), x)
    batch = FlowObjective().prepare(x, generator=_gen())
    assert batch.img_ids.shape == (2, 15, 3)
    assert torch.equal(batch.img_ids[0], FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32))
    with pytest.raises(ValueError, match="even"):
        FlowObjective().prepare(torch.zeros(1, 16, 3, 4), generator=_gen())


def test_the_sigma_table_is_diffusers_flow_match_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    table = fo.schedule_sigmas(3.0)
    assert torch.allclose(table, sched.sigmas.float(), atol=1e-6)
    assert torch.allclose(table * 1000, sched.timesteps.float(), atol=1e-3)


def test_flux_shift_mu_is_linear_between_256_and_4096_tokens():
    assert fo.flux_mu(256) == pytest.approx(0.5)
    assert fo.flux_mu(4096) == pytest.approx(1.15)
    s = torch.tensor([0.5])
    assert fo.time_shift(1.15, s).item() == pytest.approx(math.exp(1.15) / (math.exp(1.15) + 1))


@pytest.mark.parametrize("how", fo.TIMESTEP_SAMPLINGS)
def test_each_sampling_follows_kohya_formula(how):
    settings = FlowSettings(timestep_sampling=how, sigmoid_scale=1.3, discrete_flow_shift=3.1582,
                            weighting_scheme="logit_normal")
    sigmas = FlowObjective(settings).sample_sigmas(64, (64, 64), _gen(5))
    g = _gen(5)
    if how == "uniform":
        expected = torch.rand(64, generator=g)
    elif how == "sigma":
        u = torch.sigmoid(torch.normal(0.0, 1.0, size=(64,), generator=g))
        expected = fo.schedule_sigmas(3.1582)[(u * 1000).long()]
    else:
        s = torch.sigmoid(1.3 * torch.randn(64, generator=g))
        if how == "shift":
            s = s * 3.1582 / (1 + 2.1582 * s)
        elif how == "flux_shift":  # 64x64 latents: 1024 tokens
            mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (1024 - 256)
            s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
        expected = s
    assert torch.allclose(sigmas, expected, atol=1e-6)
    assert sigmas.dtype == torch.float32 and bool(((sigmas > 0) & (sigmas < 1)).all())


def test_shift_moves_sigmas_towards_noise():
    plain = FlowObjective(FlowSettings(timestep_sampling="sigmoid")).sample_sigmas(4000, (64, 64), _gen())
    shifted = FlowObjective(FlowSettings(timestep_sampling="shift")).sample_sigmas(4000, (64, 64), _gen())
    assert shifted.mean() > plain.mean() + 0.1
    unshifted = FlowObjective(FlowSettings(timestep_sampling="shift", discrete_flow_shift=1.0))
    assert torch.allclose(unshifted.sample_sigmas(4000, (64, 64), _gen()), plain)


def test_mode_density_is_kohya_formula():
    u = fo.timestep_density("mode", 10, _gen(3), logit_mean=0, logit_std=1, mode_scale=1.29)
    r = torch.rand(10, generator=_gen(3))
    assert torch.allclose(u, 1 - r - 1.29 * (torch.cos(math.pi * r / 2) ** 2 - 1 + r))


def test_prepare_makes_the_flow_and_its_velocity_target():
    latents = torch.randn(2, 16, 4, 6, generator=_gen(1))
    objective = FlowObjective(FlowSettings(guidance_scale=1.0), "dev")
    batch = objective.prepare(latents, generator=_gen(2))
    s = batch.sigmas.view(-1, 1, 1, 1)
    assert torch.allclose(batch.noisy, (1 - s) * latents + s * batch.noise)
    assert torch.equal(batch.target, batch.noise - latents)
    assert torch.equal(batch.model_input, fo.pack_latents(batch.noisy))
    assert torch.equal(batch.timesteps, batch.sigmas)
    assert torch.equal(batch.guidance, torch.ones(2))
    assert batch.img_ids.shape == (2, 6, 3)
    # the same generator seed gives the same noise and sigmas
    again = objective.prepare(latents, generator=_gen(2))
    assert torch.equal(again.noise, batch.noise) and torch.equal(again.sigmas, batch.sigmas)


def test_guidance_only_for_dev_and_no_pooled_for_chroma():
    latents = torch.zeros(1, 16, 4, 4)
    text = SimpleNamespace(t5=torch.zeros(1, 5, 8), pooled=torch.zeros(1, 4), t5_mask=torch.ones(1, 5))
    for variant in ("schnell", "chroma"):
        batch = FlowObjective(variant=variant).prepare(latents, generator=_gen())
        assert batch.guidance is None
    dev = FlowObjective(FlowSettings(guidance_scale=3.5), "dev")
    inputs = dev.model_inputs(dev.prepare(latents, generator=_gen()), text)
    assert torch.equal(inputs["guidance"], torch.full((1,), 3.5)) and "y" in inputs
    assert inputs["txt_attention_mask"] is None and inputs["txt_ids"].shape == (1, 5, 3)
    chroma = FlowObjective(FlowSettings(apply_t5_attn_mask=True), "chroma")
    inputs = chroma.model_inputs(chroma.prepare(latents, generator=_gen()), text)
    assert "y" not in inputs and "guidance" not in inputs
    assert inputs["txt_attention_mask"] is text.t5_mask


def test_prediction_types_and_weighting_as_kohya():
    latents = torch.randn(3, 16, 4, 4, generator=_gen(1))
    prediction = torch.randn(3, 16, 4, 4, generator=_gen(9))
    sigmas = torch.tensor([0.2, 0.5, 0.9])
    for how in fo.MODEL_PREDICTION_TYPES:
        for scheme in ("none", "sigma_sqrt", "cosmap"):
            objective = FlowObjective(FlowSettings(model_prediction_type=how, weighting_scheme=scheme))
            batch = objective.prepare(latents, generator=_gen(2), sigmas=sigmas)
            s = sigmas.view(-1, 1, 1, 1)
            pred, weight = {"raw": (prediction, None), "additive": (prediction + batch.noisy, None),
                            "sigma_scaled": (-s * prediction + batch.noisy, {
                                "none": torch.ones_like(s), "sigma_sqrt": s ** -2.0,
                                "cosmap": 2 / (math.pi * (1 - 2 * s + 2 * s ** 2))}[scheme])}[how]
            assert (batch.weights is None) == (weight is None)
            if weight is not None:
                assert torch.allclose(batch.weights, weight.flatten())
            loss = (pred - batch.target) ** 2
            if weight is not None:
                loss = loss * weight
            expected = loss.mean(dim=(1, 2, 3)).mean()
            packed = fo.pack_latents(prediction)
            assert torch.allclose(objective.loss(packed, batch), expected, rtol=1e-6)
            assert torch.allclose(objective.loss(prediction, batch), expected, rtol=1e-6)


def test_a_perfect_velocity_has_zero_loss_and_weights_and_masks_apply():
    latents = torch.randn(2, 16, 4, 4, generator=_gen(1))
    objective = FlowObjective()
    batch = objective.prepare(latents, generator=_gen(2))
    assert objective.loss(batch.target, batch).item() == 0.0
    wrong = batch.target + 1.0
    assert objective.loss(wrong, batch).item() == pytest.approx(1.0)
    assert objective.loss(wrong, batch, loss_weights=torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)
    mask = torch.zeros(2, 32, 32)
    mask[:, :16] = 1.0  # the top half of the image
    assert objective.loss(wrong, batch, masks=mask).item() == pytest.approx(0.5)


def test_huber_constant_and_exponential():
    latents = torch.zeros(1, 16, 2, 2)
    for schedule in ("constant", "exponential"):
        objective = FlowObjective(FlowSettings(loss_type="huber", huber_schedule=schedule, huber_c=0.2))
        batch = objective.prepare(latents, generator=_gen(), sigmas=torch.tensor([0.5]))
        assert objective.loss(batch.target + 1.0, batch, plain=True).item() == pytest.approx(1.0)
        c = 0.2 if schedule == "constant" else math.exp(math.log(0.2) * 0.5)
        d2 = (batch.target + 1.0 - batch.target) ** 2
        expected = (2 * c * (torch.sqrt(d2 + c * c) - c)).mean()
        assert objective.loss(batch.target + 1.0, batch).item() == pytest.approx(expected.item(), rel=1e-5)


def _loss_settings(**changes):
    from easytrain.settings import LossSettings

    values = dict(min_snr_gamma=0.0, noise_offset=0.0, adaptive_noise_scale=0.0, multires_noise_iterations=0,
                  multires_noise_discount=0.3, ip_noise_gamma=0.0, zero_terminal_snr=False, v_parameterization=False,
                  scale_v_pred_loss_like_noise_pred=False, debiased_estimation_loss=False, loss_type="l2",
                  huber_schedule="snr", huber_c=0.1, huber_scale=1.0, masked=False)
    values.update(changes)
    return LossSettings(**values)


def test_the_seam_objective_draws_fixed_for_validation():
    from easytrain.families.base import Draw, Objective

    objective = fo.FluxObjective(FlowSettings(timestep_sampling="sigma"), "dev", _loss_settings(), device="cpu")
    assert isinstance(objective, Objective)
    latents = torch.randn(2, 16, 4, 4, generator=_gen(1))
    first = objective.fixed_draw(latents, 0.35, _gen(42))
    second = objective.fixed_draw(latents, 0.35, _gen(42))
    assert isinstance(first, Draw) and torch.equal(first.noise, second.noise)
    assert torch.equal(first.noisy, second.noisy) and torch.equal(first.flow.sigmas, torch.full((2,), 0.35))
    assert torch.equal(first.timesteps, first.flow.sigmas)
    # the same code as a training draw given that noise and those sigmas
    manual = objective.flow.prepare(latents, noise=first.noise, sigmas=torch.full((2,), 0.35))
    assert torch.equal(manual.model_input, first.flow.model_input)
    scaled = objective.model_latents(torch.ones(1, 16, 2, 2))
    assert torch.allclose(scaled, torch.full((1, 16, 2, 2), (1 - 0.1159) * 0.3611))


def test_the_seam_objective_in_denoising_loss():
    from contextlib import nullcontext

    from easytrain.families.base import denoising_loss
    from easytrain.families.flux.tiny import build_tiny_transformer

    model = build_tiny_transformer("flux-dev")
    loss_settings = _loss_settings(loss_type="huber", huber_schedule="exponential", huber_c=0.3, masked=True)
    objective = fo.FluxObjective(FlowSettings(), "dev", loss_settings, device="cpu")
    assert objective.flow.settings.loss_type == "huber" and objective.flow.settings.huber_schedule == "exponential"
    latents = objective.model_latents(torch.randn(2, 16, 4, 4, generator=_gen(1)))
    draw = objective.draw(latents, _gen(2))
    from easytrain.families.flux.text import FluxText

    text = FluxText(txt=torch.randn(2, 5, model.config.context_in_dim, generator=_gen(3)),
                    mask=torch.tensor([[1] * 5, [1] * 3 + [0] * 2]), apply_mask=True,
                    pooled=torch.randn(2, model.config.vec_in_dim, generator=_gen(4)))
    conditioning = text.transformer_kwargs()
    batch = SimpleNamespace(loss_weights=torch.tensor([1.0, 0.5]), masks=torch.ones(2, 32, 32))
    loss = denoising_loss(objective, model, lambda b: conditioning, batch, latents, draw, nullcontext)
    same = SimpleNamespace(t5=text.txt, pooled=text.pooled, t5_mask=text.mask)
    masked = fo.FlowObjective(FlowSettings(apply_t5_attn_mask=True), "dev")
    prediction = model(**masked.model_inputs(draw.flow, same))
    expected = objective.flow.loss(prediction, draw.flow, loss_weights=batch.loss_weights, masks=batch.masks)
    assert torch.equal(loss, expected)
    plain = denoising_loss(objective, model, lambda b: conditioning, batch, latents, draw, nullcontext,
                           variants=False)
    assert torch.equal(plain, objective.flow.loss(prediction, draw.flow, plain=True))
    assert not torch.equal(plain, loss)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="timestep_sampling"):
        FlowSettings(timestep_sampling="logsnr")
    with pytest.raises(ValueError, match="huber_schedule"):
        FlowSettings(huber_schedule="snr")
    with pytest.raises(ValueError):
        FlowObjective(variant="sd3")


def test_refused_settings_name_the_ddpm_only_options():
    assert fo.refused_settings({"min_snr_gamma": 0, "noise_offset": 0.0, "loss_type": "l2",
                                "huber_schedule": "snr", "debiased_estimation": False}) == []
    assert fo.refused_settings(_loss_settings()) == []
    refused = dict(fo.refused_settings({
        "min_snr_gamma": 5, "debiased_estimation": True, "scale_v_pred_loss_like_noise_pred": True,
        "prediction_type": "v_prediction", "zero_terminal_snr": True, "loss_type": "huber",
        "huber_schedule": "snr", "noise_offset": 0.05, "multires_noise_iterations": 6}))
    assert set(refused) == {"min_snr_gamma", "debiased_estimation", "scale_v_pred_loss_like_noise_pred",
                            "v_parameterization", "zero_terminal_snr", "huber_schedule", "noise_offset",
                            "multires_noise_iterations"}
    assert "flow matching" in refused["min_snr_gamma"]
    from_plan = dict(fo.refused_settings(_loss_settings(debiased_estimation_loss=True, v_parameterization=True,
                                                        adaptive_noise_scale=0.1, loss_type="smooth_l1")))
    assert set(from_plan) == {"debiased_estimation", "v_parameterization", "adaptive_noise_scale", "huber_schedule"}


def test_options_import_without_torch_and_say_what_is_ignored():
    import subprocess
    import sys

    code = ("import sys; from easytrain.families.flux import options as o; "
            "assert o.refused_settings({'min_snr_gamma': 5}); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    from easytrain.families.flux import options

    assert options.ignored_settings(FlowSettings()) == []
    assert set(options.DEFAULT_REASONS) <= set(FlowSettings.__dataclass_fields__)
    ignored = dict(options.ignored_settings(FlowSettings(weighting_scheme="cosmap", timestep_sampling="uniform",
                                                         discrete_flow_shift=2.0, sigmoid_scale=2.0)))
    assert set(ignored) == {"weighting_scheme", "discrete_flow_shift", "sigmoid_scale"}
    assert dict(options.ignored_settings(FlowSettings(weighting_scheme="mode")))["weighting_scheme"].startswith("mode")
    assert options.ignored_settings(FlowSettings(weighting_scheme="cosmap", model_prediction_type="sigma_scaled")) == []
    assert options.defaults_for("chroma").apply_t5_attn_mask and not options.defaults_for("dev").apply_t5_attn_mask


def test_variants_of_the_detected_kinds():
    from easytrain.families.flux import detect, options

    assert [options.variant_of(k) for k in (detect.FLUX_DEV, detect.FLUX_SCHNELL, detect.CHROMA)] == \
        ["dev", "schnell", "chroma"]
    assert options.variant_of("dev") == "dev"
    with pytest.raises(ValueError):
        options.variant_of("sdxl")
