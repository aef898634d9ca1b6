"""Peak GPU memory by phase: the training steps' own, and each caching (and sampling) phase's own.

torch.cuda.max_memory_allocated is one counter since the last reset. Left alone
it reports, at every step, the largest of loading, caching latents (the VAE
encoding big pictures in fp32), caching text-encoder outputs (both SDXL
encoders on the GPU), sampling and the steps: not what a step needs, and not
what `check`'s estimate (easytrain/memory_estimate.py) describes. So the
counter is reset when each phase starts; a phase's peak is read when it ends;
the steps' peak is the largest read over the stretches of steps between the
other phases. At the end of a run the steps' peak is set beside the estimate.

``cuda`` is the torch.cuda module, or a stand-in with the same two functions
(the tests pass a recorder); without a GPU every figure is None.
"""

from __future__ import annotations

from typing import Optional

GIB = 1024 ** 3


class PeakMemory:
    def __init__(self, device, cuda=None) -> None:
        if cuda is None and getattr(device, "type", None) == "cuda":
            import torch

            cuda = torch.cuda
        self.device = device
        self.cuda = cuda if getattr(device, "type", None) == "cuda" else None
        self.phases: dict[str, int] = {}        # phase -> its peak (the largest over its rounds)
        self.steps: Optional[int] = None        # the training steps' peak so far
        self._stepping = False

    def _read(self) -> Optional[int]:
        return int(self.cuda.max_memory_allocated(self.device)) if self.cuda is not None else None

    def _reset(self) -> None:
        if self.cuda is not None:
            self.cuda.reset_peak_memory_stats(self.device)

    def phase_started(self) -> None:
        """A phase (caching, sampling) begins: the steps' peak so far is kept, the counter starts afresh."""
        if self._stepping:
            self.step_peak()
        self._reset()

    def phase_ended(self, phase: str) -> Optional[int]:
        """The phase's own peak (None without a GPU); the counter starts afresh for what follows."""
        peak = self._read()
        if peak is not None:
            self.phases[phase] = max(peak, self.phases.get(phase, 0))
        self._reset()
        return peak

    def steps_started(self) -> None:
        """Training steps begin: from here on, what the counter reads between phases is the steps'."""
        self._reset()
        self._stepping = True

    def step_peak(self) -> Optional[int]:
        """The training steps' peak so far (what StepEnded reports)."""
        peak = self._read()
        if peak is None:
            return None
        self.steps = max(peak, self.steps or 0)
        return self.steps

    def report(self, estimate=None) -> list[str]:
        """The closing lines: the steps' peak beside the estimate, then each phase's own; [] without a GPU."""
        if self.cuda is None:
            return []
        lines = []
        steps = self.step_peak() if self._stepping else self.steps
        if steps is not None:
            line = f"peak GPU memory of the training steps: {steps / GIB:.2f} GiB allocated"
            if estimate is not None:
                expected = estimate.tensors
                line += (f"; check estimated {expected / GIB:.2f} GiB for the same tensors "
                         f"({steps / expected:.0%} of it; {estimate.total_gib:.1f} GiB with its allowance for the "
                         "CUDA context and the allocator)")
            lines.append(line)
        for phase, peak in self.phases.items():
            lines.append(f"peak GPU memory while {phase}: {peak / GIB:.2f} GiB allocated (apart from the steps')")
        return lines


def run_estimate(plan, arch: str, unet):
    """check's estimate for this run (memory_estimate.py), or None for a model it has no figures for.

    The estimate is for the full-size architecture: a smaller UNet (the tiny test models) gets none.
    """
    from easytrain.memory_estimate import MEMORY, estimate, setup_for_plan

    if arch not in MEMORY or sum(p.numel() for p in unet.parameters()) < MEMORY[arch].parameters["unet"] // 2:
        return None
    return estimate(setup_for_plan(plan, arch))
