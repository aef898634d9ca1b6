"""A progress display for the preparation commands: a Rich bar in a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TextIO

PLAIN_EVERY_SECONDS = 5.0


@contextmanager
def progress(label: str, stream: Optional[TextIO] = None, plain: Optional[bool] = None,
             ) -> Iterator[Callable[[int, int], None]]:
    """Yield an on_progress(done, total) callback that draws `label`'s progress."""
    stream = stream or sys.stderr
    if plain is None:
        plain = not stream.isatty()
    if plain:
        yield _plain(label, stream)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(file=stream), transient=False) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _plain(label: str, stream: TextIO) -> Callable[[int, int], None]:
    last = [0.0, -1]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= PLAIN_EVERY_SECONDS or last[1] < 0:
            if done != last[1]:
                print(f"{label}: {done}/{total}", file=stream, flush=True)
            last[0], last[1] = now, done

    return update
