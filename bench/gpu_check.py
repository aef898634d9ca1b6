"""The GPU check: every path only a GPU has, through easytrain's own trainer, in at most 10 minutes on one GPU.

    .venv/bin/python bench/gpu_check.py                 # on a machine with a CUDA GPU
    .venv/bin/python bench/gpu_check.py --plan-only     # anywhere: build every run's plan, print what it checks
    .venv/bin/python bench/gpu_check.py --workdir DIR --keep   # keep the checkpoints and outputs for a look

Nothing is downloaded: full-size SD1.5 and SDXL single files with random
weights are written by bench code (bench/load_full_sd15.py,
bench/load_full_sdxl.py; about 2 and 6.5 GiB of disk in --workdir), and the
pictures are random. The trainer runs as `easytrain train` runs it
(run_training on a TrainPlan made from answers), so what is checked is the
code a first real run goes through:

1. SD1.5 512, fp16 with the gradient scaler, AdamW8bit, latents cached on
   the GPU, a sample at the end; stopped at step 3 (state saved) and resumed
   from that state: the scaler's and the 8-bit optimizer's state come back.
2. SD1.5 512, bf16, Lion8bit, latents not cached (the VAE encodes every step,
   the batches are loaded ahead and copied pinned).
3. SDXL 1024, fp16, AdamW8bit, latents and text-encoder outputs cached, a
   sample at 1024 in fp16 (SDXL's VAE overflows in fp16: a black sample).
4. s/step and images/s for SD1.5 512 and SDXL 1024 at batch 1 and 4
   (bench/gpu_step.py's step: random weights materialised on the GPU), and
   SDXL batch 1 with fused AdamW beside AdamW8bit (the default optimizer's
   question, docs/PERFORMANCE.md).

Each check prints one line, `RESULT <name> PASS|FAIL|SKIP <figures or why>`;
a sample counts as a failure when it holds a non-finite value or is black.
The peak memory of the training steps (train/memory_peaks.py) is set beside
`check`'s estimate (easytrain/memory_estimate.py): PASS within
ESTIMATE_RANGE of it. Then a summary line; the exit status is 1 when a check
failed. The script stops at once, loudly, when torch sees no GPU (with the
reason when nvidia-smi sees one: train/device_checks.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

GIB = 1024 ** 3
BUDGET_SECONDS = 600
ESTIMATE_RANGE = (0.5, 1.15)     # measured steps' peak / estimated tensors: PASS inside
STOP_AT = 3                      # run 1 stops after this step and resumes


@dataclass(frozen=True)
class TrainRun:
    """One training run: its answers (on top of COMMON) and what its events are checked for."""

    name: str
    arch: str                    # "sd1" | "sdxl": which random checkpoint
    what: str
    answers: dict
    images: int
    image_size: int
    checks: tuple[str, ...]
    sample: Optional[str] = None     # the prompts file's line
    stop_at: Optional[int] = None    # stop after this step, then resume from the saved state


COMMON = dict(
    schema_version=1, network_dim=16, network_alpha=8.0, unet_lr=1e-4, text_encoder_lr=5e-5, scheduler="constant",
    save_every_n_epochs=0, log_every_n_steps=1, tag_summary="none", gradient_checkpointing=True, seed=1,
    save_precision="fp16",
)

RUNS = (
    TrainRun("sd15-fp16", "sd1", "SD1.5 512, fp16 + grad scaler, AdamW8bit, latents cached on the GPU, sample, "
             f"stop at step {STOP_AT} and resume",
             dict(architecture="sd1", mixed_precision="fp16", optimizer="AdamW8bit", resolution=512, batch_size=2,
                  epochs=2, cache_latents="memory", train_parts="both"),
             images=4, image_size=512, stop_at=STOP_AT,
             sample="a photo of a cat --n blurry --w 512 --h 512 --s 6 --d 2",
             checks=("fp16-grad-scaler", "resume-8bit-state", "adamw8bit", "latent-cache-gpu", "sample-sd15",
                     "peak-vs-estimate-sd15")),
    TrainRun("sd15-bf16", "sd1", "SD1.5 512, bf16, Lion8bit, latents not cached (VAE every step, batches "
             "loaded ahead)",
             dict(architecture="sd1", mixed_precision="bf16", optimizer="Lion8bit", resolution=512, batch_size=2,
                  epochs=1, cache_latents="off", train_parts="both", unet_lr=3e-5, text_encoder_lr=1e-5),
             images=4, image_size=512, checks=("bf16", "lion8bit", "uncached-latents")),
    TrainRun("sdxl-fp16", "sdxl", "SDXL 1024, fp16, AdamW8bit, latents and text-encoder outputs cached, "
             "sample at 1024",
             dict(architecture="sdxl", mixed_precision="fp16", optimizer="AdamW8bit", resolution=1024, batch_size=1,
                  epochs=1, cache_latents="memory", train_parts="unet_only"),
             images=2, image_size=1024, sample="a photo of a house --n blurry --w 1024 --h 1024 --s 4 --d 3",
             checks=("sdxl-step-1024", "sample-sdxl", "peak-vs-estimate-sdxl")),
)
# (arch, resolution, batch, optimizer); the last is the default optimizer's question (docs/PERFORMANCE.md):
# AdamW8bit syncs the GPU once per parameter tensor, fused AdamW does not, at about 0.25 GB more state on SDXL.
SPEED = (("sd1", 512, 1, "AdamW8bit"), ("sd1", 512, 4, "AdamW8bit"), ("sdxl", 1024, 1, "AdamW8bit"),
         ("sdxl", 1024, 4, "AdamW8bit"), ("sdxl", 1024, 1, "AdamW"))
SPEED_STEPS, SPEED_WARMUP = 8, 3


# ---- results ------------------------------------------------------------------------------------------------


@dataclass
class Results:
    rows: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def add(self, name: str, verdict: str, text: str) -> None:
        self.rows.append((name, verdict))
        print(f"RESULT {name} {verdict} {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def summary(self, gpu: str) -> str:
        counts = {v: sum(1 for _, verdict in self.rows if verdict == v) for v in ("PASS", "FAIL", "SKIP")}
        failed = [n for n, v in self.rows if v == "FAIL"]
        line = (f"SUMMARY {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
                f"in {self.elapsed():.0f} s on {gpu}")
        return line + (f"; failed: {', '.join(failed)}" if failed else "")


# ---- inputs: pictures, prompts, answers, plans ---------------------------------------------------------------


def make_images(folder: Path, count: int, size: int, seed: int) -> Path:
    """``count`` random pictures (smooth colour fields, so PNGs stay small) with captions, in folder/1_pics."""
    import numpy as np
    from PIL import Image

    sub = folder / "1_pics"
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        small.resize((size, size), Image.BICUBIC).save(sub / f"{index}.png")
        (sub / f"{index}.txt").write_text(f"a photo of a thing, number {index}\n", encoding="utf-8")
    return folder


def answers_for(run: TrainRun, workdir: Path, base_model: Path) -> dict:
    folder = workdir / run.name
    data = {**COMMON, **run.answers, "base_model": str(base_model),
            "image_folder": str(make_images(folder / "images", run.images, run.image_size, seed=len(run.name))),
            "output_folder": str(folder / "out"), "output_name": run.name}
    if run.sample:
        prompts = folder / "prompts.txt"
        prompts.write_text(run.sample + "\n", encoding="utf-8")
        data.update(sample_images=True, sample_prompts=str(prompts), sample_every_n_epochs=run.answers["epochs"])
    if run.stop_at:
        data.update(save_state=True)
    return data


def plan_for(run: TrainRun, workdir: Path, base_model: Path):
    from easytrain import answers as answers_file
    from easytrain.plan import TrainPlan

    data = answers_for(run, workdir, base_model)
    path = workdir / run.name / "answers.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return TrainPlan.from_answers(answers_file.from_dict(data, source=path))


def estimate_for(plan, arch: str):
    from easytrain.memory_estimate import estimate, setup_for_plan

    return estimate(setup_for_plan(plan, arch))


def checkpoint_path(workdir: Path, arch: str) -> Path:
    return workdir / f"random-{arch}.safetensors"


def write_checkpoint(path: Path, arch: str, header_only: bool = False) -> float:
    """The full-size random single file (fp16, original layout); returns seconds. ``header_only``: its header
    and a hole for the data (what a plan reads)."""
    import torch
    from load_full_sd15 import sd15_original_shapes, write_random_safetensors

    started = time.monotonic()
    if arch == "sd1":
        shapes = sd15_original_shapes()
    else:
        from load_full_sdxl import sdxl_original_shapes

        shapes = sdxl_original_shapes()
    write_random_safetensors(path, shapes, torch.float16, seed=0, header_only=header_only)
    return time.monotonic() - started


# ---- the training runs ---------------------------------------------------------------------------------------


class Events(list):
    """Every event of a run; requests the stop at ``stop_at``."""

    def __init__(self, control=None, stop_at: Optional[int] = None):
        super().__init__()
        self.control, self.stop_at = control, stop_at

    def __call__(self, event) -> None:
        from easytrain.train import events as ev

        self.append(event)
        if isinstance(event, ev.StepEnded) and self.stop_at and event.step == self.stop_at:
            self.control.request_stop("gpu_check: stop and resume")
        if isinstance(event, ev.Message) and event.level == "warning":
            print(f"  warning: {event.text}", flush=True)

    def of(self, kind) -> list:
        return [e for e in self if isinstance(e, kind)]


def train(run: TrainRun, plan) -> dict:
    """Run (and with stop_at: stop, then resume); returns what the checks read."""
    from easytrain.train.control import TrainControl
    from easytrain.train.loop import run_training

    control = TrainControl()
    first = Events(control, run.stop_at)
    started = time.monotonic()
    result = run_training(plan, first, control)
    seconds = time.monotonic() - started
    out = dict(first=first, result=result, seconds=seconds, resumed=None, state=None)
    if run.stop_at:
        from easytrain.train import events as ev

        stopped = first.of(ev.RunStopped)
        out["state"] = Path(stopped[0].state_path) if stopped and stopped[0].state_path else None
        if out["state"] is not None:
            state_copy = Path(tempfile.mkdtemp(prefix="state-", dir=plan.saving.output_dir.parent))
            shutil.copytree(out["state"], state_copy, dirs_exist_ok=True)   # resuming may prune old states
            out["state"] = state_copy
        resumed = Events()
        out["resumed"] = resumed
        out["result"] = run_training(plan, resumed, resume="latest")
        out["seconds"] = time.monotonic() - started
    return out


def step_losses(events: Events) -> list[float]:
    from easytrain.train import events as ev

    return [e.loss for e in events.of(ev.StepEnded)]


def steps_peak(events: Events) -> Optional[int]:
    from easytrain.train import events as ev

    peaks = [e.peak_memory_bytes for e in events.of(ev.StepEnded) if e.peak_memory_bytes is not None]
    return max(peaks) if peaks else None


def optimizer_warnings(events: Events) -> list[str]:
    from easytrain.train import events as ev

    return [m.text for m in events.of(ev.Message) if m.level == "warning" and
            any(word in m.text.lower() for word in ("8bit", "8-bit", "bitsandbytes", "optimizer"))]


def sample_verdict(paths: list[str]) -> tuple[str, str]:
    """PASS when every sample is finite and not black (nor one flat colour)."""
    import numpy as np
    from PIL import Image

    if not paths:
        return "FAIL", "no sample was written"
    notes = []
    verdict = "PASS"
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        finite = bool(np.isfinite(pixels).all())
        black = float(pixels.max()) <= 8.0
        flat = float(pixels.std()) < 1.0
        if not finite or black or flat:
            verdict = "FAIL"
        notes.append(f"{Path(path).name} {image.size[0]}x{image.size[1]} mean {pixels.mean():.0f} "
                     f"std {pixels.std():.1f}{' BLACK' if black else ''}{' FLAT' if flat and not black else ''}")
    return verdict, "; ".join(notes)


def state_tensors(folder: Optional[Path]) -> dict:
    """The optimizer state's tensor dtypes and whether a grad-scaler state is there, from a saved state folder."""
    import torch

    from easytrain.train.state import TRAINING_FILE

    path = folder / TRAINING_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {"optimizer_dtypes": set(), "scaler": False}
    state = torch.load(path, map_location="cpu", weights_only=False)
    dtypes = set()
    for per_param in state["optimizer"].get("state", {}).values():
        dtypes |= {str(v.dtype) for v in per_param.values() if torch.is_tensor(v)}
    return {"optimizer_dtypes": dtypes, "scaler": state.get("scaler") is not None}


