"""Sample images during training, from the live modules, through the family's pipeline."""

from __future__ import annotations

import logging
import time
from typing import Optional


from easytrain.errors import UserError
from easytrain.train import events as ev
from easytrain.train.setup import OUT_OF_MEMORY, empty_device_cache

log = logging.getLogger(__name__)


def sample_prompts(plan) -> list:
    """The prompts to sample with, [] when sampling is off. A bad prompts file is a UserError now."""
    if plan.sampling.prompts_file is None:
        return []
    from easytrain.sampling.prompts import parse_prompts_file

    return parse_prompts_file(plan.sampling.prompts_file, default_size=tuple(plan.resolution))


class SampleMaker:
    """Renders the prompts at a given epoch (main process only; the others wait), as events."""

    def __init__(self, *, plan, prompts, family, base, accelerator, unet, text_encoders, device, dtype,
                 vae_home, emit, text_home=None, peaks=None) -> None:
        """``vae_home`` / ``text_home``: where the VAE and text encoders wait between samples (the CPU
        when latents / text outputs are cached); they come to ``device`` for each round of samples."""
        self.plan = plan
        self.prompts = prompts
        self.family = family
        self.base = base
        self.accelerator = accelerator
        self.unet = unet
        self.text_encoders = text_encoders
        self.device = device
        self.dtype = dtype
        self.vae_home = vae_home
        self.text_home = text_home or device
        self.emit = emit
        self.peaks = peaks      # train/memory_peaks.PeakMemory: sampling's peak apart from the steps'

    def __call__(self, epoch: int, step: Optional[int] = None) -> None:
        """Samples of this epoch, or (``step`` given) of this step inside it."""
        if self.accelerator.is_main_process:
            self._render(epoch, step)
        self.accelerator.wait_for_everyone()

    def _render(self, epoch: int, step: Optional[int]) -> None:
        """One image per prompt; a failure is reported and training goes on."""
        emit, plan, base, device, vae = self.emit, self.plan, self.base, self.device, self.base.vae
        emit(ev.PhaseStarted("sampling", len(self.prompts)))
        if self.peaks is not None:
            self.peaks.phase_started()
        started = time.monotonic()
        unwrap = self.accelerator.unwrap_model
        for part in (vae, *self.text_encoders):
            part.to(device)
        try:
            paths = self.family.render_samples(
                base=base, unet=unwrap(self.unet), text_encoders=[unwrap(t) for t in self.text_encoders],
                prompts=self.prompts, output_dir=plan.saving.output_dir, name=plan.saving.output_name, epoch=epoch, step=step,
                device=device, dtype=self.dtype, clip_skip=plan.model.clip_skip,
                max_token_length=plan.model.max_token_length,
                on_progress=lambda done, total: emit(ev.PhaseProgress("sampling", done, total)),
            )
        except OUT_OF_MEMORY:
            empty_device_cache(device)
            emit(ev.Message("sample images skipped: out of GPU memory while sampling (smaller sample sizes "
                            "or fewer steps help); training goes on", "warning"))
            paths = []
        except UserError:
            raise
        except Exception as exc:  # a sample is a preview: never worth the training run
            log.exception("sampling failed")
            emit(ev.Message(f"sample images failed ({type(exc).__name__}: {str(exc)[:200]}); training goes on",
                            "warning"))
            paths = []
        finally:
            vae.to(self.vae_home)
            for text_encoder in self.text_encoders:
                text_encoder.to(self.text_home)
            empty_device_cache(device)
        for path, prompt in zip(paths, self.prompts):
            emit(ev.SampleSaved(str(path), epoch, prompt.prompt, step=step))
        peak = self.peaks.phase_ended("sampling") if self.peaks is not None else None
        emit(ev.PhaseEnded("sampling", time.monotonic() - started, peak))


def no_samples(epoch: int, step: Optional[int] = None) -> None:
    """The sample maker of a run without prompts."""


