"""The loss variants kohya's sd-scripts offers, as pure functions of tensors.

Formulas as in sd-scripts (library/train_util.py ``conditional_loss`` and
``get_huber_threshold_if_needed``, library/custom_train_functions.py):

- loss types, element-wise (reduction is the caller's):
  l2 = (p - t)^2; huber = 2c(sqrt((p - t)^2 + c^2) - c); smooth_l1 = 2(sqrt((p - t)^2 + c^2) - c).
- huber_c per sample from the timestep (huber_schedule): constant c;
  exponential exp(ln(c) * t / T); snr (1 - c) / (1 + sigma)^2 + c with
  sigma = sqrt((1 - alpha_bar) / alpha_bar).
- per-sample weights from the signal-to-noise ratio (SNR capped at 1000 as kohya does):
  scale_v_pred_loss_like_noise_pred snr / (snr + 1);
  debiased_estimation_loss 1 / sqrt(snr) (v-prediction: 1 / (snr + 1)).
- the masked loss: the mask resized to the loss by area averaging, then multiplied in.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

LOSS_TYPES = ("l2", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
SNR_CAP = 1000.0  # snr is infinite at t = 0 on some schedules; kohya caps it here


def huber_c_for(timesteps: torch.Tensor, schedule: str, huber_c: float, *, num_train_timesteps: int,
                alphas_cumprod: Optional[torch.Tensor] = None, huber_scale: float = 1.0) -> torch.Tensor:
    """The Huber threshold per sample, as a float tensor shaped like ``timesteps``."""
    t = timesteps.float()
    if schedule == "constant":
        return torch.full_like(t, huber_c * huber_scale)
    if schedule == "exponential":
        rate = -math.log(huber_c) / num_train_timesteps
        return torch.exp(-rate * t) * huber_scale
    if schedule == "snr":
        if alphas_cumprod is None:
            raise ValueError("the 'snr' Huber schedule needs the noise schedule's alphas_cumprod")
        alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps.long()].float()
        sigmas = ((1.0 - alpha_bar) / alpha_bar) ** 0.5
        return (1 - huber_c) / (1 + sigmas) ** 2 + huber_c
    raise ValueError(f"huber_schedule must be one of {', '.join(HUBER_SCHEDULES)}, got {schedule!r}")


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str = "l2",
                     huber_c: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The loss per element (same shape as ``pred``), computed in fp32."""
    diff_sq = (pred.float() - target.float()) ** 2
    if loss_type == "l2":
        return diff_sq
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    if huber_c is None:
        raise ValueError(f"loss_type {loss_type!r} needs huber_c")
    c = huber_c.float().to(pred.device).view(-1, *([1] * (pred.ndim - 1)))
    smooth = torch.sqrt(diff_sq + c ** 2) - c
    return 2 * c * smooth if loss_type == "huber" else 2 * smooth


def capped_snr(snr: torch.Tensor) -> torch.Tensor:
    return torch.minimum(snr, torch.full_like(snr, SNR_CAP))


def v_pred_like_noise_pred_weights(snr: torch.Tensor) -> torch.Tensor:
    """scale_v_pred_loss_like_noise_pred: snr / (snr + 1) per sample."""
    snr = capped_snr(snr)
    return snr / (snr + 1)


def debiased_weights(snr: torch.Tensor, prediction_type: str = "epsilon") -> torch.Tensor:
    """debiased_estimation_loss: 1 / sqrt(snr) (epsilon) or 1 / (snr + 1) (v-prediction)."""
    snr = capped_snr(snr)
    if prediction_type == "v_prediction":
        return 1 / (snr + 1)
    return 1 / torch.sqrt(snr)


def apply_mask(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``loss`` (B, C, h, w) times ``mask`` (B, H, W or B, 1, H, W in [0, 1]) area-resized to (h, w)."""
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    resized = F.interpolate(mask.to(loss.device, loss.dtype), size=loss.shape[2:], mode="area")
    return loss * resized
