"""Shared pieces for the robustness tests: answers files for the CLI, running it as a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from _train_helpers import make_colour_dataset

REPO = Path(__file__).resolve().parents[1]


def cli_answers(**overrides) -> dict:
    """A valid answers file for a short CPU run: 4 images x 2 repeats at 64 px, batch 2 -> 4 steps an epoch.

    Paths are relative to the answers file's folder: images/ and out/.
    """
    data = {
        "schema_version": 1, "base_model": "builtin:tiny", "architecture": "sd1", "image_folder": "images",
        "output_folder": "out", "output_name": "run", "optimizer": "AdamW", "network_dim": 4,
        "network_alpha": 2.0, "unet_lr": 5e-3, "text_encoder_lr": 1e-3, "scheduler": "constant",
        "resolution": 256, "batch_size": 2, "epochs": 3, "save_every_n_epochs": 1, "mixed_precision": "no",
        "save_precision": "float", "cache_latents": "memory", "bucket_no_upscale": True, "min_bucket_reso": 64,
        "log_every_n_steps": 1, "tag_summary": "none",
    }
    data.update(overrides)
    return data


def write_answers(folder: Path, name: str = "run.json", **overrides) -> Path:
    """An answers file in ``folder`` (images made there once)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "images").exists():
        make_colour_dataset(folder / "images", size=64, repeats=2)
    path = folder / name
    path.write_text(json.dumps(cli_answers(**overrides), indent=2), encoding="utf-8")
    return path


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def start_cli(args: list[str], cwd: Path, *, prelude: str = "") -> subprocess.Popen:
    """`python -m easytrain ARGS` as a child process (pipes for output), with optional setup code first."""
    code = f"{prelude}\nimport sys\nfrom easytrain.cli import main\nsys.exit(main({args!r}))\n"
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(args: list[str], cwd: Path, *, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "easytrain", *args], cwd=cwd, env=cli_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def wait_for(condition: Callable[[], bool], process: Optional[subprocess.Popen] = None,
             timeout: float = 180.0) -> None:
    """Poll until ``condition()``; fail early when the process ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"process ended (rc {process.returncode}) before the condition\n{out[-2000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
