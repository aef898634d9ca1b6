"""The metadata ids and keys kohya writes into a Flux or Chroma LoRA (no torch at import).

kohya's flux_train_network.py: ``get_sai_model_spec`` with flux="dev" / "schnell" / "chroma" gives
``modelspec.architecture`` "flux-1-dev/lora", "flux-1-schnell/lora", "chroma/lora" and
``modelspec.implementation`` BFL's repository (Chroma: lodestones' model page); ``update_metadata``
adds the Flux keys below; the network module is ``networks.lora_flux`` and ``ss_base_model_version``
is "flux1" ("chroma" for Chroma). Values are strings as kohya's str() writes them.
"""

from __future__ import annotations

IMPL_FLUX = "https://github.com/black-forest-labs/flux"
IMPL_CHROMA = "https://huggingface.co/lodestones/Chroma"
NETWORK_MODULE = "networks.lora_flux"

_IDS = {
    "dev": ("flux1", "flux", "flux-1-dev", IMPL_FLUX),
    "schnell": ("flux1", "flux", "flux-1-schnell", IMPL_FLUX),
    "chroma": ("chroma", "chroma", "chroma", IMPL_CHROMA),
}

# kohya's update_metadata, in its order: metadata key -> the settings attribute.
FLUX_KEYS = (
    ("ss_apply_t5_attn_mask", "apply_t5_attn_mask"),
    ("ss_weighting_scheme", "weighting_scheme"),
    ("ss_logit_mean", "logit_mean"),
    ("ss_logit_std", "logit_std"),
    ("ss_mode_scale", "mode_scale"),
    ("ss_guidance_scale", "guidance_scale"),
    ("ss_timestep_sampling", "timestep_sampling"),
    ("ss_sigmoid_scale", "sigmoid_scale"),
    ("ss_model_prediction_type", "model_prediction_type"),
    ("ss_discrete_flow_shift", "discrete_flow_shift"),
)


def metadata_ids(variant: str) -> dict[str, str]:
    """The keys that name the model: base model version, network module, model type, modelspec ids."""
    try:
        base, model_type, arch, implementation = _IDS[variant]
    except KeyError:
        raise ValueError(f"variant must be one of {', '.join(_IDS)}, got {variant!r}") from None
    return {
        "ss_base_model_version": base,
        "ss_network_module": NETWORK_MODULE,
        "ss_model_type": model_type,
        "modelspec.architecture": f"{arch}/lora",
        "modelspec.implementation": implementation,
    }


def _text(value) -> str:
    return str(float(value)) if isinstance(value, float) else str(value)


def flux_metadata(settings, variant: str) -> dict[str, str]:
    """The ids and the Flux keys for ``settings`` (an objective.FlowSettings, or anything with its fields)."""
    out = metadata_ids(variant)
    out.update({key: _text(getattr(settings, attr)) for key, attr in FLUX_KEYS})
    return out


# Keys the shared metadata builder writes that kohya leaves out for Flux ("Flux models don't use
# prediction_type": sai_model_spec writes no modelspec.prediction_type for them).
DROPPED_KEYS = ("modelspec.prediction_type",)


def with_flux_metadata(metadata: dict[str, str], settings, variant: str) -> dict[str, str]:
    """``metadata`` (network/metadata.build_metadata's) as kohya writes it for Flux: the ids and Flux keys
    set, the keys kohya does not write for Flux removed."""
    out = {key: value for key, value in metadata.items() if key not in DROPPED_KEYS}
    out.update(flux_metadata(settings, variant))
    return out
