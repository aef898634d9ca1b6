"""Saving during a run: LoRA files, training states for --resume, and where the run stands."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from easytrain.errors import UserError
from easytrain.train import events as ev
from easytrain.train import state as tr_state
from easytrain.train.setup import SAVE_DTYPES, gather_objects


@dataclass
class Position:
    """Where the run stands; what a saved state needs to continue (epoch and batch are 1-/0-based)."""
    epoch: int = 1
    batch_index: int = 0            # the next batch of this process's share of the epoch
    global_step: int = 0
    epoch_loss_sum: float = 0.0     # so a resumed epoch reports the same average loss
    epoch_loss_count: int = 0

    def resume_point(self, epoch_done: bool) -> dict:
        """Where a run resumed from here starts: the next batch, or the next epoch after an epoch's save."""
        if epoch_done:
            return dict(epoch=self.epoch + 1, batch_index=0, global_step=self.global_step,
                        epoch_loss_sum=0.0, epoch_loss_count=0)
        return dict(epoch=self.epoch, batch_index=self.batch_index, global_step=self.global_step,
                    epoch_loss_sum=self.epoch_loss_sum, epoch_loss_count=self.epoch_loss_count)

    @classmethod
    def from_saved(cls, saved: dict) -> "Position":
        return cls(int(saved["epoch"]), int(saved["batch_index"]), int(saved["global_step"]),
                   float(saved.get("epoch_loss_sum", 0.0)), int(saved.get("epoch_loss_count", 0)))


def resume_state(plan, which: str, current: dict) -> tr_state.SavedState:
    """The state to continue from, after checking it was made with compatible answers."""
    state = tr_state.find_state(plan.saving.output_dir, which)
    problems = tr_state.fingerprint_differences(state.info.get("fingerprint", {}), current)
    if problems:
        raise UserError(f"--resume: {state.folder} was saved with other settings; resuming needs the same "
                        "answers (change them back, or start a new run without --resume)", problems=problems)
    if state.global_step >= math.ceil(current["total_steps"] / max(1, current["processes"])):
        raise UserError(f"--resume: {state.folder} is at step {state.global_step}, the end of this run; "
                        "nothing left to train")
    return state


def existing_lora(state: Optional[tr_state.SavedState]) -> Optional[Path]:
    lora = state.info.get("lora_file") if state is not None else None
    return Path(lora) if lora and Path(lora).is_file() else None


class Checkpointer:
    """Writes the network (and, when asked, its training state) and restores a state for --resume.

    Every process calls ``save`` (gathering the RNG states is a collective); only the main one writes.
    """

    def __init__(self, *, plan, accelerator, network, optimizer, lr_scheduler, generators: dict, metadata,
                 fingerprint: dict, run_id: str, emit, files: list, ema=None) -> None:
        self.plan = plan
        self.accelerator = accelerator
        self.network = network
        self.trainable = network.trainable_parameters()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.generators = generators        # name -> torch.Generator of the loop ("noise_rng", "latent_rng")
        self.metadata = metadata
        self.fingerprint = fingerprint
        self.run_id = run_id
        self.emit = emit
        self.files = files
        self.save_dtype = SAVE_DTYPES[plan.precision.save_precision]
        self.ema = ema                      # train.ema.LoraEMA, or None

    def capture(self) -> dict:
        """This process's part of a state (collective: every process calls it)."""
        mine = {"rng": tr_state.global_rng_state(),
                **{name: generator.get_state() for name, generator in self.generators.items()}}
        accelerator = self.accelerator
        per_process = [mine] if accelerator.num_processes == 1 else gather_objects(mine)
        if not accelerator.is_main_process:
            return {}
        return {
            "adapters": [p.detach().to("cpu", torch.float32).clone() for p in self.trainable],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.lr_scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "processes": per_process,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def restore(self, saved: tr_state.SavedState) -> None:
        state = tr_state.load_training(saved)
        adapters, trainable = state["adapters"], self.trainable
        if len(adapters) != len(trainable) or any(a.shape != p.shape for a, p in zip(adapters, trainable)):
            raise UserError(f"{saved.folder}: the saved adapters do not match this network "
                            "(network type, dim or targets changed)")
        with torch.no_grad():
            for param, value in zip(trainable, adapters):
                param.copy_(value.to(param.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise UserError(f"{saved.folder}: this state was saved without EMA; resume with ema: no")
            self.ema.load_state_dict(state["ema"])
        mine = state["processes"][self.accelerator.process_index]
        tr_state.set_global_rng_state(mine["rng"])
        for name, generator in self.generators.items():
            generator.set_state(mine[name].cpu())

    def save(self, path: Path, position: Position, *, with_state: bool, epoch_done: bool = False,
             validation_loss: Optional[float] = None) -> tuple[Optional[Path], Optional[Path]]:
        """Write the network (and its state) now, main process only; every process takes part.

        ``validation_loss``, when measured at this step, goes into the file's metadata.
        """
        state = self.capture() if with_state else None
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None, None
        from easytrain.network.export import save_lora

        plan = self.plan
        metadata = self.metadata.for_save(steps=position.global_step, epoch=position.epoch,
                                          validation_loss=validation_loss)
        save_lora(self.network, path, dtype=self.save_dtype, metadata=metadata)
        self.files.append(Path(path))
        if self.ema is not None:
            from easytrain.train.ema import save_ema_lora

            self.files.append(save_ema_lora(self.network, self.ema, path, dtype=self.save_dtype, metadata=metadata))
        state_path = None
        if state is not None:
            state_path = tr_state.write_state(
                tr_state.state_folder_for(path), position=position.resume_point(epoch_done),
                fingerprint=self.fingerprint, training=state, run_name=plan.saving.output_name, run_id=self.run_id,
                lora_file=str(path))
            tr_state.prune_states(plan.saving.output_dir, plan.saving.output_name, self.run_id, plan.saving.keep_states)
        self.emit(ev.CheckpointSaved(str(path), position.epoch, position.global_step,
                                     str(state_path) if state_path else None, epoch_finished=epoch_done))
        return Path(path), state_path
