"""The training loop: one plan in, LoRA files and events out.

It reads top to bottom: set up (accelerator, base model and its family's
objective, network), data (dataset, validation set, cached latents), prepare
(optimizer, schedule, accelerate, cached text-encoder outputs, the step), the
epochs, the final save. The phases live in train/wiring.py, the epochs in
train/epochs.py. The only way in from outside is the control object, polled
between steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.train import events as ev
from easytrain.train import setup
from easytrain.train.checkpoints import Position
from easytrain.train.control import TrainControl
from easytrain.train.epochs import Epochs
from easytrain.train.memory_peaks import run_estimate
from easytrain.train.saving import final_file
from easytrain.train.wiring import Run, prepare_data, prepare_training, set_up

log = logging.getLogger(__name__)

NAN_ADVICE = ("use bf16 instead of fp16 mixed precision (mixed_precision: bf16), lower the learning rate, "
              "and keep the VAE in fp32 (cache_latents: memory or disk encodes with an fp32 VAE)")
OOM_ADVICE = ("lower the batch size or the resolution, turn gradient checkpointing on, cache latents "
              "(cache_latents: memory or disk), or use an 8-bit optimizer (AdamW8bit)")


@dataclass(frozen=True)
class RunResult:
    final_path: Optional[Path]          # name.safetensors; the last saved file for a stopped run
    files: tuple[Path, ...]             # every file written into the output folder
    steps: int
    seconds: float
    average_loss: Optional[float]       # over the last epoch trained
    outcome: ev.Event                   # the RunFinished or RunStopped event that ended the run


class TrainingFailed(UserError):
    """The run stopped itself (NaN loss, out of memory); RunFailed was emitted."""


def run_training(plan, sink: ev.Sink, control: Optional[TrainControl] = None, *,
                 resume: Optional[str] = None) -> RunResult:
    """Train the network described by ``plan``; write its files into plan.saving.output_dir.

    ``resume`` is "latest" (the newest state in the output folder) or a state
    folder; the run then continues from that state's step.
    """
    control = control or TrainControl()
    emit = _guarded(sink)
    started = time.monotonic()
    run = set_up(plan, emit, resume)
    prepare_data(run)
    prepare_training(run)
    position = _start(run)
    epochs = Epochs(run, control, position,
                    lambda reason: _fail(emit, position, reason, NAN_ADVICE, epochs.last_saved))
    try:
        stopped = epochs.train()
        if stopped is None:
            final, _ = run.checkpoints.save(
                final_file(plan.saving.output_dir, plan.saving.output_name), position, with_state=False, epoch_done=True,
                validation_loss=run.validate(position.global_step, position.epoch))
    except setup.OUT_OF_MEMORY:
        _fail(emit, position, "out of GPU memory", OOM_ADVICE, epochs.last_saved)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        emit(ev.RunFailed(position.global_step, f"{type(exc).__name__}: {exc}"[:300],
                          last_good_path=str(epochs.last_saved) if epochs.last_saved else None))
        raise
    if stopped is not None:
        return _end(run, stopped, Path(stopped.saved_path) if stopped.saved_path else None, position, started,
                    epochs.epoch_average)
    run.accelerator.wait_for_everyone()
    final_path = final or final_file(plan.saving.output_dir, plan.saving.output_name)
    for line in run.peaks.report(run_estimate(plan, run.base.arch, run.unet)):
        emit(ev.Message(line))
    outcome = ev.RunFinished(position.global_step, time.monotonic() - started, str(final_path),
                             epochs.epoch_average, tuple(str(f) for f in run.files))
    return _end(run, outcome, final_path, position, started, epochs.epoch_average)


def _start(run: Run) -> Position:
    """Where the epochs begin (a resumed state's position, restored), announced as RunStarted."""
    plan, position = run.plan, Position()
    if run.resumed is not None:
        run.checkpoints.restore(run.resumed)
        position = Position.from_saved(run.resumed.position)
        run.emit(ev.Message(f"resuming from {run.resumed.folder} at step {position.global_step} "
                            f"(epoch {position.epoch}, batch {position.batch_index + 1})"))
    run.emit(ev.RunStarted(
        name=plan.saving.output_name, total_steps=run.total_steps, epochs=plan.epochs, steps_per_epoch=run.steps_per_epoch,
        batch_size=plan.data.batch_size, num_images=plan.images_per_epoch, device=setup.device_text(run.device),
        output_dir=str(plan.saving.output_dir), start_step=position.global_step,
        lr_groups=tuple(g["name"] for g in run.optimizer.param_groups), validation_images=plan.validation.images,
    ))
    return position


def _end(run: Run, outcome: ev.Event, path: Optional[Path], position: Position, started: float,
         average: Optional[float]) -> RunResult:
    run.emit(outcome)
    run.accelerator.end_training()
    seconds = outcome.seconds if isinstance(outcome, ev.RunFinished) else time.monotonic() - started
    return RunResult(path, tuple(run.files), position.global_step, seconds, average, outcome)


def _guarded(sink: ev.Sink):
    """A sink that cannot kill training: its exceptions are logged."""
    def emit(event: ev.Event) -> None:
        try:
            sink(event)
        except Exception:  # a view's bug must not cost a training run
            log.exception("progress sink failed on %s", type(event).__name__)
    return emit


def _fail(emit, position: Position, reason: str, advice: str, last_saved: Optional[Path]):
    emit(ev.RunFailed(position.global_step, reason, advice,
                      last_good_path=str(last_saved) if last_saved else None))
    kept = f"; the last good file is {last_saved}" if last_saved else ""
    raise TrainingFailed(f"training stopped at step {position.global_step}: {reason}{kept}. "
                         f"What usually helps: {advice}")
