"""Host-to-GPU copies that do not make the host wait: from pinned memory, ``non_blocking``.

A copy from ordinary (pageable) host memory to the GPU makes the host wait
until the data is staged; from pinned memory with ``non_blocking=True`` it is
queued behind the GPU's work and the host goes on with the next step. Used by
the batch loader (train/prefetch.py) and the conditioners' per-step ids (arch/).
"""

from __future__ import annotations

from typing import Optional

import torch

PINNED_DEVICE_TYPES = ("cuda",)   # where copies go from pinned memory, non-blocking (tests add a stand-in)


def to_device(tensor: Optional[torch.Tensor], device, dtype: Optional[torch.dtype] = None):
    """``tensor`` on ``device`` (and in ``dtype``); from host to GPU, pinned and without blocking the host."""
    if tensor is None:
        return None
    device = torch.device(device)
    if device.type in PINNED_DEVICE_TYPES and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, dtype=dtype, non_blocking=True)
    return tensor.to(device, dtype=dtype)
