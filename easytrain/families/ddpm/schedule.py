"""The DDPM training schedule SD1, SD2 and SDXL share."""

from __future__ import annotations


def make_noise_scheduler(prediction_type: str, zero_terminal_snr: bool = False):
    """Scaled-linear betas 0.00085..0.012 over 1000 steps; ztsnr rescales them to zero terminal SNR."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,  # as SD's own scheduler configs: the samplers made from this config expect it
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_terminal_snr,
    )
