"""The base model's weights converted to fp32 by a helper process from the run's first second until the
first step needs them.

Training in fp32 from an fp16 or bf16 file (every CPU run, and GPU runs without mixed precision) writes
each weight once more in fp32: 3.2 GiB for SD1.5's UNet, 10 GiB for SDXL's, most of it the kernel handing
out fresh pages. The run's first seconds are imports (torch, diffusers, transformers: one core busy, the
others idle), then building the models and the network (one core again), so a process started before them
(model/conversion_worker.py: torch's cast on one thread, lowest priority) converts on an idle core, into
shared memory, the parts in the order the run reads them: the VAE (the latents are encoded before the
first step), then the denoiser, then the text encoders where the run uses them in fp32 (not a VAE given as
a file of its own, not frozen encoders whose outputs are cached: those stay in the file's precision,
model/cast_on_use.py), each part in file order.

The loader ``claim``s each tensor: one the helper has converted is a view of the shared memory, and becomes
the model's weight as it is. One it has not reached yet is handed out too, as the view its values will be
written to, where the loader may finish later (model/deferred_copies.py: the denoiser and the text
encoders, whose values nothing reads before the first step); the loader converts the others itself (the
VAE, should the helper be behind). ``complete()``, called by the deferred copies' ``wait()`` before the
first step, converts what the helper has still not reached, from the last item back, with every core,
while the helper goes on from the front; where they meet it stops the helper. A thread could not be the
helper: the importing thread holds the GIL between every small step, and the two starve each other
(measured: a conversion of 3 s took 12-51 s beside the imports).

Only where it cannot go wrong: a single .safetensors file, Linux (``memfd_create``), a run whose weights
will be fp32 (guessed before torch is imported: no mixed precision, or fp16 asked on a machine with no GPU
device), and a family that names where its denoiser's keys are in a single file
(``SINGLE_FILE_DENOISER_PREFIX`` in its catalog; ``SINGLE_FILE_VAE_PREFIX`` and
``SINGLE_FILE_TEXT_ENCODER_PREFIX`` add those parts). What the loader does not take (another precision after
all, a file it reads elsewhere) is let go of unused. Values are exact (fp16 and bf16 convert to fp32
without rounding, and the helper and ``complete()`` write the same values wherever both reach an item), so
the model is bit for bit the one the loader alone would have made.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger(__name__)
_ALIGN = 64  # each tensor starts on a cache line, as an allocator's would
_WORKER = Path(__file__).with_name("conversion_worker.py")  # a script: nothing of easytrain imported
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


_HALF = {"F16": "float16", "BF16": "bfloat16"}


class EarlyConversion:
    """A helper process converting ``items`` of ``path`` into shared memory; see the module's doc."""

    def __init__(self, path: Path, data_start: int, items: list[_Item]):
        self.path = path
        self._data_start = data_start
        self._items = items
        self._index = {item.key: i for i, item in enumerate(items)}
        self._size = max(1, items[-1].dst_offset + 2 * items[-1].nbytes)
        self._fd = os.memfd_create("easytrain-weights", os.MFD_CLOEXEC)
        self._shared = None  # the shared memory, mapped when the loader first asks
        self._memory = None  # and its torch view
        self.done = 0  # items the helper has converted (in order), as far as it has said
        self._pending: set[int] = set()  # items handed out before the helper had converted them
        self._unread = b""  # the helper's output after its last whole line
        self._heard_all = False
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

    def claim(self, path: Path, key: str, dtype, *, can_wait: bool = False) -> Optional["object"]:
        """The fp32 tensor for ``key`` of ``path``, a view of the shared memory; or None when this conversion
        does not hold it (another file or key, another precision). A tensor the helper has not converted yet
        is None too, unless ``can_wait``: then its view is handed out, and ``complete()`` must run before
        anything reads it."""
        import torch

        i = self._index.get(key)
        if i is None or self._fd < 0 or not self._same_file(path):
            return None
        if dtype != torch.float32:  # the run trains in another precision after all: the helper's work goes
            if not self._pending:  # (unless tensors handed out wait for it)
                self.close()
            return None
        if self._memory is None:
            import mmap

            self._shared = mmap.mmap(self._fd, self._size, flags=mmap.MAP_SHARED)
            self._memory = torch.frombuffer(self._shared, dtype=torch.uint8)
        if i >= self._heard():
            if not can_wait:
                return None
            self._pending.add(i)
        return self._view(i)

    def holds_values(self, key: str) -> bool:
        """Whether the helper has converted ``key`` (its claimed view holds the values now)."""
        i = self._index.get(key)
        return i is not None and i < self._heard()

    def _view(self, i: int):
        import torch

        item = self._items[i]
        start = item.dst_offset
        return self._memory[start:start + 2 * item.nbytes].view(torch.float32).view(item.shape)

    def _same_file(self, path) -> bool:
        if path != self._asked:
            self._asked, self._asked_is_ours = path, Path(path).resolve() == self.path
        return self._asked_is_ours

    def complete(self) -> None:
        """Every tensor handed out holds its values: what the helper has not reached is converted here, the
        last item first, with torch's whole thread pool, while the helper goes on from the front (an item both
        reach gets the same values twice). Then the helper is told to stop."""
        pending = sorted(self._pending, reverse=True)
        if pending and self._memory is not None:
            import mmap

            import torch

            with open(self.path, "rb") as fh:  # a private mapping: writable for torch, nothing written back
                source = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
            converted = 0
            with torch.no_grad():
                for i in pending:
                    if i < self._heard():
                        break
                    item = self._items[i]
                    if item.nbytes:
                        half = torch.frombuffer(source, dtype=getattr(torch, _HALF[item.dtype]),
                                                count=item.nbytes // 2, offset=self._data_start + item.src_offset)
                        self._view(i).view(-1).copy_(half)
                    converted += 1
            log.info("early conversion: %d of the %d tensors converted by the run, the rest by the helper",
                     converted, len(self._items))
        self._pending.clear()
        self._tell_helper_to_stop()

    def wait_for_helper(self) -> None:
        """Until the helper has exited (done, stopped by ``complete()`` or gone)."""
        process = self._process
        if process is not None:
            try:
                process.wait()
            except (OSError, ValueError):
                pass

    def _heard(self) -> int:
        """The helper's count of items done, from what it has written so far (without waiting)."""
        process = self._process
        if process is None or self._heard_all or process.stdout.closed:
            return self.done
        stream = process.stdout.fileno()
        while True:
            readable, _, _ = select.select([stream], [], [], 0)
            if not readable:
                break
            chunk = os.read(stream, 1 << 16)
            if not chunk:
                self._heard_all = True
                break
            self._unread += chunk
        *lines, self._unread = self._unread.split(b"\n")
        for line in lines:  # each count is written once its item is complete: a helper that died left no half
            if line.strip().isdigit():
                self.done = max(self.done, int(line))
        return self.done

    def _tell_helper_to_stop(self) -> None:
        """It exits after the item in hand, which is done by then or written here with the same values: nothing
        waits for it (its exit, with its mappings, takes a second that the run goes on beside)."""
        process = self._process
        try:
            if process is not None and not process.stdin.closed:
                process.stdin.write("stop\n")
                process.stdin.close()
        except OSError:  # it has exited already
            pass

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
        self._memory = self._shared = None
        self._pending.clear()


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
    """The key prefixes of the parts of the run's single file that it will hold in fp32, in the order the run
    reads their values: the VAE (it encodes the latents before the first step), the denoiser, the text
    encoders. None where the family names no denoiser prefix."""
    from easytrain.families.registry import catalog_hook

    arch = plan.model.architecture
    denoiser = catalog_hook(arch, "SINGLE_FILE_DENOISER_PREFIX")
    if not denoiser:
        return ()
    wanted = [None if plan.model.vae else catalog_hook(arch, "SINGLE_FILE_VAE_PREFIX"),
              denoiser,
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
