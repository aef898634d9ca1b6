"""Weights converted on a thread while the run goes on.

Training in another precision than the file's (fp32 on the CPU from an fp16 file, bf16 from fp16) copies
every weight once: 10 GiB written for SDXL's UNet in fp32, most of it page faults, about 8 s on 2 cores.
Nothing needs the UNet's or the text encoders' values until they go to the training device, while the
run still builds the network, scans the dataset and caches the latents with the VAE. Inside
``copying_on_a_thread()``, ``model.load.fill(..., may_finish_later=True)`` gives those models their
tensors at once (allocated, not yet written) and queues the copies here; a thread does them (torch lets
other threads run while it copies) at the lowest priority, so that on a machine with no idle core it
takes nothing from the latent caching in front of it, and ``wait()`` returns once every value is in place.

The caller must call ``wait()`` before anything reads those weights: moving them to a device, DoRA's norms
of the base weights, a forward pass. train/wiring.py does it before the denoiser goes to the device.

``keep_stored(module)`` takes a module's weights off the list before they are copied: they stay in the
file's precision, and the module computes in the training precision one layer at a time
(``model/cast_on_use.py``). Frozen text encoders whose outputs are cached run once: converting them would
write 3.3 GB for SDXL's pair in fp32, for a single pass.
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Optional

import torch

from easytrain.background import lowest_priority

_current: ContextVar[Optional["DeferredCopies"]] = ContextVar("deferred_weight_copies", default=None)


class DeferredCopies:
    """Copies done in order on one thread, started by the first."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._sources: dict[int, torch.Tensor] = {}   # target's data_ptr -> its source, until kept or done
        self._kept: set[int] = set()
        self._before_wait: list = []
        self.count = 0

    def before_waiting(self, finish) -> None:
        """``finish()`` runs first in ``wait()``, once: it puts values in tensors handed out by another way (the
        early conversion's, model/early_conversion.py)."""
        if finish not in self._before_wait:
            self._before_wait.append(finish)

    def add(self, target: torch.Tensor, source: torch.Tensor) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="weight-copies", daemon=True)
            self._thread.start()
        if target.numel():
            self._sources[target.data_ptr()] = source
        self._queue.put((target, source))
        self.count += 1

    def keep_stored(self, module: torch.nn.Module) -> torch.dtype | None:
        """Give ``module``'s parameters whose copies are queued their sources instead (the file's values,
        in the file's precision); copies not yet made are skipped, a target already written is dropped.
        Returns the precision the copies were to have (the module should compute in it), or None where
        none of its parameters was queued here."""
        wanted = None
        for param in module.parameters():
            source = self._sources.get(param.data_ptr()) if param.numel() else None
            if source is None or source.shape != param.shape:
                continue
            self._kept.add(param.data_ptr())
            wanted = param.dtype
            param.data = source.contiguous()  # as a converted weight is: matmul kernels follow the layout
        return wanted

    def _work(self) -> None:
        lowest_priority()
        while (item := self._queue.get()) is not None:
            self._copy(item, copy_on_this_core)

    def _copy(self, item, copy) -> None:
        if self._error is None and item[0].data_ptr() not in self._kept:
            try:
                copy(*item)
            except BaseException as exc:  # raised by wait(), in the caller's thread
                self._error = exc

    def wait(self) -> None:
        """Every queued copy done; an error from the thread is raised here. Calling it again is free.

        The caller does what is left itself, beside the thread and with torch's whole thread pool: a thread
        at the lowest priority can be slow on a busy machine, and a process may not raise a thread's
        priority again."""
        while self._before_wait:
            self._before_wait.pop(0)()
        if self._thread is not None:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                self._copy(item, _copy_with_all_cores)
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._sources.clear()
        self._kept.clear()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def copy_on_this_core(target: torch.Tensor, source: torch.Tensor) -> None:
    """``target.copy_(source)`` on the calling thread alone. torch would copy a large tensor with its
    OpenMP team, and a team thread starved by the lowest priority holds the whole copy at the team's
    barrier; numpy's cast runs on this thread only (without the GIL). bfloat16, which numpy lacks, goes
    through torch."""
    if target.dtype in _NUMPY_DTYPES and source.dtype in _NUMPY_DTYPES:
        import numpy as np

        np.copyto(target.numpy(), source.numpy(), casting="unsafe")
    else:
        _copy_with_all_cores(target, source)


def _copy_with_all_cores(target: torch.Tensor, source: torch.Tensor) -> None:
    with torch.no_grad():
        target.copy_(source)


def current() -> Optional[DeferredCopies]:
    """The copies of the enclosing ``copying_on_a_thread()``, or None: copy now."""
    return _current.get()


@contextmanager
def copying_on_a_thread() -> Iterator[DeferredCopies]:
    """Fills inside may leave their copies to a thread; the caller waits with the yielded ``wait()``.
    If the block raises, the thread is finished before the error goes on."""
    copies = DeferredCopies()
    token = _current.set(copies)
    try:
        yield copies
    except BaseException:
        copies._before_wait.clear()  # nothing will read those tensors
        try:
            copies.wait()
        except BaseException:
            pass
        raise
    finally:
        _current.reset(token)
