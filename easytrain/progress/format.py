"""Short human strings for numbers the views show (shared by Rich and plain lines)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def duration(seconds: Optional[float]) -> str:
    """0:04:05 style; days spelled out past 24 hours; "--:--" when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(round(seconds))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {text}" if days else text


def speed(seconds_per_step: Optional[float]) -> str:
    """it/s when a step takes less than a second, s/it when longer."""
    if not seconds_per_step or not math.isfinite(seconds_per_step) or seconds_per_step <= 0:
        return "-- it/s"
    if seconds_per_step <= 1.0:
        return f"{_number(1.0 / seconds_per_step)} it/s"
    return f"{_number(seconds_per_step)} s/it"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def images_per_second(value: Optional[float]) -> str:
    if not value or not math.isfinite(value):
        return "-- img/s"
    return f"{value:.1f} img/s" if value < 100 else f"{value:.0f} img/s"


def loss(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}"


def learning_rate(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.2e}"


def memory(num_bytes: Optional[int]) -> str:
    if num_bytes is None:
        return "-"
    gib = num_bytes / 2**30
    if gib >= 1:
        return f"{gib:.2f} GiB"
    return f"{num_bytes / 2**20:.0f} MiB"


def percent(done: float, total: Optional[float]) -> str:
    if not total:
        return ""
    return f"{100.0 * done / total:3.0f}%"


def sparkline(values: Sequence[float]) -> str:
    """Unicode block sparkline of finite values, scaled between their min and max."""
    points = [v for v in values if math.isfinite(v)]
    if not points:
        return ""
    low, high = min(points), max(points)
    span = high - low
    top = len(SPARK_BLOCKS) - 1
    if span <= 0:
        return SPARK_BLOCKS[top // 2] * len(points)
    return "".join(SPARK_BLOCKS[round((v - low) / span * top)] for v in points)


def shorten_path(path: str, width: int) -> str:
    """Keep the end of a path (the file name matters most), eliding the start."""
    if len(path) <= width or width < 4:
        return path
    return "…" + path[-(width - 1):]
