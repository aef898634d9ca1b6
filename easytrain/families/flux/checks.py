"""What `check` (the plan) refuses or warns about for Flux.1 and Chroma before anything loads: no torch.

``refused(plan, arch)`` lists every setting the Flux trainer would refuse or could not honour, so that the
plan raises one error naming them all and what check accepts, train never refuses; ``plan_warnings``
names the settings that would be silently ignored. Both are reached through the catalog's hooks.
"""

from __future__ import annotations

from easytrain.families.flux.options import FlowSettings, defaults_for, ignored_settings, refused_settings, variant_of

CHROMA = "chroma"
FLOW_OPTIONS = ("timestep_sampling", "sigmoid_scale", "discrete_flow_shift", "model_prediction_type",
                "weighting_scheme", "guidance_scale", "apply_t5_attn_mask")


def flow_settings_of(plan, arch: str) -> FlowSettings:
    """The flow settings the objective will train with (family.flow_settings, without torch)."""
    import dataclasses

    options = plan.model.options
    chosen = {key: options[key] for key in FLOW_OPTIONS if options.get(key) is not None}
    return dataclasses.replace(defaults_for(variant_of(arch)), **chosen)


def refused(plan, arch: str) -> list[str]:
    """One line per setting the Flux trainer refuses (empty: the plan trains)."""
    problems = [f"{name}: {reason}" for name, reason in refused_settings(plan.loss)]
    network = plan.network
    if network.network_type != "LoRA":
        problems.append(f"network_type {network.network_type}: Flux.1 and Chroma train plain LoRA only, as kohya's "
                        "networks/lora_flux.py (Flux's layers are all Linear: LoCon adds nothing; LoHa and LoKr "
                        "files in Flux's BFL layout are not what kohya's or easytrain's Flux tools read)")
    if network.dora:
        problems.append("dora: kohya's lora_flux has no DoRA; Flux LoRAs are plain LoRA")
    if network.block_args:
        problems.append(f"{', '.join(sorted(k for k in network.block_args if k != 'block_lr_zero_threshold'))}: "
                        "block-wise settings have no Flux block numbering (kohya's lora_flux offers none)")
    options = plan.model.options
    if options.get("train_t5") and arch != CHROMA and not network.train_text_encoder:
        problems.append("train_t5: T5-XXL trains with the text-encoder learning rate, which is 0 here (or "
                        "train_parts leaves the text encoders out): set text_encoder_lr above 0")
    return problems


def plan_warnings(plan, arch: str) -> list[str]:
    """The settings a Flux run would silently not use."""
    warnings = [f"{name} is ignored: {reason}" for name, reason in ignored_settings(flow_settings_of(plan, arch))]
    if options_t5(plan) and arch == CHROMA:
        warnings.append("train_t5 is ignored: Chroma's only text encoder is T5-XXL, which trains whenever the "
                        "text encoder does")
    return warnings


def options_t5(plan) -> bool:
    return bool(plan.model.options.get("train_t5"))


def clip_skip_reason(arch: str) -> str:
    """Why clip_skip does nothing on Flux.1 and Chroma (the plan's warning and check's line)."""
    if arch == CHROMA:
        return "Chroma reads captions with T5-XXL alone"
    return "Flux.1 takes CLIP-L's pooled output, not a hidden layer"
