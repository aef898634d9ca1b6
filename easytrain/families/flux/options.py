"""Flux's training options, their kohya names and defaults, and what ``check`` says about them: no torch.

``FlowSettings`` is what families/flux/objective.py trains with; ``refused_settings`` names the
DDPM-only loss and noise options the flow-matching objective refuses; ``ignored_settings`` the
options that kohya's formulas would silently not use with the other choices made; ``DEFAULT_REASONS``
says why each default is what it is (the wizard's help text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

VARIANTS = ("dev", "schnell", "chroma")
# detect.py's kinds (the catalog's Flux ids) -> the variant the objective, metadata and sampler take.
VARIANT_OF_KIND = {"flux-dev": "dev", "flux-schnell": "schnell", "chroma": "chroma"}
TIMESTEP_SAMPLINGS = ("sigma", "uniform", "sigmoid", "shift", "flux_shift")
MODEL_PREDICTION_TYPES = ("raw", "additive", "sigma_scaled")
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
LOSS_TYPES = ("l2", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential")  # "snr" needs a DDPM schedule's alphas

# T5 tokens per caption, as kohya (t5xxl_max_token_length's default).
T5_TOKENS = {"dev": 512, "schnell": 256, "chroma": 512}


@dataclass(frozen=True)
class FlowSettings:
    """The flow-matching settings; the defaults are what kohya's Flux docs recommend.

    (kohya's own argparse defaults differ: timestep_sampling sigma, discrete_flow_shift 3.0,
    model_prediction_type sigma_scaled, guidance_scale 3.5; its documented Flux LoRA command uses
    shift / 3.1582 / raw / 1.0, which is what people run.)
    """

    timestep_sampling: str = "shift"
    sigmoid_scale: float = 1.0
    discrete_flow_shift: float = 3.1582
    model_prediction_type: str = "raw"
    weighting_scheme: str = "none"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    guidance_scale: float = 1.0
    apply_t5_attn_mask: bool = False
    ip_noise_gamma: float = 0.0
    ip_noise_gamma_random_strength: bool = False
    loss_type: str = "l2"
    huber_schedule: str = "constant"
    huber_c: float = 0.1
    huber_scale: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for name, allowed in (("timestep_sampling", TIMESTEP_SAMPLINGS),
                              ("model_prediction_type", MODEL_PREDICTION_TYPES),
                              ("weighting_scheme", WEIGHTING_SCHEMES), ("loss_type", LOSS_TYPES),
                              ("huber_schedule", HUBER_SCHEDULES)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.discrete_flow_shift <= 0:
            problems.append(f"discrete_flow_shift must be above 0, got {self.discrete_flow_shift!r}")
        if self.sigmoid_scale <= 0:
            problems.append(f"sigmoid_scale must be above 0, got {self.sigmoid_scale!r}")
        if problems:
            raise ValueError("; ".join(problems))


# Why each default (kohya's Flux LoRA docs, networks/lora_flux.py, flux_train_network.py).
DEFAULT_REASONS = {
    "timestep_sampling": "shift: kohya's documented Flux LoRA command (--timestep_sampling shift); a sigmoid of a "
                         "normal draw, shifted towards noise by discrete_flow_shift",
    "discrete_flow_shift": "3.1582: kohya's documented value for Flux (about exp(1.15), Flux's own shift at 1024 px)",
    "model_prediction_type": "raw: kohya's documented Flux command; the transformer predicts the velocity directly",
    "guidance_scale": "1.0: kohya's docs train Flux.1 dev at guidance 1.0 (the distilled guidance input); "
                      "samples use 3.5",
    "weighting_scheme": "none: an unweighted loss; sigma_sqrt and cosmap weight it only with sigma_scaled, "
                        "logit_normal and mode shape the sampling only with timestep_sampling sigma",
    "sigmoid_scale": "1.0: kohya's default; larger spreads the sigmoid draws towards uniform",
    "apply_t5_attn_mask": "off for Flux.1 as kohya's default (the model was trained without the mask); "
                          "Chroma is trained with it: on for Chroma",
}


def variant_of(kind: str) -> str:
    """"flux-dev" -> "dev", "flux-schnell" -> "schnell", "chroma" -> "chroma" (a variant passes as is)."""
    if kind in VARIANTS:
        return kind
    try:
        return VARIANT_OF_KIND[kind]
    except KeyError:
        raise ValueError(f"not a Flux kind: {kind!r}") from None


# The answers (the family's own questions) that set a FlowSettings field of the same name.
FLOW_OPTIONS = ("timestep_sampling", "sigmoid_scale", "discrete_flow_shift", "model_prediction_type",
                "weighting_scheme", "guidance_scale", "apply_t5_attn_mask")


def flow_settings(arch: str, options) -> FlowSettings:
    """The objective's settings for ``arch``: the variant's defaults, with what the answers set."""
    import dataclasses

    chosen = {key: options[key] for key in FLOW_OPTIONS if options.get(key) is not None}
    return dataclasses.replace(defaults_for(variant_of(arch)), **chosen)


def defaults_for(variant: str) -> FlowSettings:
    """The default settings of a variant: Chroma masks the T5 padding (it was trained so)."""
    return FlowSettings(apply_t5_attn_mask=variant == "chroma")


def ignored_settings(settings: FlowSettings) -> list[tuple[str, str]]:
    """(setting, reason) for the settings kohya's formulas do not use with the other choices made."""
    s = settings
    out = []
    if s.weighting_scheme in ("sigma_sqrt", "cosmap") and s.model_prediction_type != "sigma_scaled":
        out.append(("weighting_scheme", f"{s.weighting_scheme} weights the loss only with model_prediction_type "
                                        "sigma_scaled (as in kohya's apply_model_prediction_type)"))
    if s.weighting_scheme in ("logit_normal", "mode") and s.timestep_sampling != "sigma":
        out.append(("weighting_scheme", f"{s.weighting_scheme} shapes the sigma draw only with timestep_sampling "
                                        "sigma"))
    if s.discrete_flow_shift != FlowSettings.discrete_flow_shift and s.timestep_sampling not in ("shift", "sigma"):
        out.append(("discrete_flow_shift", "used only by timestep_sampling shift and sigma"))
    if s.sigmoid_scale != FlowSettings.sigmoid_scale and s.timestep_sampling in ("uniform", "sigma"):
        out.append(("sigmoid_scale", "used only by timestep_sampling sigmoid, shift and flux_shift"))
    return out


