"""Flux's training objective: rectified flow as kohya's flux_train_network.py trains it.

What a step does, in kohya's order (sd-scripts library/flux_train_utils.py):

- latents: the AE's sample, shifted and scaled, ``(z - 0.1159) * 0.3611``; 16 channels at 1/8 the
  image size; packed 2x2 into tokens of 64 features for the transformer, with ``img_ids`` (0, row,
  column) per token and ``txt_ids`` all zero;
- sigma in (0, 1) per image from ``timestep_sampling``:
  ``uniform`` U(0, 1); ``sigmoid`` sigmoid(sigmoid_scale * N(0, 1)); ``shift`` that sigmoid, shifted
  by ``discrete_flow_shift`` (s * shift / (1 + (shift - 1) * s)); ``flux_shift`` that sigmoid, shifted
  by exp(mu) with mu linear in the token count (0.5 at 256 tokens, 1.15 at 4096: Flux's own
  resolution-dependent shift); ``sigma`` an index into the shifted 1000-step FlowMatchEulerDiscrete
  table, drawn with the density of ``weighting_scheme`` (logit_normal, mode, else uniform);
- noisy = (1 - sigma) * x0 + sigma * noise (plus ip_noise_gamma * xi on the noise when asked);
  the model sees ``timesteps`` = sigma (kohya passes sigma * 1000 / 1000); the target is
  noise - x0, the velocity;
- ``model_prediction_type``: raw (the prediction as is), additive (plus the noisy input),
  sigma_scaled (-sigma * prediction + noisy input, and only then the weighting scheme's loss weights:
  sigma_sqrt sigma^-2, cosmap 2 / (pi * (1 - 2 sigma + 2 sigma^2)), otherwise 1);
- the loss: element-wise l2 (or huber / smooth_l1 with a constant or exponential threshold), the
  weighting, the loss mask, the mean per image, the per-image (prior-loss) weights, the batch mean.
  kohya's Flux trainer applies nothing after that (its post_process_loss returns the loss as is):
  the DDPM loss variants have no meaning here, and ``refused_settings`` names them for ``check``.
- guidance: Flux.1 dev is guidance-distilled and takes ``guidance_scale`` as an input (1.0 for
  training, as kohya's docs recommend); schnell and Chroma take none.

One ``FlowObjective`` serves the training step (random noise and sigmas from a generator) and the
validation loss (the same noise each time from a fixed seed, at fixed sigmas);
``FluxObjective`` puts it behind the family seam's ``Objective`` (families/base.py), whose
``denoising_loss`` the step and the validation both call.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from easytrain.families.base import Draw, Objective
from easytrain.families.flux.model import image_ids, pack_latents, text_ids, unpack_latents
from easytrain.families.flux.options import (  # noqa: F401  (the objective's settings, re-exported)
    HUBER_SCHEDULES,
    LOSS_TYPES,
    MODEL_PREDICTION_TYPES,
    T5_TOKENS,
    TIMESTEP_SAMPLINGS,
    VARIANTS,
    WEIGHTING_SCHEMES,
    FlowSettings,
    ignored_settings,
    refused_settings,
)

AE_SHIFT = 0.1159
AE_SCALE = 0.3611
LATENT_CHANNELS = 16
PATCH = 2                      # tokens are 2x2 latent patches
NUM_TRAIN_TIMESTEPS = 1000


# ---- latents, packing, ids --------------------------------------------------------------------------


def scale_latents(z: torch.Tensor) -> torch.Tensor:
    """AE latents as the transformer trains on them: (z - shift) * scale."""
    return (z - AE_SHIFT) * AE_SCALE


def unscale_latents(z: torch.Tensor) -> torch.Tensor:
    """The inverse of ``scale_latents``: what the AE's decoder takes."""
    return z / AE_SCALE + AE_SHIFT