def check_run(run: TrainRun, plan, out: dict, results: Results) -> None:
    """The RESULT lines of one training run."""
    import math

    from easytrain.train import events as ev

    first, resumed = out["first"], out["resumed"]
    events = list(first) + list(resumed or [])
    every = Events()
    every.extend(events)
    losses = step_losses(every)
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    loss_text = f"{len(losses)} steps, losses {min(losses):.4f}..{max(losses):.4f}" if losses else "no steps"
    peak = steps_peak(every)
    warnings = optimizer_warnings(every)
    samples = [e.path for e in every.of(ev.SampleSaved)]
    caching = [e for e in every.of(ev.PhaseEnded) if e.phase == "caching latents"]
    step_seconds = [e.seconds for e in every.of(ev.StepEnded)][1:]
    speed = f", median {sorted(step_seconds)[len(step_seconds) // 2]:.2f} s/step" if step_seconds else ""
    for name in run.checks:
        if name == "fp16-grad-scaler":
            state = state_tensors(out["state"])
            ok = finite and state["scaler"]
            results.add(name, "PASS" if ok else "FAIL",
                        f"{loss_text}{speed}; grad scaler state saved: {state['scaler']}")
        elif name == "resume-8bit-state":
            starts = [e.start_step for e in (resumed or Events()).of(ev.RunStarted)]
            state = state_tensors(out["state"])
            eight_bit = "torch.uint8" in state["optimizer_dtypes"]
            ok = starts == [run.stop_at] and eight_bit and finite and out["result"].final_path.is_file()
            results.add(name, "PASS" if ok else "FAIL",
                        f"stopped at {run.stop_at}, resumed at {starts}, optimizer state dtypes "
                        f"{sorted(state['optimizer_dtypes'])}, final {out['result'].final_path.name}")
        elif name in ("adamw8bit", "lion8bit"):
            results.add(name, "FAIL" if warnings or not finite else "PASS",
                        f"{run.answers['optimizer']}: {'; '.join(warnings) or 'no fallback'}; {loss_text}")
        elif name == "latent-cache-gpu":
            on_gpu = bool(caching) and (caching[0].peak_memory_bytes or 0) > 0
            text = (f"{caching[0].seconds:.1f} s, caching peak {caching[0].peak_memory_bytes / GIB:.2f} GiB"
                    if on_gpu else "no GPU caching phase seen")
            results.add(name, "PASS" if on_gpu else "FAIL", text)
        elif name in ("sample-sd15", "sample-sdxl"):
            verdict, text = sample_verdict(samples)
            results.add(name, verdict, text)
        elif name.startswith("peak-vs-estimate"):
            found = estimate_for(plan, run.arch)
            if peak is None:
                results.add(name, "FAIL", "no peak memory reported by the steps")
            else:
                ratio = peak / found.tensors
                low, high = ESTIMATE_RANGE
                results.add(name, "PASS" if low <= ratio <= high else "FAIL",
                            f"steps' peak {peak / GIB:.2f} GiB, estimate {found.tensors / GIB:.2f} GiB "
                            f"({ratio:.0%}; {found.total_gib:.1f} GiB with the allowance) for {found.setup.describe()}")
        elif name in ("bf16", "uncached-latents", "sdxl-step-1024"):
            results.add(name, "PASS" if finite else "FAIL", f"{loss_text}{speed}; peak "
                        f"{peak / GIB:.2f} GiB" if peak is not None else f"{loss_text}{speed}")
        else:
            raise ValueError(name)


