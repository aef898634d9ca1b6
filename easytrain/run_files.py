"""What a run writes into its output folder before training: the answers, the plan, the tag summary.

The answers copy and the resolved plan say how the folder's files were made.
"""

from __future__ import annotations

import json
from pathlib import Path

from easytrain import answers as answers_file
from easytrain.fsutil import atomic_write_text


def answers_copy_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}.answers.json"


def plan_copy_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}.plan.json"


def tag_summary_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / f"{name}_tags.txt"


def write_run_files(plan) -> list[Path]:
    """Copy the answers and the resolved plan into the output folder; write the tag summary."""
    out = Path(plan.saving.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [answers_file.save(plan.answers, answers_copy_path(out, plan.saving.output_name))]
    plan_path = plan_copy_path(out, plan.saving.output_name)
    atomic_write_text(plan_path, json.dumps(plan.to_dict(), indent=2, ensure_ascii=False) + "\n")
    written.append(plan_path)
    order = plan.data.tag_summary
    if order != "none":
        from easytrain.data.tags import write_tag_summary

        written.append(write_tag_summary(tag_summary_path(out, plan.saving.output_name), plan.train_scan, order))
    return written
