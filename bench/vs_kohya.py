"""Benchmark: easytrain against kohya sd-scripts on the same full-size checkpoint, same settings, CPU.

    .venv/bin/python bench/vs_kohya.py --kohya ~/sd-scripts --kohya-python ~/kohya-venv/bin/python \\
        --checkpoint sd15.safetensors [--arch sd15|sdxl] [--resolution 256] [--images 1] [--steps 2]
        [--rounds 3] [--threads 2] [--keep DIR]

kohya is a peer, installed by you in its own venv (its requirements.txt; on a machine without a network
it also needs its tokenizers in a folder, given with --tokenizers, laid out as its --tokenizer_cache_dir
expects: ``openai_clip-vit-large-patch14`` and, for SDXL, ``laion_CLIP-ViT-bigG-14-laion2B-39B-b160k``).
Nothing of kohya's is shipped or imported here: each side runs as its own process. Full-size checkpoints
with random weights are written by bench/load_full_sd15.py and bench/load_full_sdxl.py (``--keep PATH``).

The settings are the same on both sides: LoRA dim 16 alpha 8, AdamW, constant lr, batch 1, fp32 on the
CPU, gradient checkpointing, latents cached in memory, SDPA attention; SD1.5 trains the UNet and the text
encoder, SDXL the UNet alone with the text encoders' outputs cached (kohya's usual SDXL set-up).

The sides run in turn (the order rotates each round), --rounds times, so load on a shared machine hits
them alike. For each run this prints the whole process's wall time and when each step ended (read from the
progress each prints as it goes): ``start-up`` is the time before the first step began (imports, loading,
caching, the network, the optimizer: when the line each prints just before its first step appeared),
``step`` the median time between the ends of consecutive steps. Then the medians over rounds and the ratios to kohya; issue 29's
goals: start-up at most 0.50x kohya's, the step at most 0.80x. Each easytrain run gets a cache folder of
its own (the base model's hash is computed, as on a first run) unless --warm-cache. ``--baseline DIR``
adds an earlier easytrain checkout (a git worktree) as a third side, "before".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAPTION = "a photo of a cat, sks"


@dataclass
class Timing:
    """One run of one side: wall time, and when each step ended (seconds from the process start)."""

    total: float
    startup: float  # when the first step began
    step_ends: list[float] = field(default_factory=list)

    @property
    def step(self) -> float:
        gaps = [b - a for a, b in zip(self.step_ends, self.step_ends[1:])]
        return statistics.median(gaps) if gaps else float("nan")


def write_images(folder: Path, count: int, size: int) -> Path:
    """``count`` random-noise images with one caption each, in kohya's ``<repeats>_<name>`` folder."""
    import numpy as np
    from PIL import Image

    images = folder / "1_cat"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = (rng.random((size, size, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(images / f"{index}.png")
        (images / f"{index}.txt").write_text(CAPTION, encoding="utf-8")
    return folder


def easytrain_command(args, work: Path, data: Path, output: str = "easytrain") -> list[str]:
    answers = {
        "schema_version": 1,
        "base_model": str(args.checkpoint),
        "architecture": "sdxl" if args.arch == "sdxl" else "sd1",
        "image_folder": str(data),
        "output_folder": str(work / output),
        "output_name": "bench",
        "use_regularization": False,
        "optimizer": "AdamW",
        "network_type": "LoRA",
        "network_dim": 16,
        "network_alpha": 8.0,
        "unet_lr": 1e-4,
        "text_encoder_lr": 5e-5,
        "scheduler": "constant",
        "warmup_ratio": 0.0,
        "resolution": args.resolution,
        "batch_size": 1,
        "length_by": "steps",
        "max_steps": args.steps,
        "train_parts": "unet_only" if args.arch == "sdxl" else "both",
        "mixed_precision": "no",
        "save_precision": "fp16",
        "cache_latents": "memory",
        "min_snr_gamma": 0,
        "sample_images": False,
        "gradient_checkpointing": True,
        "shuffle_captions": False,
        "flip_aug": False,
        "save_every_n_epochs": 0,  # kohya saves the last file only, and no state
        "save_state": False,
        "max_token_length": 75,    # kohya's default (easytrain's is 225: three windows of the text encoder)
        "realistic_model": True,
        "tensorboard": False,      # kohya logs nothing unless asked
    }
    if args.arch != "sdxl":
        answers["clip_skip"] = 1   # kohya's default (SDXL has none)
    path = work / f"{output}.json"
    path.write_text(json.dumps(answers, indent=2), encoding="utf-8")
    return [sys.executable, "-m", "easytrain", "train", str(path)]


def kohya_command(args, work: Path, data: Path) -> list[str]:
    script = "sdxl_train_network.py" if args.arch == "sdxl" else "train_network.py"
    command = [
        str(args.kohya_python), str(args.kohya / script),
        "--pretrained_model_name_or_path", str(args.checkpoint), "--train_data_dir", str(data),
        "--resolution", str(args.resolution), "--output_dir", str(work / "kohya"), "--output_name", "bench",
        "--network_module", "networks.lora", "--network_dim", "16", "--network_alpha", "8",
        "--unet_lr", "1e-4", "--text_encoder_lr", "5e-5", "--optimizer_type", "AdamW",
        "--lr_scheduler", "constant", "--train_batch_size", "1", "--max_train_steps", str(args.steps),
        "--mixed_precision", "no", "--save_precision", "fp16", "--cache_latents", "--gradient_checkpointing",
        "--caption_extension", ".txt", "--seed", "42", "--save_model_as", "safetensors", "--sdpa",
    ]
    if args.tokenizers:
        command += ["--tokenizer_cache_dir", str(args.tokenizers)]
    if args.arch == "sdxl":
        command += ["--network_train_unet_only", "--cache_text_encoder_outputs"]
    return command


# easytrain's plain view prints "training NAME on cpu: ..." before its first step, then "step 3/10 | ...";
# kohya's tqdm bar "steps:   0%|...| 0/10 [..." before its first step, then "steps:  30%|...| 3/10 [...".
EASYTRAIN_STEP = re.compile(r"^(?:step (\d+)/(\d+) |training .* on \w+: )")
KOHYA_STEP = re.compile(r"steps:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def run_timed(command: list[str], cwd: Path, env: dict, log: Path, step_pattern: re.Pattern,
              every_step_csv: Path | None = None) -> Timing:
    """Run one side; note when each step's progress first appears on its stdout or stderr."""
    start = time.monotonic()
    ends: dict[int, float] = {}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with log.open("wb") as out:
        buffer = b""
        while True:
            chunk = process.stdout.read1(65536)
            if not chunk:
                break
            out.write(chunk)
            buffer += chunk
            *pieces, buffer = re.split(rb"[\r\n]", buffer)
            now = time.monotonic() - start
            for piece in pieces:
                found = step_pattern.search(piece.decode("utf-8", "replace"))
                if found:
                    ends.setdefault(int(found.group(1) or 0), now)  # 0: the first step begins
    code = process.wait()
    total = time.monotonic() - start
    if code != 0:
        raise SystemExit(f"{command[1]} failed with exit status {code}; its output is in {log}")
    began = ends.get(0, float("nan"))
    step_ends = [ends[k] for k in sorted(ends) if k > 0]
    if every_step_csv is not None and every_step_csv.exists() and step_ends:
        # easytrain prints every tenth step; its metrics file has each step's own duration
        import csv

        with every_step_csv.open(encoding="utf-8") as handle:
            seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
        first = step_ends[0]
        step_ends = [first]
        for duration in seconds[1:]:
            step_ends.append(step_ends[-1] + duration)
    return Timing(total, began, step_ends)


def describe(name: str, timing: Timing) -> str:
    return f"{name:9s} total {timing.total:7.1f} s   start-up {timing.startup:6.1f} s   step {timing.step:6.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kohya", type=Path, required=True, help="kohya sd-scripts' folder")
    parser.add_argument("--kohya-python", type=Path, required=True, help="the python of kohya's venv")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a full-size single-file checkpoint")
    parser.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--tokenizers", type=Path, help="kohya's --tokenizer_cache_dir (for offline runs)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("both", "easytrain", "kohya"), default="both")
    parser.add_argument("--baseline", type=Path,
                        help="also run an earlier easytrain checkout (a git worktree), as the side 'before'")
    parser.add_argument("--keep", type=Path, help="work here and keep the logs and outputs")
    parser.add_argument("--warm-cache", action="store_true",
                        help="let easytrain remember the base model's hash between runs (a re-run's start-up)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="vs_kohya_"))
    work.mkdir(parents=True, exist_ok=True)
    data = write_images(work / "images", args.images, args.resolution)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    sides = {
        "easytrain": (easytrain_command(args, work, data), REPO, EASYTRAIN_STEP,
                      work / "easytrain" / "bench.metrics.csv"),
        "kohya": (kohya_command(args, work, data), args.kohya, KOHYA_STEP, None),
    }
    if args.baseline:
        sides["before"] = (easytrain_command(args, work, data, "before"), args.baseline, EASYTRAIN_STEP,
                           work / "before" / "bench.metrics.csv")
    if args.only != "both":
        sides = {name: side for name, side in sides.items() if name != ("kohya" if args.only == "easytrain" else "easytrain")}
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"{args.arch} {args.checkpoint.name}, {args.images} image(s) at {args.resolution} px, {args.steps} steps, "
          f"{args.rounds} rounds", flush=True)
    timings: dict[str, list[Timing]] = {name: [] for name in sides}
    rotation = list(sides)
    for round_number in range(1, args.rounds + 1):
        shift = (round_number - 1) % len(rotation)
        order = rotation[shift:] + rotation[:shift]
        for name in order:
            command, cwd, pattern, csv_path = sides[name]
            shutil.rmtree(work / name, ignore_errors=True)
            side_env = dict(env)
            if name == "before":
                side_env["PYTHONPATH"] = str(args.baseline)
            if name in ("easytrain", "before") and not args.warm_cache:
                # a cache folder of its own each run: the base model's hash is computed, not remembered
                side_env["EASYTRAIN_CACHE"] = str(work / f"cache-{name}-{round_number}")
            timing = run_timed(command, cwd, side_env, work / f"{name}-{round_number}.log", pattern, csv_path)
            timings[name].append(timing)
            print(f"round {round_number}  {describe(name, timing)}", flush=True)

    print("medians:")
    medians = {}
    for name, runs in timings.items():
        medians[name] = tuple(statistics.median(getattr(t, what) for t in runs) for what in ("total", "startup", "step"))
        total, startup, step = medians[name]
        print(f"  {name:9s} total {total:7.1f} s   start-up {startup:6.1f} s   step {step:6.2f} s")
    for name in ("easytrain", "before"):
        if name in medians and "kohya" in medians:
            (total, startup, step), (k_total, k_startup, k_step) = medians[name], medians["kohya"]
            print(f"ratio {name}/kohya: total {total / k_total:.2f}x   start-up {startup / k_startup:.2f}x "
                  f"(goal <= 0.50)   step {step / k_step:.2f}x (goal <= 0.80)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
