"""Picking the view for a stream: live Rich panel on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from typing import Optional, TextIO, Union

from rich.console import Console

from easytrain.progress.plain_view import PlainView
from easytrain.progress.rich_view import RichView

ProgressView = Union[RichView, PlainView]


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):     # no isatty, or a closed stream
        return False


def make_view(stream: Optional[TextIO] = None, *, plain: Optional[bool] = None,
              every: int = 10) -> ProgressView:
    """A context manager that is also a Sink.

    Rich's live display without a terminal would print only its last frame, so
    anything that is not a TTY (nohup, CI, a pipe, a log file) gets plain lines
    unless `plain=False` forces the live view. `every` is the plain view's step
    interval.
    """
    stream = stream if stream is not None else sys.stdout
    if plain is None:
        plain = not is_terminal(stream)
    if plain:
        return PlainView(stream, every=every)
    return RichView(Console(file=stream))
