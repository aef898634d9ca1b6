"""Live progress for a training run: views, metrics file, loss plot, summary.

Everything here consumes the events of `easytrain.train.events`; nothing
imports torch, diffusers or peft.
"""

from easytrain.progress.metrics import MetricsWriter
from easytrain.progress.plain_view import PlainView
from easytrain.progress.rich_view import RichView
from easytrain.progress.sinks import fan_out
from easytrain.progress.summary import summary_lines
from easytrain.progress.view import ProgressView, make_view

__all__ = ["MetricsWriter", "PlainView", "ProgressView", "RichView", "fan_out", "make_view", "summary_lines"]
