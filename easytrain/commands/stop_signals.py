"""Ctrl+C, SIGTERM and SIGHUP ask the trainer to stop safely; a second Ctrl+C stops at once.

The loop polls the control object between steps, finishes the step, saves a
LoRA file and its state, and returns; the command then prints how to resume.
SIGUSR1 (``kill -USR1 PID``, e.g. from another SSH session) saves a file now
and training goes on.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from easytrain.train.control import TrainControl

REASONS = {
    signal.SIGINT: "Ctrl+C",
    signal.SIGTERM: "SIGTERM (the machine or job is stopping)",
}
if hasattr(signal, "SIGHUP"):
    REASONS[signal.SIGHUP] = "SIGHUP (the terminal or SSH connection closed)"

EXIT_AT_ONCE = 130
SAVE_NOW = getattr(signal, "SIGUSR1", None)  # not on Windows


@contextmanager
def stop_on_signals(control: TrainControl, say: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Route stop signals to ``control`` while the block runs (main thread only).

    ``say`` shows what happens next (a live view's own way of printing a line); by default stderr.
    """
    previous = {}
    say = say or _say

    def handle(signum, _frame):
        if control.stop_requested and signum == signal.SIGINT:
            say("easytrain: second Ctrl+C: stopping now without saving")
            os._exit(EXIT_AT_ONCE)
        if not control.stop_requested:
            # Only a Ctrl+C is typed at a terminal that is still there: after SIGHUP or SIGTERM no one can
            # press it again, and "kill -INT" is not what to tell a person.
            again = " (Ctrl+C again to quit at once)" if signum == signal.SIGINT else ""
            say(f"easytrain: {REASONS.get(signum, 'signal')}: finishing this step, then saving{again}")
        control.request_stop(REASONS.get(signum, f"signal {signum}"))

    def save_now(_signum, _frame):
        say("easytrain: SIGUSR1: saving a file after this step; training goes on")
        control.request_save()

    handlers = {signum: handle for signum in REASONS}
    if SAVE_NOW is not None:
        handlers[SAVE_NOW] = save_now
    for signum, handler in handlers.items():
        try:
            previous[signum] = signal.signal(signum, handler)
        except (ValueError, OSError):  # not the main thread, or not supported here
            pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _say(text: str) -> None:
    try:
        print(f"\n{text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # the terminal may be gone (SIGHUP)
        pass
