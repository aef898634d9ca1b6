"""What the training loop tells the outside world.

Small frozen dataclasses with plain Python values only (no tensors), so any
view (Rich, plain lines, CSV, a test) can consume them. The loop hands each
event to a sink: any callable taking one event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union


@dataclass(frozen=True)
class RunStarted:
    name: str                      # output name
    total_steps: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    num_images: int                # images per epoch, repeats included
    device: str                    # "cuda:0 (NVIDIA H100)", "cpu"
    output_dir: str
    start_step: int = 0            # > 0 when resuming
    lr_groups: tuple[str, ...] = ("unet", "text_encoder")
    validation_images: int = 0     # held-out images; 0: no validation loss this run


@dataclass(frozen=True)
class PhaseStarted:
    """A stretch of work without training steps: loading, caching, saving, sampling."""
    phase: str                     # "loading model", "caching latents", "sampling", ...
    total: Optional[int] = None    # number of items if known


@dataclass(frozen=True)
class PhaseProgress:
    phase: str
    done: int
    total: Optional[int] = None


@dataclass(frozen=True)
class PhaseEnded:
    phase: str
    seconds: float = 0.0
    peak_memory_bytes: Optional[int] = None   # GPU only: the phase's own peak (train/memory_peaks.py)


@dataclass(frozen=True)
class StepEnded:
    step: int                      # 1-based global step just finished
    epoch: int                     # 1-based
    loss: float
    lrs: tuple[float, ...]         # one per entry of RunStarted.lr_groups
    seconds: float                 # wall time of this step
    images: int                    # images in this step's batch (all processes)
    peak_memory_bytes: Optional[int] = None   # GPU only


@dataclass(frozen=True)
class EpochEnded:
    epoch: int
    step: int
    average_loss: float


@dataclass(frozen=True)
class ValidationDone:
    """The mean loss on the held-out images, with the same timesteps and noise every time."""
    step: int
    epoch: int
    loss: float
    seconds: float = 0.0


@dataclass(frozen=True)
class CheckpointSaved:
    path: str
    epoch: int
    step: int
    state_path: Optional[str] = None
    epoch_finished: bool = True    # False: saved inside the epoch (Ctrl+C, save now), `epoch` still running


@dataclass(frozen=True)
class SampleSaved:
    path: str
    epoch: int
    prompt: str
    step: Optional[int] = None     # samples made every N steps: the step (None: the epoch's samples)


@dataclass(frozen=True)
class Message:
    """A line worth showing the user (a fallback, a warning)."""
    text: str
    level: str = "info"            # "info" | "warning"


@dataclass(frozen=True)
class RunFinished:
    step: int
    seconds: float
    final_path: str
    average_loss: Optional[float]
    files: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RunStopped:
    """Stopped on request (Ctrl+C, SIGTERM); state saved for --resume."""
    step: int
    reason: str
    saved_path: Optional[str] = None
    state_path: Optional[str] = None


@dataclass(frozen=True)
class RunFailed:
    step: int
    reason: str                    # short: "loss became NaN", "out of GPU memory"
    advice: str = ""               # what usually helps
    last_good_path: Optional[str] = None


Event = Union[
    RunStarted, PhaseStarted, PhaseProgress, PhaseEnded, StepEnded, EpochEnded,
    ValidationDone, CheckpointSaved, SampleSaved, Message, RunFinished, RunStopped, RunFailed,
]
Sink = Callable[[Event], None]