# ---- speed ---------------------------------------------------------------------------------------------------


def speed_case(arch: str, resolution: int, batch: int, optimizer: str, precision: str, device) -> str:
    import gpu_step

    args = SimpleNamespace(arch=arch, resolution=resolution, dim=16, alpha=8.0, steps=SPEED_STEPS,
                           warmup=SPEED_WARMUP, optimizer=optimizer)
    result = gpu_step.run_case(gpu_step.Case(precision, batch, True), device, args, count_flops=False)
    return (f"{result.images_per_second:.2f} images/s, {result.seconds_per_step:.3f} s/step, "
            f"peak {result.peak_bytes / GIB:.2f} GiB ({precision}, checkpointing, {result.optimizer}, LoRA dim 16, "
            f"cached latents)")


def speed_name(arch: str, resolution: int, batch: int, optimizer: str) -> str:
    name = f"{'sd15' if arch == 'sd1' else arch}-{resolution}-b{batch}"
    return name if optimizer == "AdamW8bit" else f"{name}-{optimizer.lower()}"


# ---- main ----------------------------------------------------------------------------------------------------


def print_plan(workdir: Path) -> int:
    """--plan-only: every run's plan built (placeholder checkpoints), and what each run and case checks."""
    print("gpu_check --plan-only: the plans the GPU check trains, and what it checks (nothing is trained)")
    for arch in ("sd1", "sdxl"):   # the plans read the headers; the real files are written on a GPU
        write_checkpoint(checkpoint_path(workdir, arch), arch, header_only=True)
    for run in RUNS:
        plan = plan_for(run, workdir, checkpoint_path(workdir, run.arch))
        found = estimate_for(plan, run.arch)
        print(f"run {run.name}: {run.what}")
        print(f"  plan: {plan.total_steps} steps ({plan.images_per_epoch} images x {plan.epochs} epochs, batch "
              f"{plan.data.batch_size}), {plan.precision.mixed_precision}, {plan.optimizer.name}, {plan.resolution[0]}x"
              f"{plan.resolution[1]}, latents {'cached' if plan.data.cache_latents != 'off' else 'not cached'}, "
              f"text outputs {'cached' if plan.text_outputs_cached else 'encoded every step'}"
              + (f", sample '{run.sample}'" if run.sample else "") + (f", stop at step {run.stop_at} and resume"
                                                                       if run.stop_at else ""))
        print(f"  estimate: {found.tensors / GIB:.2f} GiB of tensors ({found.total_gib:.1f} GiB in all) for "
              f"{found.setup.describe()}")
        for name in run.checks:
            print(f"  would check: {name}")
    for arch, resolution, batch, optimizer in SPEED:
        print(f"speed {speed_name(arch, resolution, batch, optimizer)}: bench/gpu_step.py's step, {optimizer}, "
              f"{SPEED_WARMUP} warm-up + {SPEED_STEPS} timed steps")
    checks = sum(len(r.checks) for r in RUNS) + len(SPEED)
    print(f"PLAN {len(RUNS)} training runs, {len(SPEED)} speed cases, {checks} RESULT lines on a GPU")
    return 0


