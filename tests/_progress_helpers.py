"""Scripted event sequences for the progress tests."""

from __future__ import annotations

import io

from easytrain.train import events as ev


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_started(total_steps=200, epochs=4, start_step=0, output_dir="/out/run") -> ev.RunStarted:
    return ev.RunStarted(name="mylora", total_steps=total_steps, epochs=epochs,
                         steps_per_epoch=total_steps // epochs, batch_size=2, num_images=100,
                         device="cuda:0 (NVIDIA H100)", output_dir=output_dir, start_step=start_step,
                         lr_groups=("unet", "text_encoder"))


def step(i: int, steps_per_epoch: int = 50, loss: float | None = None, seconds: float = 0.5,
         peak: int | None = None) -> ev.StepEnded:
    return ev.StepEnded(step=i, epoch=(i - 1) // steps_per_epoch + 1,
                        loss=loss if loss is not None else 0.2 - i * 0.0005,
                        lrs=(5e-4, 1e-4), seconds=seconds, images=2, peak_memory_bytes=peak)
