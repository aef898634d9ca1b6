"""Threads that should take only the cores the rest of the process leaves idle."""

from __future__ import annotations

import os
import threading


def lowest_priority() -> None:
    """The calling thread runs only on cores the rest of the run leaves idle (Linux gives each thread its
    own nice value, and the threads it starts inherit it). A thread the run waits for then has the
    machine to itself; until then it takes nothing from the work in front of it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass
