"""Where sample images go: ``<output>/sample/<name>_e000001_00_<seed>.png`` and one sheet per epoch.

Samples made every N steps are named as kohya names them, by step:
``<name>_000500_00_<seed>.png``, with a sheet ``<name>_000500_sheet.png``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SAMPLE_FOLDER = "sample"


def sample_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / SAMPLE_FOLDER


def sample_image_path(output_dir: str | os.PathLike, name: str, epoch: int, index: int, seed: int) -> Path:
    """Epoch 0 is the before-training sample; ``index`` is the prompt's 0-based position."""
    return sample_dir(output_dir) / f"{name}_e{epoch:06d}_{index:02d}_{seed}.png"


def step_sample_image_path(output_dir: str | os.PathLike, name: str, step: int, index: int, seed: int) -> Path:
    return sample_dir(output_dir) / f"{name}_{step:06d}_{index:02d}_{seed}.png"


def contact_sheet_path(output_dir: str | os.PathLike, name: str, epoch: int) -> Path:
    return sample_dir(output_dir) / f"{name}_e{epoch:06d}_sheet.png"


def step_contact_sheet_path(output_dir: str | os.PathLike, name: str, step: int) -> Path:
    return sample_dir(output_dir) / f"{name}_{step:06d}_sheet.png"


@dataclass(frozen=True)
class SampleName:
    """What a sample's file name says: the epoch or the step it was made at, and the prompt's index."""
    epoch: Optional[int]
    step: Optional[int]
    index: int


def is_sample_of(name: str, filename: str) -> bool:
    """Whether ``filename`` is a sample or a contact sheet of the run ``name`` (epoch or step)."""
    return re.fullmatch(re.escape(name) + r"_e?\d{6,}_(?:\d{2,}_\d+|sheet)\.png", filename) is not None


def parse_sample_name(name: str, filename: str) -> Optional[SampleName]:
    """The parts of a sample image's name for the run ``name``; None for sheets and other files."""
    match = re.fullmatch(re.escape(name) + r"_(e?)(\d{6,})_(\d{2,})_\d+\.png", filename)
    if match is None:
        return None
    number, index = int(match.group(2)), int(match.group(3))
    if match.group(1):
        return SampleName(epoch=number, step=None, index=index)
    return SampleName(epoch=None, step=number, index=index)
