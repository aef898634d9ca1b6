"""`easytrain check FILE`: validate the answers and print the plan before a long run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from easytrain import catalog
from easytrain.catalog import architecture_label, uses_clip_skip
from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.memory_estimate import estimate_extra_lines, estimate_plan, over_memory_warning
from easytrain.plan import TrainPlan, steps_warning
from easytrain.textsafe import safe_line
from easytrain.wording import bucket_rounding_note, plural


@dataclass(frozen=True)
class BaseModelInfo:
    line: str                # what `check` shows about the base model
    arch: str                # the catalog architecture it trains as
    tiny: bool               # one of easytrain's tiny test models


def inspect_base_model(plan: TrainPlan) -> BaseModelInfo:
    """The base model and the architecture it trains as, as the plan read them from the file's header.

    A file that is not a usable checkpoint (a LoRA, a VAE, random tensors) was refused by the plan,
    before anyone waits for a model to load.
    """
    resolved, base_model = plan.model.resolved, plan.model.base_model
    found = resolved.detection
    if found is not None and found.arch is None and str(base_model).lower().endswith(".ckpt"):  # not a zip
        from easytrain.commands.file_kind import legacy_ckpt_problem

        problem = legacy_ckpt_problem(base_model)  # is it a pickle at all? say what it really is
        if problem:
            raise UserError(f"{base_model}: {problem}; the base model must be a .safetensors or .ckpt "
                            "checkpoint or a diffusers folder")
    if found is None:
        return BaseModelInfo(f"{base_model} (easytrain's embedded tiny {architecture_label(resolved.arch)}-shaped model)",
                             resolved.arch, True)
    if found.arch is not None and found.arch != resolved.arch or not found.sure:
        return BaseModelInfo(f"{base_model} ({architecture_label(resolved.arch)}, as set in the answers; the file "
                             f"says: {found.description})", resolved.arch, resolved.tiny)
    return BaseModelInfo(f"{base_model} ({found.description})", resolved.arch, resolved.tiny)


CPU_IS_SLOW = ("no NVIDIA GPU on this machine: a full-size model trains on the CPU, which is very slow (minutes "
               "per step, so days for a usual run); fine if this file is for a GPU machine")


def memory_lines(plan: TrainPlan, model: BaseModelInfo, *, extra: bool = True) -> tuple[list[str], list[str]]:
    """The estimated GPU memory of a step (for the full-size architecture), and a warning when it will not fit.

    The estimate is the family's own when it has one (memory_estimate.estimate_plan); ``extra``: with the lines
    the family adds (its memory levers at the plan's size, marked against this machine's GPU)."""
    from easytrain import machine

    gpu = machine.gpu_info()
    if model.tiny and gpu is None:  # the tiny test model on a CPU: a full-size model's GPU figure helps no one
        return [], []
    found = estimate_plan(plan, model.arch)
    lines = found.lines()
    if model.tiny:
        lines[0] += "; this file is easytrain's tiny test model, which needs far less"
    more = estimate_extra_lines(plan, model.arch, gpu.memory_gib if gpu is not None else None) if extra else []
    lines += more
    if gpu is None and not model.tiny and not machine.has_cuda_gpu():
        return lines, [CPU_IS_SLOW]
    real = gpu is not None and not model.tiny  # the tiny models fit anywhere
    warning = over_memory_warning(found, gpu.name, gpu.memory_gib) if real else None
    if warning and more:
        warning += "; or a memory setting from the list above"
    return lines, [warning] if warning else []


def machine_warnings(plan: TrainPlan) -> list[str]:
    """Settings this machine cannot honour (the file may well be meant for another machine)."""
    from easytrain import machine

    if plan.precision.mixed_precision == "fp16" and not machine.has_cuda_gpu():
        return ["mixed_precision: fp16 needs an NVIDIA GPU and this machine has none; training here would "
                "run in fp32 (bf16 works on the CPU). Fine if this file is for a GPU machine"]
    return []


def vae_line(plan: TrainPlan) -> str:
    """The separate VAE and its fit, read from headers; UserError naming the key when it does not fit."""
    from easytrain.model.vae_check import check_vae_fits

    vae = plan.answers.vae
    return check_vae_fits(vae if vae == "builtin:tiny" else plan.answers.path("vae"), plan.model.base_model)


def clip_skip_text(plan: TrainPlan, arch: str) -> str:
    if uses_clip_skip(arch):
        return f"clip skip {plan.model.clip_skip}"
    from easytrain.families.registry import catalog_hook

    own = catalog_hook(arch, "clip_skip_reason")
    return f"clip skip n/a ({own(arch) if own else architecture_label(arch) + ' always uses the penultimate layer'})"


def plan_lines(plan: TrainPlan, extra_warnings: Sequence[str] = ()) -> list[str]:
    a = plan.answers
    model = inspect_base_model(plan)
    lines = [f"Plan for {a.source or 'answers'}", f"  base model: {model.line}"]
    from easytrain.families.registry import catalog_hook

    own_lines = catalog_hook(model.arch, "model_lines")
    if own_lines is not None:  # a family whose model comes with more files (Flux: companions, tokenizer) lists them
        lines += [f"    {line}" for line in own_lines(plan, model.arch)]
    elif a.vae:
        lines.append(f"  vae: {vae_line(plan)}")
    lines.append("  data:")
    for scan in (plan.train_scan, plan.reg_scan):
        if scan is None:
            continue
        for s in scan.subsets:
            kind = "reg" if s.is_reg else "train"
            lines.append(f"    {s.folder.name}: {plural(len(s.images), 'image')} x {plural(s.repeats, 'repeat')}"
                         f" = {len(s.images) * s.repeats} ({kind}, {plural(s.captions, 'caption')})")
    if plan.validation.images:
        cadence = f" and every {plan.validation.every_n_steps} steps" if plan.validation.every_n_steps else ""
        lines.append(f"    validation: {plan.validation.images} held-out images, never trained on; their loss is "
                     f"measured at each saved file{cadence}")
    step = plan.steps
    lines.append(f"  steps: {step.line()}")
    rounding = bucket_rounding_note(step)
    if rounding:
        lines.append(f"    ({rounding})")
    lines.append(f"  warmup: {plural(plan.schedule.warmup_steps, 'step')}; scheduler {a.scheduler}; optimizer {a.optimizer}")
    lines.append(f"  network: {a.network_type} dim {a.network_dim} alpha {a.network_alpha:g}"
                 + (f", conv dim {a.conv_dim} alpha {a.conv_alpha:g}" if a.conv_dim else ""))
    denoiser = catalog.architecture(plan.model.architecture).denoiser
    parts = (denoiser if plan.network.train_unet else "") + (" + text encoder" if plan.network.train_text_encoder else "")
    lines.append(f"  training: {parts.strip(' +')} at {plan.resolution[0]}x{plan.resolution[1]}, "
                 f"unet lr {plan.optimizer.unet_lr:g}, text encoder lr {plan.optimizer.text_encoder_lr:g}, {clip_skip_text(plan, model.arch)}")
    memory, memory_warnings = memory_lines(plan, model)
    lines += ["  " + line for line in memory]
    lines.append(f"  output ({plan.saving.output_dir}):")
    shown = list(plan.output_files)
    if len(shown) > 4:
        shown = shown[:2] + [f"... {len(shown) - 3} more"] + shown[-1:]
    lines += [f"    {path}" for path in shown]
    try:
        from easytrain.data.report import dataset_report_lines

        lines.append("  dataset:")
        lines += ["    " + line for line in dataset_report_lines(plan.train_scan, plan.reg_scan,
                                                                 plan.bucket_settings, plan.data.batch_size)]
    except ImportError:
        pass
    lines += suggestion_lines(plan)
    lines += trigger_lines(plan)
    too_few = steps_warning(plan.total_steps) if model.tiny else None  # a few dozen steps train the tiny model
    warnings = [*(w for w in plan.warnings if w != too_few), *extra_warnings, *memory_warnings]
    if warnings:
        lines.append("  warnings:")
        lines += [f"    ! {w}" for w in warnings]
    return [safe_line(line) for line in lines]  # folder names, captions and paths print as they are, escaped


def suggestion_lines(plan: TrainPlan) -> list[str]:
    """The suggested repeats and epochs (the wizard offers the same table)."""
    from easytrain.repeats import TARGET_STEPS, suggest_for_plan

    suggestion = suggest_for_plan(plan)
    if suggestion is None:
        return []
    low, high = TARGET_STEPS
    if not suggestion.changes_anything:
        return [f"  repeats and epochs: as suggested for {low}-{high} steps"]
    lines = [f"  suggested repeats and epochs ({low}-{high} steps; set folder_repeats and epochs, "
             "or accept them in the wizard):"]
    lines += ["    " + line for line in suggestion.lines()]
    return lines


def usual_trigger(plan: TrainPlan) -> Optional[str]:
    """The tag more than half of the captions start with (what to type in a prompt), or None."""
    from easytrain.data.captions import split_tags
    from easytrain.tools.trigger_check import likely_trigger

    captions = [split_tags(image.caption) for image in plan.train_scan.all_images]
    trigger = likely_trigger(captions)
    starting = sum(1 for tags in captions if tags and tags[0] == trigger)
    return trigger if trigger and starting * 2 > len(captions) else None


def trigger_lines(plan: TrainPlan) -> list[str]:
    """The trigger check for the captions' usual first tag (what keep tokens holds in front)."""
    from easytrain.data.captions import split_tags
    from easytrain.tools.trigger_check import check_trigger, likely_trigger

    captions = [split_tags(image.caption) for image in plan.train_scan.all_images]
    trigger = likely_trigger(captions)
    if trigger is None:
        return []
    try:
        report = check_trigger(trigger, captions, key="trigger (the captions' usual first tag)")
    except UserError as exc:
        return [f"  trigger: not checked: {exc}"]
    return ["  " + line for line in report.lines()]


def run_check(path: str) -> int:
    from easytrain.commands.preflight import earlier_outputs_lines, find_earlier_outputs
    from easytrain.commands.train import prepare

    _, plan = prepare(path)
    import sys

    from easytrain.wording import terminal_width, wrap_lines

    print("\n".join(wrap_lines(plan_lines(plan, machine_warnings(plan)), terminal_width(sys.stdout))))
    earlier = find_earlier_outputs(plan.saving.output_dir, plan.saving.output_name, plan.total_steps)
    for line in earlier_outputs_lines(earlier, path):
        print("  " + line)
    from easytrain.commands.queue_lock import run_lock_holder

    holder = run_lock_holder(plan.saving.output_dir, plan.saving.output_name)
    if holder:
        print(safe_line(f"  ! another easytrain run is training into this output now ({holder}); `train` "
                        "refuses to start until it ends"))
    print(f"OK: ready to train with `{command('train', path)}`")
    return 0