def encode_latents(ae, pixels: torch.Tensor, generator: Optional[torch.Generator] = None, *,
                   sample: bool = True) -> torch.Tensor:
    """Pixels in [-1, 1] (B, 3, H, W) -> scaled latents (B, 16, H/8, W/8).

    ``ae.encode`` may return a distribution (diffusers' ``.latent_dist``, or one with ``sample``/``mode``)
    or the raw latents. kohya's AE samples (BFL's DiagonalGaussian); ``sample=False`` takes the mean,
    as the validation set does.
    """
    out = ae.encode(pixels)
    dist = getattr(out, "latent_dist", out)
    if isinstance(dist, torch.Tensor):
        z = dist
    elif sample:
        z = dist.sample(generator=generator)
    else:
        z = dist.mode()
    return scale_latents(z)


# ---- sigmas -----------------------------------------------------------------------------------------


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The discrete flow shift: s * shift / (1 + (shift - 1) * s)."""
    return (sigmas * shift) / (1 + (shift - 1) * sigmas)


def flux_mu(image_tokens: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """Flux's resolution-dependent shift exponent: linear from 0.5 at 256 tokens to 1.15 at 4096."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return slope * image_tokens + base_shift - slope * 256


def time_shift(mu: float, sigmas: torch.Tensor) -> torch.Tensor:
    """exp(mu) / (exp(mu) + (1 / s - 1)): BFL's time_shift with exponent 1."""
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def schedule_sigmas(shift: float, steps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The FlowMatchEulerDiscreteScheduler's training table (``steps`` sigmas from 1 down to 1/steps), shifted."""
    base = torch.linspace(1, steps, steps, dtype=torch.float64).flip(0) / steps
    return shift_sigmas(base, shift).float()


def timestep_density(scheme: str, batch: int, generator: Optional[torch.Generator], *, logit_mean: float,
                     logit_std: float, mode_scale: float) -> torch.Tensor:
    """u in [0, 1) per image with the density of SD3's weighting schemes.

    kohya's compute_density_for_timestep_sampling: logit_normal, mode, else uniform.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    if scheme == "logit_normal":
        u = torch.normal(logit_mean, logit_std, size=(batch,), generator=generator, device=device)
        return torch.sigmoid(u)
    u = torch.rand((batch,), generator=generator, device=device)
    if scheme == "mode":
        u = 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    return u


def loss_weighting(scheme: str, sigmas: torch.Tensor) -> torch.Tensor:
    """SD3's loss weights per sigma (kohya's compute_loss_weighting_for_sd3)."""
    if scheme == "sigma_sqrt":
        return (sigmas ** -2.0).float()
    if scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas ** 2))
    return torch.ones_like(sigmas)


# ---- the objective ----------------------------------------------------------------------------------


@dataclass
class FlowBatch:
    """One step's model input and target (the batch of ``FlowObjective.prepare``)."""

    latents: torch.Tensor          # x0, (B, 16, h, w)
    noise: torch.Tensor            # (B, 16, h, w)
    sigmas: torch.Tensor           # (B,), float32, in (0, 1)
    noisy: torch.Tensor            # (B, 16, h, w), the unpacked model input
    model_input: torch.Tensor      # (B, h/2 * w/2, 64), packed
    img_ids: torch.Tensor          # (B, h/2 * w/2, 3)
    timesteps: torch.Tensor        # (B,), what the transformer's ``timesteps`` input takes: sigma
    guidance: Optional[torch.Tensor]  # (B,) for Flux.1 dev, None otherwise
    target: torch.Tensor           # noise - x0, (B, 16, h, w)
    weights: Optional[torch.Tensor] = None  # (B,) loss weights of the weighting scheme (sigma_scaled only)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.noisy.shape[2], self.noisy.shape[3]


