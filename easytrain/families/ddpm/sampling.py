"""The samplers of the DDPM families: Euler a and DDIM on the training schedule, in diffusers' UNet pipelines."""

from __future__ import annotations

# SD's training noise schedule, used when the caller has no scheduler config at hand.
DEFAULT_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, set_alpha_to_one=False, clip_sample=False, timestep_spacing="leading",
)


def build_sample_scheduler(sampler: str, scheduler_config=None, prediction_type: str = "epsilon"):
    """A fresh inference scheduler on the training schedule (betas, timesteps) of ``scheduler_config``."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

    classes = {"euler_a": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler}
    if sampler not in classes:
        raise ValueError(f"sampler must be one of {sorted(classes)}, got {sampler!r}")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    config = dict(scheduler_config) if scheduler_config is not None else dict(DEFAULT_SCHEDULER_CONFIG)
    # DDIM's default is to clip x0 to [-1, 1], wrong for SD latents; the pipeline would warn and undo it.
    config["clip_sample"] = False
    # SD's inference schedules start one step later than the training schedule (diffusers warns otherwise).
    config["steps_offset"] = 1
    return classes[sampler].from_config(config, prediction_type=prediction_type)


def native_size(pipe) -> int:
    """The pipeline's native image side: the UNet's sample size times the VAE's scale."""
    sample_size = pipe.unet.config.sample_size
    if not isinstance(sample_size, int):
        sample_size = sample_size[0]
    return sample_size * pipe.vae_scale_factor


