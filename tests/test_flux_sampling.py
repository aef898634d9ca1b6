"""Flux's flow-matching Euler sampler (families/flux/sampling.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from easytrain.families.flux import sampling
from easytrain.families.flux.objective import scale_latents


def test_dev_schedule_is_diffusers_flux_schedule():
    from diffusers import FlowMatchEulerDiscreteScheduler

    tokens = 64 * 64  # 1024 px
    ours = sampling.schedule(20, tokens)
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                            base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                            max_image_seq_len=4096)
    mu = 0.5 + (1.15 - 0.5) / (4096 - 256) * (tokens - 256)
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / 20, 20), mu=mu)
    assert torch.allclose(ours, sched.sigmas.float(), atol=1e-5)
    assert ours[0] == 1 and ours[-1] == 0


def test_schnell_takes_four_unshifted_steps():
    assert sampling.DEFAULTS["schnell"].steps == 4 and sampling.DEFAULTS["schnell"].guidance is None
    assert torch.allclose(sampling.schedule(4, 4096, shift=False), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert sampling.DEFAULTS["dev"].steps == 20 and sampling.DEFAULTS["dev"].guidance == 3.5


def test_euler_follows_an_exact_velocity_to_the_image():
    target = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    packed_target = sampling.pack_latents(target)
    calls = []

    def denoise(x, t):  # the rectified-flow velocity towards ``target``: (x - x0) / t
        calls.append(float(t[0]))
        return (x - packed_target) / t.view(-1, 1, 1)

    out = sampling.sample_latents(denoise, height=32, width=32, variant="dev",
                                  generator=torch.Generator().manual_seed(1))
    assert len(calls) == 20 and calls[0] == 1.0 and calls == sorted(calls, reverse=True)
    assert torch.allclose(out, target, atol=1e-5)


def test_cfg_mixes_conditional_and_unconditional():
    cond = lambda x, t: torch.ones_like(x)  # noqa: E731
    uncond = lambda x, t: torch.zeros_like(x)  # noqa: E731
    assert torch.equal(sampling.cfg_denoiser(cond, uncond, 4.0)(torch.zeros(1, 2, 3), None), torch.full((1, 2, 3), 4.0))
    assert sampling.cfg_denoiser(cond, uncond, 1.0) is cond


def test_decode_unshifts_and_unscales_before_the_ae():
    seen = {}

    class AE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def decode(self, z):
            seen["z"] = z
            return SimpleNamespace(sample=torch.full((z.shape[0], 3, z.shape[2] * 8, z.shape[3] * 8), 2.0))

    z = torch.randn(2, 16, 2, 3)
    images = sampling.decode_to_images(AE(), scale_latents(z))
    assert torch.allclose(seen["z"], z, atol=1e-5)
    assert len(images) == 2 and images[0].size == (24, 16)
    assert np.asarray(images[0]).max() == 255  # clamped to [-1, 1]


@pytest.mark.parametrize("kind,variant", [("flux-dev", "dev"), ("flux-schnell", "schnell"), ("chroma", "chroma")])
def test_the_tiny_transformer_samples(kind, variant):
    from easytrain.families.flux.tiny import build_tiny_transformer

    model = build_tiny_transformer(kind).eval()
    config = model.config
    text = SimpleNamespace(t5=torch.randn(1, 5, config.context_in_dim),
                           pooled=torch.randn(1, config.vec_in_dim) if config.vec_in_dim else None,
                           t5_mask=torch.ones(1, 5))
    denoise = sampling.transformer_denoiser(model, text, height=32, width=48, variant=variant, t5_mask=True)
    steps = []
    out = sampling.sample_latents(denoise, height=32, width=48, variant=variant, steps=3,
                                  generator=torch.Generator().manual_seed(0), on_step=lambda i, n: steps.append(i))
    assert out.shape == (1, 16, 4, 6) and torch.isfinite(out).all() and steps == [1, 2, 3]
    again = sampling.sample_latents(denoise, height=32, width=48, variant=variant, steps=3,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="multiples of 16"):
        sampling.sample_latents(denoise, height=40, width=48, variant=variant)
