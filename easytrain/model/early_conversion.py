"""The base model's weights converted to fp32 by a helper process while the run imports its libraries.

Training in fp32 from an fp16 or bf16 file (every CPU run, and GPU runs without mixed precision) writes
each weight once more in fp32: 3.2 GiB for SD1.5's UNet, 10 GiB for SDXL's, most of it the kernel handing
out fresh pages. The run's first seconds are imports (torch, diffusers, transformers: one core busy, the
others idle), so a process started before them (model/conversion_worker.py: numpy only, lowest priority)
converts on an idle core, into shared memory: the denoiser first, then the VAE and the text encoders
where the run uses them in fp32 (not a VAE given as a file of its own, not frozen encoders whose outputs
are cached: those stay in the file's precision, model/cast_on_use.py), each part in file order. The
loader's first ``claim`` stops the helper after the tensor in hand; the tensors done by then become the
models' weights as they are (views of the shared memory), and the loader converts the others as it would
have (model/deferred_copies.py). A thread cannot do this: the importing thread holds the GIL between every
small step, and the two starve each other (measured: a conversion of 3 s took 12-51 s beside the imports).

Only where it cannot go wrong: a single .safetensors file, Linux (``memfd_create``), a run whose weights
will be fp32 (guessed before torch is imported: no mixed precision, or fp16 asked on a machine with no GPU
device), and a family that names where its denoiser's keys are in a single file
(``SINGLE_FILE_DENOISER_PREFIX`` in its catalog; ``SINGLE_FILE_VAE_PREFIX`` and
``SINGLE_FILE_TEXT_ENCODER_PREFIX`` add those parts). What the loader does not take (another precision after
all, a file it reads elsewhere) is let go of unused. Values are exact (fp16 and bf16 convert to fp32
without rounding), so the model is bit for bit the one the loader alone would have made.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger(__name__)
_ALIGN = 64  # each tensor starts on a cache line, as an allocator's would
_STOP_TIMEOUT_S = 60.0
_WORKER = Path(__file__).with_name("conversion_worker.py")  # a script: numpy and the standard library only
_current: ContextVar[Optional["EarlyConversion"]] = ContextVar("early_conversion", default=None)


@dataclass(frozen=True)
class _Item:
    key: str
    shape: tuple[int, ...]
    dtype: str  # "F16" or "BF16"
    src_offset: int  # bytes from the start of the file's data
    nbytes: int  # in the file
    dst_offset: int  # bytes into the shared memory


def plan_items(header: dict, prefixes: str | tuple[str, ...]) -> list[_Item]:
    """The fp16/bf16 tensors under ``prefixes`` (the first prefix's first), each prefix's in file order, laid
    out in fp32 one after another."""
    prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    entries = []
    for prefix in prefixes:
        entries += sorted(
            ((key, value) for key, value in header.items()
             if key.startswith(prefix) and isinstance(value, dict) and value.get("dtype") in ("F16", "BF16")),
            key=lambda kv: kv[1]["data_offsets"][0])
    items, offset = [], 0
    for key, value in entries:
        start, end = value["data_offsets"]
        items.append(_Item(key, tuple(value["shape"]), value["dtype"], start, end - start, offset))
        offset += -(-2 * (end - start) // _ALIGN) * _ALIGN
    return items


def weights_will_be_fp32(mixed_precision: str) -> bool:
    """What train/setup.py will decide, guessed without importing torch: fp32 without mixed precision, and
    for fp16 on a machine with no GPU device. A wrong guess costs only the helper's idle-core work."""
    if mixed_precision == "no":
        return True
    if mixed_precision != "fp16":
        return False
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1")
    asked_for_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return hidden or asked_for_cpu or not any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


class EarlyConversion:
    """A helper process converting ``items`` of ``path`` into shared memory; see the module's doc."""

    def __init__(self, path: Path, data_start: int, items: list[_Item]):
        self.path = path
        self._data_start = data_start
        self._items = items
        self._index = {item.key: i for i, item in enumerate(items)}
        self._size = max(1, items[-1].dst_offset + 2 * items[-1].nbytes)
        self._fd = os.memfd_create("easytrain-weights", os.MFD_CLOEXEC)
        self._memory = None  # the torch view of the whole shared memory, made when the loader first asks
        self.done = 0  # items converted (in order) when the helper was stopped
        self._asked, self._asked_is_ours = None, False
        self._process: Optional[subprocess.Popen] = None
        try:
            os.ftruncate(self._fd, self._size)
            self._process = subprocess.Popen(
                [sys.executable, "-I", str(_WORKER)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(self._fd,), text=True)
            job = {"path": str(path), "data_start": data_start, "fd": self._fd, "size": self._size,
                   "items": [[it.src_offset, it.nbytes, it.dtype, it.dst_offset] for it in items]}
            self._process.stdin.write(json.dumps(job) + "\n")
            self._process.stdin.flush()
        except BaseException:
            self.close()
            raise

    def claim(self, path: Path, key: str, dtype) -> Optional["object"]:
        """The fp32 tensor for ``key`` of ``path``, converted, in shared memory; or None when this conversion
        does not hold it (another file or key, another precision, or the helper had not reached it). The first
        call stops the helper: what it has not done by then, the loader converts as it would have."""
        import torch

        i = self._index.get(key)
        if i is None or self._fd < 0 or not self._same_file(path):
            return None
        if dtype != torch.float32:  # the run trains in another precision after all: the helper's work goes
            self.close()
            return None
        if self._memory is None:
            import mmap

            self.done = self._stop_helper()
            log.info("early conversion: the helper had converted %d of the %d tensors", self.done, len(self._items))
            shared = mmap.mmap(self._fd, self._size, flags=mmap.MAP_SHARED)
            self._memory = torch.frombuffer(shared, dtype=torch.uint8)
        if i >= self.done:
            return None
        item = self._items[i]
        start = item.dst_offset
        return self._memory[start:start + 2 * item.nbytes].view(torch.float32).view(item.shape)

    def _same_file(self, path) -> bool:
        if path != self._asked:
            self._asked, self._asked_is_ours = path, Path(path).resolve() == self.path
        return self._asked_is_ours

    def wait_for_helper(self) -> None:
        """Until the helper has exited (done, stopped by the loader's first ``claim`` or gone)."""
        process = self._process
        if process is not None:
            try:
                process.wait()
            except (OSError, ValueError):
                pass

    def _stop_helper(self) -> int:
        """How many items the helper finished, in order; it has exited (or been killed) on return."""
        process, done = self._process, 0
        if process is None:
            return 0
        try:
            process.stdin.write("stop\n")
            process.stdin.close()
        except OSError:  # it has exited already
            pass
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for line in _lines_until(process.stdout, deadline):
            if line.strip().isdigit():
                done = int(line)
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return done  # each count is written once its item is complete, so a helper that died left no half

    def close(self) -> None:
        """Stop the helper if it runs and let go of the shared memory (tensors already claimed keep theirs)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for stream in (getattr(self._process, "stdin", None), getattr(self._process, "stdout", None)):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._memory = None


def _lines_until(stream, deadline: float) -> Iterator[str]:
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([stream], [], [], left)
        if not readable:
            return
        line = stream.readline()
        if not line:
            return
        yield line


def start(path: str | Path, prefixes: str | tuple[str, ...]) -> Optional[EarlyConversion]:
    """A helper converting the fp16/bf16 tensors under ``prefixes`` of the .safetensors file ``path``, or None
    where there is nothing to convert or this system cannot (no ``memfd_create``)."""
    path = Path(path)
    if not hasattr(os, "memfd_create") or path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    from easytrain.errors import UserError
    from easytrain.model.detect import read_safetensors_header

    try:
        header = read_safetensors_header(path)
        items = plan_items(header.tensors, prefixes)
        if not items:
            return None
        return EarlyConversion(path.resolve(), header.data_start, items)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return None  # the loader reads the file itself and says what is wrong with it


def parts_to_convert(plan) -> tuple[str, ...]:
    """The key prefixes of the parts of the run's single file that it will hold in fp32, the denoiser first;
    none where its family names no denoiser prefix."""
    from easytrain.families.registry import catalog_hook

    arch = plan.model.architecture
    denoiser = catalog_hook(arch, "SINGLE_FILE_DENOISER_PREFIX")
    if not denoiser:
        return ()
    wanted = [denoiser,
              None if plan.model.vae else catalog_hook(arch, "SINGLE_FILE_VAE_PREFIX"),
              None if plan.text_outputs_cached else catalog_hook(arch, "SINGLE_FILE_TEXT_ENCODER_PREFIX")]
    return tuple(prefix for prefix in wanted if prefix)


@contextmanager
def converting(plan) -> Iterator[Optional[EarlyConversion]]:
    """Around a run: the early conversion of its base model's weights where it applies (see the module's
    doc), available to the loader through ``current()``; stopped and let go of when the block ends."""
    conversion = None
    if weights_will_be_fp32(plan.precision.mixed_precision):
        prefixes = parts_to_convert(plan)
        if prefixes:
            conversion = start(plan.model.base_model, prefixes)
    token = _current.set(conversion)
    try:
        yield conversion
    finally:
        _current.reset(token)
        if conversion is not None:
            conversion.close()


def current() -> Optional[EarlyConversion]:
    return _current.get()