def no_gpu_exit() -> int:
    import torch

    from easytrain.train.device_checks import cuda_mismatch

    why = cuda_mismatch() or "no NVIDIA GPU on this machine (nvidia-smi lists none)"
    print("=" * 78, file=sys.stderr)
    print(f"GPU CHECK NOT RUN: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU.\n{why}\n"
          "Run it on a machine with a CUDA GPU, or --plan-only to see what it would check.", file=sys.stderr)
    print("=" * 78, file=sys.stderr)
    return 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan-only", action="store_true", help="build the plans and print the checks (CPU)")
    parser.add_argument("--workdir", help="where checkpoints, pictures and outputs go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep --workdir's contents afterwards")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds; later checks are skipped")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="easytrain-gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.plan_only:
            return print_plan(workdir)
        import torch

        if not torch.cuda.is_available():
            return no_gpu_exit()
        return run_checks(workdir, args)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run_checks(workdir: Path, args) -> int:
    import torch

    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    memory = torch.cuda.get_device_properties(device).total_memory / GIB
    print(f"GPU check on {gpu} ({memory:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"budget {args.budget:.0f} s", flush=True)
    results = Results()
    for arch in ("sd1", "sdxl"):
        seconds = write_checkpoint(checkpoint_path(workdir, arch), arch)
        print(f"  wrote the random {arch} checkpoint in {seconds:.0f} s", flush=True)
    for run in RUNS:
        if results.elapsed() > args.budget:
            for name in run.checks:
                results.add(name, "SKIP", "over the time budget")
            continue
        print(f"run {run.name}: {run.what}", flush=True)
        try:
            plan = plan_for(run, workdir, checkpoint_path(workdir, run.arch))
            out = train(run, plan)
            check_run(run, plan, out, results)
        except Exception as exc:  # one run's failure is its checks' FAIL; the others still run
            traceback.print_exc()
            for name in run.checks:
                results.add(name, "FAIL", f"{run.name} raised {type(exc).__name__}: {str(exc)[:200]}")
        free(device)
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    for arch, resolution, batch, optimizer in (() if args.skip_speed else SPEED):
        name = f"speed-{speed_name(arch, resolution, batch, optimizer)}"
        if results.elapsed() > args.budget:
            results.add(name, "SKIP", "over the time budget")
            continue
        try:
            results.add(name, "PASS", speed_case(arch, resolution, batch, optimizer, precision, device))
        except torch.cuda.OutOfMemoryError:
            results.add(name, "FAIL", f"out of GPU memory ({memory:.0f} GiB)")
        except Exception as exc:
            traceback.print_exc()
            results.add(name, "FAIL", f"{type(exc).__name__}: {str(exc)[:200]}")
        free(device)
    print(results.summary(gpu), flush=True)
    return 1 if any(v == "FAIL" for _, v in results.rows) else 0


def free(device) -> None:
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)


if __name__ == "__main__":
    raise SystemExit(main())
