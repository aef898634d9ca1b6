"""Batches to the GPU without stalling it: pinned, non-blocking copies (host_copy.py), loaded ahead.

Without cached latents a batch is decoded, resized and augmented from the
image files every step (tens of milliseconds a picture): ``BatchLoader`` does
that in a thread, ``AHEAD`` batches ahead of the step, while the GPU trains.

Loading ahead changes nothing that is computed: ``load_batch(spec, epoch)`` is
a function of its arguments (its random choices are seeded by epoch and batch
index), and the thread loads in the loop's order. On the CPU nothing runs
ahead (the cores are busy with the step itself) and nothing is pinned.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
from typing import Optional

import torch

from easytrain import host_copy
from easytrain.host_copy import to_device

AHEAD = 2                         # batches loaded ahead of the step when latents are not cached


def batch_to_device(batch, device):
    """The batch with its tensors (pixels or latents, loss weights, masks) on ``device``."""
    return dataclasses.replace(
        batch, pixel_values=to_device(batch.pixel_values, device), latents=to_device(batch.latents, device),
        loss_weights=to_device(batch.loss_weights, device), masks=to_device(batch.masks, device))


class BatchLoader:
    """An epoch's batches from ``start`` on, in order, on the device: ``loader.get(index)``.

    With ``ahead`` > 0 a thread loads them ahead; ``ahead`` None: AHEAD on a GPU when latents are not cached
    (decoding pictures is the slow part), else 0 (the step loads each batch itself).
    """

    def __init__(self, dataset, batches: list, epoch: int, *, start: int, device, ahead: Optional[int] = None):
        self.dataset, self.batches, self.epoch, self.device = dataset, batches, epoch, torch.device(device)
        if ahead is None:
            cached = getattr(dataset, "_latents", None) is not None
            ahead = AHEAD if self.device.type in host_copy.PINNED_DEVICE_TYPES and not cached else 0
        self.ahead = ahead
        self.next_index = start
        self._stop = threading.Event()
        self._queue: Optional[queue.Queue] = None
        if ahead > 0 and start < len(batches):
            self._queue = queue.Queue(maxsize=ahead)
            # the thread holds no reference to the loader: when the loop lets go of it, __del__ stops the thread
            load = functools.partial(_load_batch, dataset, batches, epoch, self.device)
            threading.Thread(target=_load_ahead, name="easytrain-batches", daemon=True,
                             args=(load, range(start, len(batches)), self._queue, self._stop)).start()

    def _load(self, index: int):
        return _load_batch(self.dataset, self.batches, self.epoch, self.device, index)

    def get(self, index: int):
        if index != self.next_index:
            raise ValueError(f"batch {index} asked for, {self.next_index} expected: batches come in order")
        self.next_index += 1
        if self._queue is None:
            return self._load(index)
        loaded, batch, error = self._queue.get()
        if error is not None:
            raise error
        assert loaded == index
        return batch

    def close(self) -> None:
        """Stop loading ahead (the epoch ended early: a stop, the last step)."""
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()


def _load_batch(dataset, batches, epoch, device, index):
    return batch_to_device(dataset.load_batch(batches[index], epoch), device)


def _load_ahead(load, indices, out: queue.Queue, stop: threading.Event) -> None:
    """The thread: each batch in order into ``out`` (blocking while it is full), until done or stopped."""
    for index in indices:
        try:
            item = (index, load(index), None)
        except BaseException as exc:  # handed to the step, which raises it where it would have been raised
            item = (index, None, exc)
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if stop.is_set() or item[2] is not None:
            return
