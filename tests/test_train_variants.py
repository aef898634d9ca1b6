"""kohya's noise and loss variants, each against a hand computation or sd-scripts' formula."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from easytrain.families.ddpm.loss_variants import (
    apply_mask, debiased_weights, elementwise_loss, huber_c_for, v_pred_like_noise_pred_weights,
)
from easytrain.families.ddpm.noise_variants import offset_noise, perturbed_noise, pyramid_noise, zero_terminal_snr_betas


def sd_scheduler(**extra):
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, **extra)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- noise

def test_offset_noise_adds_a_per_channel_constant():
    latents, noise = torch.randn(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    out = offset_noise(latents, noise, 0.1, generator=gen())
    shift = torch.randn((2, 4, 1, 1), generator=gen())
    assert torch.allclose(out, 0.1 * shift.expand(2, 4, 8, 8))


def test_adaptive_noise_scale_grows_the_offset_with_the_channel_mean():
    latents = torch.zeros(1, 2, 4, 4)
    latents[0, 0] = -2.0   # |mean| 2
    latents[0, 1] = 0.5    # |mean| 0.5
    out = offset_noise(latents, torch.zeros_like(latents), 0.1, adaptive_noise_scale=0.05, generator=gen(3))
    draw = torch.randn((1, 2, 1, 1), generator=gen(3))
    expected = torch.tensor([0.1 + 0.05 * 2.0, 0.1 + 0.05 * 0.5]).view(1, 2, 1, 1) * draw
    assert torch.allclose(out[:, :, :1, :1], expected)
    # a negative scale can only shrink the offset to zero, never flip it
    flat = offset_noise(latents, torch.zeros_like(latents), 0.1, adaptive_noise_scale=-1.0, generator=gen(3))
    assert torch.count_nonzero(flat) == 0


def test_pyramid_noise_one_level_is_noise_plus_fresh_noise_normalised():
    noise = torch.randn(1, 4, 8, 8, generator=gen(1))
    out = pyramid_noise(noise, iterations=1, discount=0.4, generator=gen(7))
    g = gen(7)
    torch.rand((), generator=g)                                  # r is drawn even when r**0 = 1
    level0 = torch.randn((1, 4, 8, 8), generator=g)
    expected = (noise + level0) / (noise + level0).std()
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.std().item() == pytest.approx(1.0, abs=1e-5)


def test_pyramid_noise_follows_sd_scripts_loop_and_stops_at_one_pixel():
    noise = torch.randn(2, 4, 16, 12, generator=gen(2))
    out = pyramid_noise(noise, iterations=10, discount=0.3, generator=gen(5))
    # sd-scripts' pyramid_noise_like, with its random.random() replaced by the same generator
    g, h, w, result = gen(5), 16, 12, noise.clone()
    levels = 0
    for i in range(10):
        r = float(torch.rand((), generator=g)) * 2 + 2
        hn, wn = max(1, int(h / r ** i)), max(1, int(w / r ** i))
        up = torch.nn.Upsample(size=(h, w), mode="bilinear")
        result += up(torch.randn((2, 4, hn, wn), generator=g)) * 0.3 ** i
        levels += 1
        if hn == 1 or wn == 1:
            break
    assert levels < 10                                           # the one-pixel stop was reached
    assert torch.allclose(out, result / result.std(), atol=1e-6)
    assert torch.equal(noise, torch.randn(2, 4, 16, 12, generator=gen(2)))   # input untouched


def test_input_perturbation_adds_gamma_times_fresh_noise():
    noise = torch.randn(2, 4, 4, 4, generator=gen(1))
    out = perturbed_noise(noise, 0.1, generator=gen(9))
    assert torch.allclose(out, noise + 0.1 * torch.randn((2, 4, 4, 4), generator=gen(9)))


def test_zero_terminal_snr_betas_match_the_paper_and_diffusers():
    base = sd_scheduler()
    betas = zero_terminal_snr_betas(base.betas)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    assert alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-12)      # no signal at the last step
    assert alphas_cumprod[0].item() == pytest.approx(base.alphas_cumprod[0].item(), rel=1e-6)
    assert torch.allclose(betas, sd_scheduler(rescale_betas_zero_snr=True).betas, rtol=1e-3)  # diffusers: fp32
    # by hand at one step: sqrt(abar) shifted by its last value and stretched back to its first
    root = base.alphas_cumprod.double().sqrt()
    t = 400
    hand = ((root[t] - root[-1]) * root[0] / (root[0] - root[-1])) ** 2
    assert alphas_cumprod[t].item() == pytest.approx(hand.item(), rel=1e-5)


# ---------------------------------------------------------------- loss

def test_loss_types_by_hand():
    pred, target = torch.tensor([[[[4.0]]], [[[0.01]]]]), torch.tensor([[[[1.0]]], [[[0.0]]]])
    c = torch.tensor([1.0, 0.5])
    assert elementwise_loss(pred, target, "l2").flatten().tolist() == pytest.approx([9.0, 1e-4])
    huber = elementwise_loss(pred, target, "huber", c).flatten().tolist()
    assert huber[0] == pytest.approx(2 * 1.0 * (math.sqrt(9 + 1) - 1))
    assert huber[1] == pytest.approx(1e-4, rel=1e-3)             # small errors: Huber equals l2
    smooth = elementwise_loss(pred, target, "smooth_l1", c).flatten().tolist()
    assert smooth[0] == pytest.approx(2 * (math.sqrt(9 + 1) - 1))
    assert smooth[1] == pytest.approx(2 * (math.sqrt(1e-4 + 0.25) - 0.5), rel=1e-3)
    with pytest.raises(ValueError, match="huber_c"):
        elementwise_loss(pred, target, "huber")


def test_huber_schedules_by_hand():
    sched = sd_scheduler()
    t = torch.tensor([0, 500, 999])
    const = huber_c_for(t, "constant", 0.1, num_train_timesteps=1000)
    assert const.tolist() == pytest.approx([0.1, 0.1, 0.1])
    exp = huber_c_for(t, "exponential", 0.1, num_train_timesteps=1000)
    assert exp.tolist() == pytest.approx([1.0, 0.1 ** 0.5, 0.1 ** 0.999], rel=1e-5)
    snr = huber_c_for(t, "snr", 0.1, num_train_timesteps=1000, alphas_cumprod=sched.alphas_cumprod)
    abar = sched.alphas_cumprod[500].item()
    sigma = math.sqrt((1 - abar) / abar)
    assert snr[1].item() == pytest.approx(0.9 / (1 + sigma) ** 2 + 0.1, rel=1e-5)
    assert snr[0] > snr[1] > snr[2] > 0.1                          # large thresholds where noise is low
    assert huber_c_for(t, "constant", 0.1, num_train_timesteps=1000, huber_scale=2.0)[0].item() == pytest.approx(0.2)


def test_snr_weights_by_hand():
    snr = torch.tensor([4.0, 0.25, float("inf")])
    assert debiased_weights(snr).tolist() == pytest.approx([0.5, 2.0, 1 / math.sqrt(1000)])
    assert debiased_weights(snr, "v_prediction").tolist() == pytest.approx([1 / 5, 1 / 1.25, 1 / 1001])
    assert v_pred_like_noise_pred_weights(snr).tolist() == pytest.approx([0.8, 0.2, 1000 / 1001])


def test_mask_zeroes_the_loss_outside_it():
    loss = torch.ones(1, 4, 2, 2)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0                                          # left half
    out = apply_mask(loss, mask)
    assert out[0, :, :, 0].eq(1).all() and out[0, :, :, 1].eq(0).all()
    half = torch.full((1, 1, 16, 16), 0.5)
    assert apply_mask(loss, half).eq(0.5).all()


# ---------------------------------------------------------------- the objective with the variants plugged in

def test_sample_noise_with_offset_draws_as_before_and_adds_the_variants():
    from easytrain.families.ddpm.diffusion import sample_noise

    latents = torch.randn(2, 4, 8, 8, generator=gen(1))
    g = gen(3)
    expected = torch.randn(latents.shape, generator=g)
    expected = expected + 0.1 * torch.randn((2, 4, 1, 1), generator=g)   # the stream of the offset-only noise
    assert torch.equal(sample_noise(latents, 0.1, gen(3)), expected)
    multires = sample_noise(latents, 0.1, gen(3), multires_iterations=3, multires_discount=0.3)
    assert multires.std().item() == pytest.approx(1.0, abs=1e-5) and not torch.allclose(multires, expected)
    adaptive = sample_noise(latents, 0.1, gen(3), adaptive_noise_scale=0.5)
    assert not torch.allclose(adaptive, expected)


def test_diffusion_loss_applies_loss_type_mask_and_snr_weights_in_kohyas_order():
    from easytrain.families.ddpm.diffusion import all_snr, diffusion_loss

    sched = sd_scheduler()
    snr = all_snr(sched)
    t = torch.tensor([100, 700])
    target = torch.zeros(2, 4, 4, 4)
    pred = torch.zeros(2, 4, 4, 4)
    pred[:, :, :, 2:] = 3.0                                        # wrong only on the right half
    mask = torch.zeros(2, 32, 32)
    mask[:, :, :16] = 1.0                                          # the loss counts on the left half only
    assert diffusion_loss(pred, target, t, masks=mask).item() == 0.0
    assert diffusion_loss(pred, target, t).item() == pytest.approx(4.5)  # half the elements at 9
    c = huber_c_for(t, "snr", 0.1, num_train_timesteps=1000, alphas_cumprod=sched.alphas_cumprod)
    huber = diffusion_loss(pred, target, t, loss_type="huber", huber_c=c)
    assert huber.item() == pytest.approx(elementwise_loss(pred, target, "huber", c).mean().item())
    per = torch.tensor([4.5, 4.5])
    both = diffusion_loss(pred, target, t, snr=snr, prediction_type="v_prediction", debiased_estimation=True,
                          scale_v_pred_loss_like_noise_pred=True)
    v_weights = debiased_weights(snr[t], "v_prediction") * v_pred_like_noise_pred_weights(snr[t])
    assert both.item() == pytest.approx((per * v_weights).mean().item(), rel=1e-5)
    eps = diffusion_loss(pred, target, t, snr=snr, debiased_estimation=True, scale_v_pred_loss_like_noise_pred=True)
    assert eps.item() == pytest.approx((per * debiased_weights(snr[t])).mean().item(), rel=1e-5)  # no v scale
    ztsnr = torch.cat([snr[:-1], torch.zeros(1)])                  # a zero terminal SNR table stays finite
    last = diffusion_loss(pred, target, torch.tensor([999, 999]), snr=ztsnr, min_snr_gamma=5.0,
                          debiased_estimation=True)
    assert torch.isfinite(last)
