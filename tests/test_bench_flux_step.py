"""bench/flux_step.py on the CPU: --plan-only prints every lever with its estimate and touches no GPU; the
same step code runs on a tiny Flux-shaped transformer (the full-size one is built on a GPU only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "flux_step.py"), *args], capture_output=True,
                          text=True, timeout=600, cwd=REPO)


def test_plan_only_lists_every_lever_at_both_sizes():
    from easytrain.families.flux.memory import LEVERS

    done = run("--plan-only")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FLUX.1-dev transformer, full size, random bf16 weights built on cuda")
    for resolution in (512, 1024):
        for name, *_ in LEVERS:
            assert any(line.strip().startswith(f"{resolution} px  {name} ") and "estimate" in line for line in lines)


def test_estimates_are_the_lever_lines():
    from easytrain.families.flux.memory import lever_lines

    done = run("--estimates")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == lever_lines(512, 512) + lever_lines(1024, 1024)


def test_full_size_is_refused_off_a_gpu():
    done = run("--device", "cpu", "--levers", "bf16", "--resolution", "64")
    assert done.returncode == 1 and "GPU only" in done.stdout


def test_the_step_runs_on_a_tiny_transformer_on_the_cpu():
    done = run("--tiny", "--device", "cpu", "--resolution", "64", "--steps", "1", "--warmup", "0", "--levers",
               "bf16", "fp8 base")
    assert done.returncode == 0, done.stderr
    results = [line for line in done.stdout.splitlines() if line.startswith("[CPU] 64 px")]
    assert len(results) == 2 and all("s/step" in line and "loss" in line for line in results)


def test_chroma_plan_and_tiny_step():
    assert run("--plan-only", "--chroma").stdout.startswith("Chroma transformer, full size")
    done = run("--tiny", "--chroma", "--device", "cpu", "--resolution", "64", "--steps", "1", "--warmup", "0",
               "--levers", "fp8 base, 8-bit AdamW")
    assert done.returncode == 0, done.stderr
    assert "[CPU] 64 px  fp8 base, 8-bit AdamW" in done.stdout
