"""Gradient accumulation, counted as kohya counts it.

An optimizer step takes ``n`` batches (the last window of an epoch may be
shorter, and still makes a step): an epoch of B batches is ceil(B / n)
optimizer steps, and every step count (total, warmup, saves, samples, the live
view) counts optimizer steps. Each batch's loss is divided by ``n`` before its
backward pass, as accelerate does, so a full window adds up to the mean loss
of its n batches. Stops and saves happen only between windows, so a saved
state never holds half a window and resuming is exact.
"""

from __future__ import annotations

import math


def optimizer_steps(batches: int, n: int) -> int:
    """Optimizer steps for ``batches`` batches in windows of ``n``."""
    return math.ceil(batches / max(1, n))


def window_ends(index: int, batches: int, n: int) -> bool:
    """Whether batch ``index`` (0-based, within an epoch of ``batches``) closes a window."""
    return (index + 1) % max(1, n) == 0 or index + 1 == batches


def effective_batch(batch_size: int, n: int, processes: int = 1) -> int:
    """Images per optimizer step (kohya's ss_total_batch_size)."""
    return batch_size * max(1, n) * max(1, processes)
