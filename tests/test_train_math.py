"""Diffusion objective: schedule, min-SNR weights, targets, noise offset, loss weights."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from easytrain.families.ddpm.diffusion import (
    all_snr, diffusion_loss, min_snr_weights, sample_noise, sample_timesteps, training_target,
)


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False)


def hand_snr(t):
    betas = [(math.sqrt(0.00085) + i * (math.sqrt(0.012) - math.sqrt(0.00085)) / 999) ** 2 for i in range(1000)]
    alpha_bar = 1.0
    for beta in betas[: t + 1]:
        alpha_bar *= 1 - beta
    return alpha_bar / (1 - alpha_bar)


def test_snr_table_is_the_scaled_linear_schedule(scheduler):
    snr = all_snr(scheduler)
    for t in (0, 10, 500, 999):
        assert snr[t].item() == pytest.approx(hand_snr(t), rel=1e-4)


def test_min_snr_weights_by_hand():
    snr = torch.tensor([100.0, 5.0, 1.0, 0.25])
    eps = min_snr_weights(snr, 5.0, "epsilon")
    assert eps.tolist() == pytest.approx([5 / 100, 1.0, 1.0, 1.0])
    v = min_snr_weights(snr, 5.0, "v_prediction")
    assert v.tolist() == pytest.approx([5 / 101, 5 / 6, 1 / 2, 0.25 / 1.25])


def test_loss_applies_prior_and_snr_weights_per_sample(scheduler):
    pred = torch.zeros(2, 4, 2, 2)
    target = torch.stack([torch.full((4, 2, 2), 1.0), torch.full((4, 2, 2), 2.0)])   # mse 1 and 4
    t = torch.tensor([0, 999])
    snr = all_snr(scheduler)
    plain = diffusion_loss(pred, target, t)
    assert plain.item() == pytest.approx(2.5)
    weighted = diffusion_loss(pred, target, t, loss_weights=torch.tensor([1.0, 0.5]))
    assert weighted.item() == pytest.approx((1 + 2) / 2)
    w = min_snr_weights(snr[t], 5.0, "epsilon")
    snr_loss = diffusion_loss(pred, target, t, snr=snr, min_snr_gamma=5.0)
    assert snr_loss.item() == pytest.approx(((1 * w[0]) + (4 * w[1])).item() / 2)
    assert w[0] < 1 and w[1] == pytest.approx(1.0)   # only high-SNR (low t) samples are damped


def test_targets(scheduler):
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    assert training_target(scheduler, latents, noise, t, "epsilon") is noise
    v = training_target(scheduler, latents, noise, t, "v_prediction")
    a = scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(v, a * noise - s * latents, atol=1e-6)


def test_noise_offset_shifts_each_channel_by_a_constant():
    latents = torch.zeros(2, 4, 16, 16)
    plain = sample_noise(latents, 0.0, torch.Generator().manual_seed(1))
    shifted = sample_noise(latents, 0.1, torch.Generator().manual_seed(1))
    diff = shifted - plain
    assert torch.allclose(diff, diff[:, :, :1, :1].expand_as(diff))     # constant per (sample, channel)
    shift = torch.Generator().manual_seed(1)
    torch.randn(latents.shape, generator=shift)
    assert torch.allclose(diff[:, :, 0, 0], 0.1 * torch.randn((2, 4, 1, 1), generator=shift)[:, :, 0, 0])


def test_timesteps_are_uniform_over_the_whole_schedule():
    t = sample_timesteps(20000, 1000, "cpu", torch.Generator().manual_seed(0))
    assert t.min().item() == 0 and t.max().item() == 999
    assert abs(t.float().mean().item() - 499.5) < 10


def test_latent_caching_encodes_at_most_one_sdxl_sized_picture_per_vae_call():
    from easytrain.train.setup import vae_batch_size

    assert vae_batch_size((512, 512), 2) == 2          # SD1 at its size: the whole batch
    assert vae_batch_size((512, 512), 8) == 4
    assert vae_batch_size((1024, 1024), 4) == 1        # SDXL: one picture a call (fp32 encode)
    assert vae_batch_size((2048, 2048), 1) == 1


def test_the_sample_schedulers_get_sds_steps_offset():
    from diffusers import EulerDiscreteScheduler

    from easytrain.families.ddpm.schedule import make_noise_scheduler

    sampler = EulerDiscreteScheduler.from_config(make_noise_scheduler("epsilon").config)
    assert sampler.config.steps_offset == 1
