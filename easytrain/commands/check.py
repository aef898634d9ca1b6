"""`easytrain check FILE`: validate the answers and print the plan before a long run."""

from __future__ import annotations

from easytrain import answers as answers_file
from easytrain.plan import TrainPlan


def plan_lines(plan: TrainPlan) -> list[str]:
    a = plan.answers
    lines = [f"Plan for {a.source or 'answers'}", f"  base model: {plan.base_model}"]
    lines.append("  data:")
    for scan in (plan.train_scan, plan.reg_scan):
        if scan is None:
            continue
        for s in scan.subsets:
            kind = "reg" if s.is_reg else "train"
            lines.append(f"    {s.folder.name}: {len(s.images)} images x {s.repeats} repeats"
                         f" = {len(s.images) * s.repeats} ({kind}, {s.captions} captions)")
    step = plan.steps
    lines.append(f"  steps: {step.line()}")
    lines.append(f"  warmup: {plan.warmup_steps} steps; scheduler {a.scheduler}; optimizer {a.optimizer}")
    lines.append(f"  network: {a.network_type} dim {a.network_dim} alpha {a.network_alpha:g}"
                 + (f", conv dim {a.conv_dim} alpha {a.conv_alpha:g}" if a.conv_dim else ""))
    parts = ("UNet" if plan.train_unet else "") + (" + text encoder" if plan.train_text_encoder else "")
    lines.append(f"  training: {parts.strip(' +')} at {plan.resolution[0]}x{plan.resolution[1]}, "
                 f"unet lr {plan.unet_lr:g}, text encoder lr {plan.text_encoder_lr:g}, clip skip {plan.clip_skip}")
    lines.append(f"  output ({plan.output_dir}):")
    shown = list(plan.output_files)
    if len(shown) > 4:
        shown = shown[:2] + [f"... {len(shown) - 3} more"] + shown[-1:]
    lines += [f"    {path}" for path in shown]
    try:
        from easytrain.data.report import dataset_report_lines

        lines.append("  dataset:")
        lines += ["    " + line for line in dataset_report_lines(plan.train_scan, plan.reg_scan,
                                                                 plan.bucket_settings, plan.batch_size)]
    except ImportError:
        pass
    if plan.warnings:
        lines.append("  warnings:")
        lines += [f"    ! {w}" for w in plan.warnings]
    return lines


def run_check(path: str) -> int:
    answers = answers_file.load(path)
    plan = TrainPlan.from_answers(answers)
    print("\n".join(plan_lines(plan)))
    print("OK: ready to train with `easytrain train " + path + "`")
    return 0