# ---- what check refuses ------------------------------------------------------------------------------

_DDPM_ONLY = "kohya's Flux trainer"


def refused_settings(settings) -> list[tuple[str, str]]:
    """(setting, reason) for every setting in ``settings`` that the flow-matching objective refuses.

    ``settings`` is the plan's LossSettings (or any object with its fields) or a mapping of easytrain's
    loss and noise option names to their values; an option left at its off value (0, False, None) passes.
    """
    refused: list[tuple[str, str]] = []

    def get(name):
        return settings.get(name) if isinstance(settings, Mapping) else getattr(settings, name, None)

    def on(*names):
        return any(bool(get(name)) and get(name) not in ("off", "none") for name in names)

    if on("min_snr_gamma"):
        refused.append(("min_snr_gamma", "min-SNR-gamma weights by a DDPM schedule's signal-to-noise ratio; "
                        "flow matching has none (kohya's Flux trainer drops it: use weighting_scheme instead)"))
    if on("debiased_estimation", "debiased_estimation_loss"):
        refused.append(("debiased_estimation", "the debiased estimation weight is 1/sqrt(SNR) of a DDPM schedule; "
                        "flow matching has none (kohya's Flux trainer drops it)"))
    if on("scale_v_pred_loss_like_noise_pred"):
        refused.append(("scale_v_pred_loss_like_noise_pred", "it rescales a v-prediction loss by a DDPM schedule's "
                        "SNR; Flux predicts the flow velocity"))
    if on("v_parameterization") or get("prediction_type") in ("v_prediction", "v"):
        refused.append(("v_parameterization", "Flux predicts the flow velocity (noise - image); epsilon/v prediction "
                        "belong to DDPM models"))
    if on("zero_terminal_snr"):
        refused.append(("zero_terminal_snr", "it rescales a DDPM beta schedule; the flow-matching path already ends "
                        "in pure noise at sigma 1"))
    if get("huber_schedule") == "snr" and get("loss_type") in ("huber", "smooth_l1"):
        refused.append(("huber_schedule", "the 'snr' Huber schedule reads a DDPM schedule's alphas (kohya raises "
                        "NotImplementedError for Flux): use constant or exponential"))
    for name in ("noise_offset", "multires_noise_iterations", "adaptive_noise_scale"):
        if on(name):
            refused.append((name, f"{_DDPM_ONLY} draws plain Gaussian noise and ignores it; "
                                  "ip_noise_gamma is the noise option it applies"))
    if on("min_timestep") or get("max_timestep") not in (None, 1000):
        refused.append(("min_timestep/max_timestep", "integer DDPM timesteps; Flux draws sigmas with "
                        "timestep_sampling"))
    return refused
