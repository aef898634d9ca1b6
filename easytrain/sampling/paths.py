"""Where sample images go: ``<output>/sample/<name>_e000001_00_<seed>.png`` and one sheet per epoch."""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_FOLDER = "sample"


def sample_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / SAMPLE_FOLDER


def sample_image_path(output_dir: str | os.PathLike, name: str, epoch: int, index: int, seed: int) -> Path:
    """Epoch 0 is the before-training sample; ``index`` is the prompt's 0-based position."""
    return sample_dir(output_dir) / f"{name}_e{epoch:06d}_{index:02d}_{seed}.png"


def contact_sheet_path(output_dir: str | os.PathLike, name: str, epoch: int) -> Path:
    return sample_dir(output_dir) / f"{name}_e{epoch:06d}_sheet.png"
