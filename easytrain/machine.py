"""What this machine has, found cheaply and without torch: an NVIDIA GPU, and whether it does bf16.

The wizard proposes defaults from this before any heavy library is loaded, and
`check` warns about settings this machine cannot honour.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")


@lru_cache(maxsize=1)
def has_cuda_gpu() -> bool:
    """True when an NVIDIA GPU is present and not hidden with CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        if NVIDIA_PROC.is_dir() and any(NVIDIA_PROC.iterdir()):
            return True
    except OSError:
        pass
    listing = _nvidia_smi("-L")
    return bool(listing and "GPU" in listing)


@lru_cache(maxsize=1)
def gpu_supports_bf16() -> bool:
    """True when the first GPU is Ampere (compute capability 8.0) or newer."""
    if not has_cuda_gpu():
        return False
    out = _nvidia_smi("--query-gpu=compute_cap", "--format=csv,noheader")
    try:
        return float((out or "").strip().splitlines()[0]) >= 8.0
    except (ValueError, IndexError):
        return False


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_gib: float


@lru_cache(maxsize=1)
def gpu_info() -> Optional[GpuInfo]:
    """The first GPU's name and memory; None without one.

    EASYTRAIN_GPU_MEMORY (GiB, or "none") plans for another machine's card: make
    the answers on a laptop for a GPU server.
    """
    forced = os.environ.get("EASYTRAIN_GPU_MEMORY", "").strip()
    if forced:
        try:
            return GpuInfo("the GPU set in EASYTRAIN_GPU_MEMORY", float(forced)) if float(forced) > 0 else None
        except ValueError:
            return None
    if not has_cuda_gpu():
        return None
    out = _nvidia_smi("--query-gpu=name,memory.total", "--format=csv,noheader,nounits")
    try:
        name, mib = (out or "").strip().splitlines()[0].rsplit(",", 1)
        return GpuInfo(name.strip(), float(mib) / 1024)
    except (ValueError, IndexError):
        return None


def best_mixed_precision() -> str:
    """bf16 where it runs well (recent GPUs, and the CPU, where fp16 does not run); fp16 on older GPUs."""
    if has_cuda_gpu() and not gpu_supports_bf16():
        return "fp16"
    return "bf16"


def _nvidia_smi(*args: str) -> Optional[str]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
