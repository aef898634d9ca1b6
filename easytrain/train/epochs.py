"""The epochs of a wired run: steps, the loss shown, saves and samples on their cadence, stops at step ends.

A stop (Ctrl+C, SIGTERM, another process's) and "save now" are read from the control object at the
end of an optimizer step (with several processes, at the loss sync cadence, where they agree). The
last step's file, samples and validation loss come from the loop's final save, not from here.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import torch

from easytrain.train import events as ev
from easytrain.train import setup
from easytrain.train.accumulation import window_ends
from easytrain.train.checkpoints import Position, existing_lora
from easytrain.train.optimizers import effective_lrs
from easytrain.train.prefetch import BatchLoader
from easytrain.train.saving import epoch_file, step_file
from easytrain.train.wiring import Run


class LossWindow:
    """The losses since the last host sync; ``flush`` turns them into the shown (process-averaged) loss."""

    def __init__(self, accelerator, on_not_finite) -> None:
        self.accelerator = accelerator
        self.on_not_finite = on_not_finite
        self.sum = torch.zeros((), device=accelerator.device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss
        self.count += 1

    def flush(self) -> float:
        total = self.sum
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(self.sum.clone(), "mean")
        value = total.item() / self.count
        self.sum.zero_()
        self.count = 0
        if not math.isfinite(value):
            self.on_not_finite("loss became NaN" if value != value else "loss became infinite")
        return value


class Epochs:
    """Trains ``run`` from ``position`` to its last step, or until a stop; see ``train``."""

    def __init__(self, run: Run, control, position: Position, on_not_finite) -> None:
        self.run = run
        self.control = control
        self.position = position
        self.last_saved: Optional[Path] = existing_lora(run.resumed)
        self.epoch_average: Optional[float] = None
        self.window = LossWindow(run.accelerator, on_not_finite)
        self.shown_loss = float("nan")
        run.peaks.steps_started()

    def train(self) -> Optional[ev.RunStopped]:
        """Every epoch from the position on; the RunStopped event when a stop ended them early."""
        run, position = self.run, self.position
        plan = run.plan
        if plan.sampling.before_training and run.resumed is None:
            run.make_samples(0)
        for epoch in range(position.epoch, plan.epochs + 1):
            position.epoch = epoch
            stopped = self._epoch(epoch)
            if stopped is not None:
                return stopped
            done = position.global_step >= run.total_steps or epoch == plan.epochs
            self._epoch_end(epoch, done)
            if done:
                break
            position.batch_index = 0
        return None

    def _epoch(self, epoch: int) -> Optional[ev.RunStopped]:
        run, position = self.run, self.position
        dataset, accumulation = run.dataset, run.plan.optimizer.gradient_accumulation_steps
        batches = setup.process_share(dataset.epoch_batches(epoch, run.plan.data.batch_size), run.rank, run.world)
        loader = BatchLoader(dataset, batches, epoch, start=position.batch_index, device=run.device)
        self.epoch_sum = torch.full((), position.epoch_loss_sum, device=run.device)
        self.epoch_count = position.epoch_loss_count
        step_start, step_loss, step_images = time.monotonic(), None, 0
        for index in range(position.batch_index, len(batches)):
            if position.global_step >= run.total_steps:
                break
            batch = loader.get(index)      # on the device: pinned, non-blocking, loaded ahead if not cached
            loss = self._backward(batch)
            step_loss = loss if step_loss is None else step_loss + loss
            step_images += len(batch.captions)
            if not window_ends(index, len(batches), accumulation):
                continue                     # stops and saves wait for the end of the window
            run.training_step.apply()
            self._step_ended(step_loss / (index + 1 - position.batch_index), index, epoch,   # the window's mean
                             time.monotonic() - step_start, step_images)
            stopped = self._step_boundary()
            if stopped is not None:
                return stopped
            step_start, step_loss, step_images = time.monotonic(), None, 0
        position.batch_index = len(batches)
        return None

    def _backward(self, batch) -> torch.Tensor:
        run = self.run
        if run.compile_pending:
            loss, run.unet_forward = setup.compiled_step(
                run.training_step.backward, batch, run.unet_forward, run.unet, run.emit, run.optimizer,
                (run.noise_rng, run.latent_rng))
            run.compile_pending = run.unet_forward is not run.unet   # a later bucket shape compiles again
            return loss
        return run.training_step.backward(batch, run.unet_forward)

    def _step_ended(self, loss: torch.Tensor, index: int, epoch: int, seconds: float, images: int) -> None:
        """The step's event, then the validation loss, the step-cadence file and samples (not the last step's)."""
        run, position, window = self.run, self.position, self.window
        position.global_step += 1
        position.batch_index = index + 1
        self.epoch_sum += loss
        self.epoch_count += 1
        window.add(loss)
        if window.count >= run.sync_every or position.global_step == run.total_steps:
            self.shown_loss = window.flush()
        run.emit(ev.StepEnded(
            step=position.global_step, epoch=epoch, loss=self.shown_loss, lrs=effective_lrs(run.optimizer),
            seconds=seconds, images=images * run.world, peak_memory_bytes=run.peaks.step_peak(),
        ))
        step, saving, sampling = position.global_step, run.plan.saving, run.plan.sampling
        if step >= run.total_steps:          # the last step's file, samples and loss come at the end
            return
        if run.validate.due(step):
            run.validate(step, epoch)
        if saving.every_n_steps and step % saving.every_n_steps == 0:
            self._save(step_file(run.plan.saving.output_dir, run.plan.saving.output_name, step), with_state=saving.save_state,
                       validation=lambda: run.validate(step, epoch))
        if sampling.every_n_steps and step % sampling.every_n_steps == 0:
            run.make_samples(epoch, step=step)

    def _step_boundary(self) -> Optional[ev.RunStopped]:
        """A requested save or stop, agreed between processes (a collective, so a host sync: only at the
        loss sync cadence)."""
        run, position, control = self.run, self.position, self.control
        step = position.global_step
        stop = save_now = False
        if run.world == 1 or step % run.sync_every == 0 or step == run.total_steps:
            stop, save_now = setup.agree(control.stop_requested, control.take_save_request(), run.world, run.device)
        if not (save_now or stop):
            return None
        saved, state_path = self._save(step_file(run.plan.saving.output_dir, run.plan.saving.output_name, step),
                                       with_state=run.plan.saving.save_state or stop,
                                       validation=lambda: run.validate.known(step))
        if not stop:
            return None
        reason = control.stop_reason or ("stop requested" if run.world == 1 else "stop requested by another process")
        return ev.RunStopped(step, reason, saved_path=str(saved) if saved else None,
                             state_path=str(state_path) if state_path else None)

    def _epoch_end(self, epoch: int, done: bool) -> None:
        run, position = self.run, self.position
        if self.window.count:
            self.shown_loss = self.window.flush()
        if self.epoch_count:
            self.epoch_average = self.epoch_sum.item() / self.epoch_count
            run.emit(ev.EpochEnded(epoch, position.global_step, self.epoch_average))
        position.epoch_loss_sum, position.epoch_loss_count = 0.0, 0
        every = run.plan.saving.every_n_epochs
        if every and epoch % every == 0 and not done:
            self._save(epoch_file(run.plan.saving.output_dir, run.plan.saving.output_name, epoch),
                       with_state=run.plan.saving.save_state, epoch_done=True,
                       validation=lambda: run.validate(position.global_step, epoch))
        if run.plan.sampling.every_n_epochs and epoch % run.plan.sampling.every_n_epochs == 0:
            run.make_samples(epoch)

    def _save(self, path: Path, *, with_state: bool, validation, epoch_done: bool = False):
        """A file (and state) of the weights as they are now, with the validation loss ``validation()``
        measures; never of weights a NaN step has touched (the loss is flushed, and checked, first)."""
        position = self.position
        if not epoch_done:
            if self.window.count:
                self.shown_loss = self.window.flush()
            position.epoch_loss_sum, position.epoch_loss_count = float(self.epoch_sum), self.epoch_count
        saved, state_path = self.run.checkpoints.save(path, position, with_state=with_state, epoch_done=epoch_done,
                                                      validation_loss=validation())
        self.last_saved = saved or self.last_saved
        return saved, state_path
