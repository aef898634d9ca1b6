"""Plain lines for a stream that is not a terminal (nohup, CI, a log file).

One line every `every` steps (and always the first and the last step), one
line per other event, no escape codes, each line flushed at once so a `tail -f`
sees it. Phase progress is thinned to every tenth of the phase, so caching
thousands of latents does not flood the log.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from easytrain.progress.lines import ESTIMATE_AFTER_STEPS, estimate_line, event_line, step_line
from easytrain.progress.state import RunState
from easytrain.textsafe import safe_line
from easytrain.train import events as ev

# Control characters (ESC above all) from paths or messages never reach the log.
_CONTROL = {c: "?" for c in range(32) if c != 9} | {127: "?"}


class PlainView:
    def __init__(self, stream: Optional[TextIO] = None, *, every: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.stream = stream if stream is not None else sys.stdout
        self.every = every
        self.state = RunState(clock)
        self._last_printed_step: Optional[int] = None
        self._phase_tenths: dict[str, int] = {}

    def __enter__(self) -> "PlainView":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stream.flush()

    def __call__(self, event: ev.Event) -> None:
        state = self.state
        state.apply(event)
        if type(event) is ev.StepEnded:
            step = event.step
            if state.steps_seen == ESTIMATE_AFTER_STEPS:  # before this step's line: a save at this step
                estimate = estimate_line(state)         # must follow the line of the step it was made at
                if estimate:
                    self._write(estimate)
            if state.steps_seen == 1 or step % self.every == 0 or step == state.total_steps:
                self._print_step()
            return
        if isinstance(event, (ev.RunFinished, ev.RunStopped, ev.RunFailed)):
            if state.steps_seen and self._last_printed_step != state.step:
                self._print_step()
        elif isinstance(event, ev.CheckpointSaved) and not event.epoch_finished:
            if self._last_printed_step != state.step:
                self._print_step()          # the step it was saved at comes first
        elif isinstance(event, ev.PhaseStarted):
            self._phase_tenths[event.phase] = 0
        elif isinstance(event, ev.PhaseProgress) and not self._phase_line_due(event):
            return
        line = event_line(event, state)
        if line is not None:
            self._write(line)

    def _phase_line_due(self, event: ev.PhaseProgress) -> bool:
        if not event.total:
            return event.done % 100 == 0
        tenth = min(10, event.done * 10 // event.total)
        if tenth > self._phase_tenths.get(event.phase, 0) or event.done == event.total:
            self._phase_tenths[event.phase] = tenth
            return True
        return False

    def _print_step(self) -> None:
        self._last_printed_step = self.state.step
        self._write(step_line(self.state))

    def _write(self, line: str) -> None:
        self.stream.write(safe_line(line.translate(_CONTROL)) + "\n")
        self.stream.flush()
