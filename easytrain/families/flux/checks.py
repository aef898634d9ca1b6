"""What `check` (the plan) refuses or warns about for Flux.1 and Chroma before anything loads: no torch.

``refused(plan, arch)`` lists every setting the Flux trainer would refuse or could not honour, so that the
plan raises one error naming them all and what check accepts, train never refuses; ``plan_warnings``
names the settings that would be silently ignored. Both are reached through the catalog's hooks.
"""

from __future__ import annotations

from easytrain.families.flux.options import flow_settings, ignored_settings, refused_settings

CHROMA = "chroma"


def refused(plan, arch: str) -> list[str]:
    """One line per setting the Flux trainer refuses (empty: the plan trains)."""
    problems = [f"{name}: {reason}" for name, reason in refused_settings(plan.loss)]
    network = plan.network
    if network.network_type != "LoRA":
        problems.append(f"network_type {network.network_type}: Flux.1 and Chroma train plain LoRA only, as kohya's "
                        "networks/lora_flux.py, whose module set and metadata easytrain's Flux files follow (it has "
                        "no LoHa or LoKr; Flux's layers are all Linear, so LoCon would add nothing to LoRA)")
    if network.dora:
        problems.append("dora: kohya's networks/lora_flux.py has no DoRA; Flux LoRAs train as plain LoRA")
    if network.block_args:
        problems.append(f"{', '.join(sorted(k for k in network.block_args if k != 'block_lr_zero_threshold'))}: "
                        "block-wise settings have no Flux block numbering (kohya's lora_flux offers none)")
    options = plan.model.options
    problems += model_file_problems(plan, arch)
    if options.get("train_t5") and arch != CHROMA and not network.train_text_encoder:
        problems.append("train_t5: T5-XXL trains with the text-encoder learning rate, which is 0 here (or "
                        "train_parts leaves the text encoders out): set text_encoder_lr above 0")
    return problems


def model_file_problems(plan, arch: str) -> list[str]:
    """What loading would miss, read before it: the companion files (CLIP-L, T5-XXL, AE) of a single file and the
    T5 tokenizer (easytrain's tiny models carry their own)."""
    from pathlib import Path

    from easytrain.errors import UserError
    from easytrain.families.flux.tokenizer import t5_tokenizer_dir

    resolved, options = plan.model.resolved, plan.model.options
    if resolved.tiny or plan.model.base_model.startswith("builtin:"):
        return []
    problems = []
    model = Path(plan.model.base_model)
    try:
        companions(plan, arch)
    except UserError as exc:
        problems.append(str(exc))
    try:
        t5_tokenizer_dir(model, options.get("t5_tokenizer"))
    except UserError as exc:
        problems.append(str(exc))
    return problems


def companions(plan, arch: str):
    """The companion files a single-file model will load with (None for a diffusers folder): headers only."""
    from pathlib import Path

    from easytrain.families.flux.companions import find_companions
    from easytrain.families.flux.detect import file_parts
    from easytrain.model.detect import read_safetensors_header

    model, options = Path(plan.model.base_model), plan.model.options
    if model.is_dir():
        return None
    inside = file_parts(read_safetensors_header(model).tensors)
    return find_companions(model, arch, clip_l=options.get("clip_l"), t5xxl=options.get("t5xxl"),
                           vae=plan.model.vae, inside=inside)


def model_lines(plan, arch: str) -> list[str]:
    """check's lines about the files a Flux model loads with: its companions and the T5 tokenizer."""
    from pathlib import Path

    from easytrain.errors import UserError
    from easytrain.families.flux.tokenizer import t5_tokenizer_dir

    if plan.model.resolved.tiny or plan.model.base_model.startswith("builtin:"):
        return []
    lines = []
    try:
        found = companions(plan, arch)
        if found is not None:
            lines += [f"{part}: {path}" for part, path in found.files.items()]
        lines.append(f"T5 tokenizer: {t5_tokenizer_dir(Path(plan.model.base_model), plan.model.options.get('t5_tokenizer'))}")
    except UserError:
        pass  # refused() said so
    return lines


def plan_warnings(plan, arch: str) -> list[str]:
    """The settings a Flux run would silently not use."""
    warnings = [f"{name} is ignored: {reason}" for name, reason in ignored_settings(flow_settings(arch, plan.model.options))]
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