class FlowObjective:
    """Flux's objective: ``prepare`` makes a FlowBatch (the model input, the timesteps, the target and the
    per-image loss weights), ``model_inputs`` the transformer's arguments, ``loss`` compares a prediction.

    ``variant`` is "dev" (guidance input), "schnell" or "chroma" (none).
    """

    def __init__(self, settings: FlowSettings | None = None, variant: str = "dev") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.settings = settings or FlowSettings()
        self.variant = variant
        self._table = schedule_sigmas(self.settings.discrete_flow_shift)

    @property
    def uses_guidance(self) -> bool:
        return self.variant == "dev"

    # -- sigmas

    def sample_sigmas(self, batch: int, latent_size: tuple[int, int],
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(B,) float32 sigmas on the CPU, drawn as ``timestep_sampling`` says (kohya's formulas)."""
        s = self.settings
        how = s.timestep_sampling
        device = generator.device if generator is not None else torch.device("cpu")
        if how == "uniform":
            return torch.rand((batch,), generator=generator, device=device).cpu()
        if how in ("sigmoid", "shift", "flux_shift"):
            sigmas = torch.sigmoid(s.sigmoid_scale * torch.randn((batch,), generator=generator, device=device).cpu())
            if how == "shift":
                sigmas = shift_sigmas(sigmas, s.discrete_flow_shift)
            elif how == "flux_shift":
                h, w = latent_size
                sigmas = time_shift(flux_mu((h // PATCH) * (w // PATCH)), sigmas)
            return sigmas
        u = timestep_density(s.weighting_scheme, batch, generator, logit_mean=s.logit_mean,
                             logit_std=s.logit_std, mode_scale=s.mode_scale)
        indices = (u.cpu() * NUM_TRAIN_TIMESTEPS).long().clamp(0, NUM_TRAIN_TIMESTEPS - 1)
        return self._table[indices]

    def validation_sigmas(self, batch: int, fraction: float) -> torch.Tensor:
        """The fixed sigmas of the validation loss: ``fraction`` for every image."""
        return torch.full((batch,), float(fraction))

    # -- the step

    def sample_noise(self, latents: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Plain Gaussian noise like ``latents`` (kohya's Flux trainer takes no offset or pyramid noise)."""
        gen_device = generator.device if generator is not None else latents.device
        noise = torch.randn(latents.shape, generator=generator, device=gen_device, dtype=torch.float32)
        return noise.to(latents.device, latents.dtype)

    def prepare(self, latents: torch.Tensor, *, generator: Optional[torch.Generator] = None,
                noise: Optional[torch.Tensor] = None, sigmas: Optional[torch.Tensor] = None,
                dtype: Optional[torch.dtype] = None) -> FlowBatch:
        """The model input and target for clean ``latents`` (B, 16, h, w), already scaled.

        Training: ``generator`` draws the noise and the sigmas. Validation: pass the fixed ``noise``
        and ``sigmas``. ``dtype`` is the model input's dtype (kohya casts to the weight dtype).
        """
        s = self.settings
        batch, _, h, w = latents.shape
        device = latents.device
        if noise is None:
            noise = self.sample_noise(latents, generator)
        if sigmas is None:
            sigmas = self.sample_sigmas(batch, (h, w), generator)
        sigmas = sigmas.to(device=device, dtype=torch.float32)
        view = sigmas.view(-1, 1, 1, 1)
        noisy_noise = noise
        if s.ip_noise_gamma:
            gen_device = generator.device if generator is not None else device
            xi = torch.randn(latents.shape, generator=generator, device=gen_device).to(device, noise.dtype)
            gamma = s.ip_noise_gamma
            if s.ip_noise_gamma_random_strength:
                gamma = torch.rand(1, generator=generator, device=gen_device).to(device) * gamma
            noisy_noise = noise + gamma * xi
        noisy = (1.0 - view) * latents + view * noisy_noise
        if dtype is not None:
            noisy = noisy.to(dtype)
        if h % PATCH or w % PATCH:
            raise ValueError(f"latent height and width must be even to pack 2x2 into tokens, got {h}x{w}")
        guidance = (torch.full((batch,), float(s.guidance_scale), device=device)
                    if self.uses_guidance else None)
        return FlowBatch(
            latents=latents, noise=noise, sigmas=sigmas, noisy=noisy, model_input=pack_latents(noisy),
            img_ids=image_ids(batch, h, w, device=device), timesteps=sigmas.to(noisy.dtype),
            guidance=guidance, target=noise - latents,
            # kohya weights the loss by the scheme only with sigma_scaled (its other types leave it at 1)
            weights=(loss_weighting(s.weighting_scheme, sigmas) if s.model_prediction_type == "sigma_scaled"
                     else None))

    def model_inputs(self, batch: FlowBatch, text) -> dict:
        """The transformer's keyword arguments in BFL's naming, from ``text``'s ``t5`` (B, L, 4096),
        ``pooled`` (B, 768; None for Chroma) and ``t5_mask`` (B, L; applied with apply_t5_attn_mask)."""
        conditioning = dict(txt=text.t5, txt_attention_mask=(getattr(text, "t5_mask", None)
                                                              if self.settings.apply_t5_attn_mask else None))
        if self.variant != "chroma":
            conditioning["y"] = text.pooled
        return self.denoiser_inputs(batch, conditioning)

    def denoiser_inputs(self, batch: FlowBatch, conditioning: dict) -> dict:
        """The transformer's keyword arguments: the batch's image part and ``conditioning``'s text part
        (``txt``, ``y``, ``txt_attention_mask``, as text.FluxText.transformer_kwargs gives them)."""
        txt = conditioning["txt"]
        out = dict(img=batch.model_input, img_ids=batch.img_ids, timesteps=batch.timesteps,
                   txt_ids=text_ids(txt.shape[0], txt.shape[1], device=txt.device), **conditioning)
        if batch.guidance is not None:
            out["guidance"] = batch.guidance
        return out

    # -- the loss

    def apply_prediction_type(self, prediction: torch.Tensor, batch: FlowBatch) -> torch.Tensor:
        """The unpacked prediction as the loss compares it with the target (kohya's apply_model_prediction_type)."""
        how = self.settings.model_prediction_type
        if how == "raw":
            return prediction
        if how == "additive":
            return prediction + batch.noisy
        return prediction * (-batch.sigmas.view(-1, 1, 1, 1)) + batch.noisy

    def huber_c(self, batch: FlowBatch) -> torch.Tensor:
        s = self.settings
        if s.huber_schedule == "exponential":
            rate = -math.log(s.huber_c) / NUM_TRAIN_TIMESTEPS
            return torch.exp(-rate * batch.sigmas * NUM_TRAIN_TIMESTEPS) * s.huber_scale
        return torch.full_like(batch.sigmas, s.huber_c * s.huber_scale)

    def per_sample_loss(self, prediction: torch.Tensor, batch: FlowBatch, *,
                        masks: Optional[torch.Tensor] = None, plain: bool = False) -> torch.Tensor:
        """(B,) losses for a prediction, packed (B, tokens, 64) or unpacked (B, 16, h, w).

        ``plain``: l2 whatever the loss type (the validation loss), still with the scheme's weights.
        """
        if prediction.ndim == 3:
            prediction = unpack_latents(prediction, *batch.latent_size)
        prediction = self.apply_prediction_type(prediction, batch)
        diff_sq = (prediction.float() - batch.target.float()) ** 2
        if plain or self.settings.loss_type == "l2":
            loss = diff_sq
        else:
            c = self.huber_c(batch).float().view(-1, 1, 1, 1)
            smooth = torch.sqrt(diff_sq + c ** 2) - c
            loss = 2 * c * smooth if self.settings.loss_type == "huber" else 2 * smooth
        if batch.weights is not None:
            loss = loss * batch.weights.view(-1, 1, 1, 1)
        if masks is not None:
            mask = masks.unsqueeze(1) if masks.ndim == 3 else masks
            loss = loss * F.interpolate(mask.to(loss.device, loss.dtype), size=loss.shape[2:], mode="area")
        return loss.mean(dim=(1, 2, 3))

    def loss(self, prediction: torch.Tensor, batch: FlowBatch, *, loss_weights: Optional[torch.Tensor] = None,
             masks: Optional[torch.Tensor] = None, plain: bool = False) -> torch.Tensor:
        """The batch's scalar loss: per-image losses times ``loss_weights`` (prior-loss weights), averaged."""
        per_sample = self.per_sample_loss(prediction, batch, masks=masks, plain=plain)
        if loss_weights is not None:
            per_sample = per_sample * loss_weights.to(per_sample.device, per_sample.dtype)
        return per_sample.mean()


# ---- the family seam's Objective --------------------------------------------------------------------


@dataclass
class FlowDraw(Draw):
    """The seam's Draw (noise, timesteps = sigmas, noisy latents) with the whole FlowBatch."""

    flow: Optional[FlowBatch] = None

    @classmethod
    def of(cls, flow: FlowBatch) -> "FlowDraw":
        return cls(noise=flow.noise, timesteps=flow.timesteps, noisy=flow.noisy, flow=flow)


class FluxObjective(Objective):
    """families/base.Objective for Flux and Chroma: FlowObjective behind draw / fixed_draw / predict / compare.

    ``loss`` is the plan's LossSettings: its ip_noise_gamma, loss type and Huber threshold, and its loss
    masks apply (check refuses the DDPM-only rest). The conditioning a Flux conditioner gives is the
    transformer's text arguments, ``{"txt", "y", "txt_attention_mask"}`` (text.FluxText.transformer_kwargs).
    """

    prediction_type = "flow"

    def __init__(self, settings: FlowSettings, variant: str, loss=None, *, device) -> None:
        if loss is not None:
            changes = dict(ip_noise_gamma=float(loss.ip_noise_gamma or 0.0), loss_type=loss.loss_type)
            if loss.loss_type != "l2":
                changes.update(huber_schedule=loss.huber_schedule, huber_c=loss.huber_c, huber_scale=loss.huber_scale)
            settings = dataclasses.replace(settings, **changes)
        self.flow = FlowObjective(settings, variant)
        self.loss = loss
        self.device = device

    def model_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return scale_latents(latents.to(self.device, dtype=torch.float32))

    def draw(self, latents: torch.Tensor, generator: torch.Generator) -> FlowDraw:
        return FlowDraw.of(self.flow.prepare(latents, generator=generator))

    def fixed_draw(self, latents: torch.Tensor, fraction: float, generator: torch.Generator) -> FlowDraw:
        noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
        sigmas = self.flow.validation_sigmas(latents.shape[0], fraction)
        return FlowDraw.of(self.flow.prepare(latents, noise=noise, sigmas=sigmas))

    def predict(self, forward, draw: FlowDraw, conditioning: dict) -> torch.Tensor:
        return forward(**self.flow.denoiser_inputs(draw.flow, conditioning))

    def compare(self, prediction: torch.Tensor, latents: torch.Tensor, draw: FlowDraw, *, batch=None,
                variants: bool = True) -> torch.Tensor:
        if not variants or self.loss is None or batch is None:
            return self.flow.loss(prediction, draw.flow, plain=True)
        device = prediction.device
        masks = batch.masks.to(device) if self.loss.masked and batch.masks is not None else None
        return self.flow.loss(prediction, draw.flow, loss_weights=batch.loss_weights.to(device), masks=masks)

    def metadata(self) -> dict[str, str]:
        from easytrain.families.flux.metadata import flux_metadata

        # Flux reads CLIP-L's pooled output (no clip skip) and T5 at the variant's own length (512 / 256 tokens):
        # the answers' clip_skip and max_token_length are not used, and kohya writes None for both.
        return {**flux_metadata(self.flow.settings, self.flow.variant), "ss_clip_skip": "None",
                "ss_max_token_length": "None"}
