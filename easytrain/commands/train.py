"""`easytrain train`, `queue` and `demo`: load answers, plan, train with a live view."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from easytrain import answers as answers_file
from easytrain.errors import UserError
from easytrain.plan import TrainPlan

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_ANSWERS = REPO_ROOT / "answers" / "demo.json"


@dataclass
class JobResult:
    file: str
    ok: bool
    seconds: float
    output: str = ""
    error: str = ""
    exit_code: int = 0


EXIT_STOPPED = 3  # stopped on request, state saved: `--resume` continues


def resume_command(path: str) -> str:
    return f"easytrain train {path} --resume"


def train_one(path: str, *, resume: Optional[str] = None, plain: bool = False) -> JobResult:
    """Validate, plan and train one answers file. UserErrors propagate to the caller."""
    answers = answers_file.load(path)
    plan = TrainPlan.from_answers(answers)
    from easytrain.commands.check import plan_lines
    from easytrain.commands.stop_signals import stop_on_signals
    from easytrain.progress import MetricsWriter, fan_out, make_view, summary_lines
    from easytrain.train import events as ev
    from easytrain.train.control import TrainControl
    from easytrain.train.loop import run_training

    print("\n".join(plan_lines(plan)), flush=True)
    control = TrainControl()
    started = time.monotonic()
    metrics = MetricsWriter(plan.output_dir, plan.output_name)
    try:
        with stop_on_signals(control), make_view(sys.stdout, plain=True if plain else None,
                                                 every=answers.get("log_every_n_steps", 10)) as view:
            result = run_training(plan, fan_out(view, metrics), control, resume=resume)
    finally:
        metrics.close()
    for line in summary_lines(result.outcome, extra_files=(metrics.csv_path, metrics.png_path),
                              resume_command=resume_command(path)):
        print(line)
    stopped = isinstance(result.outcome, ev.RunStopped)
    return JobResult(path, not stopped, time.monotonic() - started, str(result.final_path),
                     error="stopped" if stopped else "", exit_code=EXIT_STOPPED if stopped else 0)


def run_train(files: Sequence[str], *, resume: Optional[str] = None, plain: bool = False) -> int:
    if len(files) == 1:
        return train_one(files[0], resume=resume, plain=plain).exit_code
    if resume:
        raise UserError("--resume works with one answers file at a time")
    return run_jobs(list(files), plain=plain)


def run_jobs(files: list[str], *, plain: bool, done_folder: Optional[Path] = None) -> int:
    """Run several answers files; a failing one is reported and skipped."""
    results: list[JobResult] = []
    for index, path in enumerate(files, 1):
        print(f"\n=== job {index}/{len(files)}: {path}", flush=True)
        started = time.monotonic()
        try:
            result = train_one(path, plain=plain)
        except UserError as exc:
            print(f"easytrain: {exc}", file=sys.stderr, flush=True)
            results.append(JobResult(path, False, time.monotonic() - started, error=str(exc).splitlines()[0]))
            continue
        results.append(result)
        if done_folder is not None:
            done_folder.mkdir(exist_ok=True)
            Path(path).replace(done_folder / Path(path).name)
    print("\njob summary:")
    for r in results:
        status = "done" if r.ok else "FAILED"
        detail = r.output if r.ok else r.error
        print(f"  {status:6} {r.seconds:7.1f}s  {Path(r.file).name}  {detail}")
    return 0 if all(r.ok for r in results) else 1


def run_queue(folder: str, *, plain: bool = False) -> int:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: queue folder not found")
    files = sorted(str(p) for p in root.glob("*.json") if p.is_file())
    if not files:
        raise UserError(f"{root}: no answers files (*.json) in this folder")
    return run_jobs(files, plain=plain, done_folder=root / "complete")


def run_demo(*, plain: bool = False) -> int:
    from easytrain.demo import ensure_demo_dataset

    if ensure_demo_dataset(DEMO_ANSWERS.parent / "demo" / "images"):
        print("made the demo dataset in answers/demo/images")
    return run_train([str(DEMO_ANSWERS)], plain=plain)
