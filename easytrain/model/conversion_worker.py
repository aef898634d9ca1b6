"""The helper process of model/early_conversion.py: fp16/bf16 tensors of a .safetensors file, as fp32, into
shared memory.

Reads one JSON line on stdin: ``{"path", "data_start", "fd", "size", "items": [[src_offset, nbytes, dtype,
dst_offset], ...]}`` (offsets in bytes: src from the start of the file's data, dst in the shared memory
``fd``). Converts the items in order and writes the count done after each one; stops early, after the item
in hand, when anything arrives on stdin (or stdin closes: the run went away). Runs at the lowest priority
and ignores Ctrl-C (the run decides what happens; it converts whatever is left itself).

The cast is torch's, on one thread, where torch imports (its vectorised fp16 cast is 8x numpy's; into
fresh shared memory 1.5 GiB/s against 0.84 here; the import costs about a second of this otherwise idle
core), numpy's where it does not. Nothing of easytrain is imported.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import signal
import sys


def _read_job() -> tuple[dict, bool]:
    """The job line, and whether more followed it already (a stop). Read from the descriptor, unbuffered, so
    that ``_told_to_stop`` sees whatever comes after it."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            raise BrokenPipeError("stdin closed before the job")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return json.loads(line), bool(rest)


def _told_to_stop() -> bool:
    readable, _, _ = select.select([0], [], [], 0)
    return bool(readable)


def _torch_cast():
    """``cast(source, out, item)`` with torch on this thread alone, or None where torch does not import."""
    try:
        import warnings

        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*not writable.*")
    dtypes = {"F16": torch.float16, "BF16": torch.bfloat16}

    def cast(source, out, item) -> None:
        src_offset, nbytes, dtype, dst_offset = item
        count = nbytes // 2
        if count:
            target = torch.frombuffer(out, dtype=torch.float32, count=count, offset=dst_offset)
            target.copy_(torch.frombuffer(source, dtype=dtypes[dtype], count=count, offset=src_offset))

    return cast


def _numpy_cast(source, out, item) -> None:
    import numpy as np

    src_offset, nbytes, dtype, dst_offset = item
    count = nbytes // 2
    target = np.frombuffer(out, dtype=np.float32, count=count, offset=dst_offset)
    if dtype == "F16":
        target[:] = np.frombuffer(source, dtype=np.float16, count=count, offset=src_offset)
    else:  # BF16: the upper half of an fp32, exactly
        halves = np.frombuffer(source, dtype=np.uint16, count=count, offset=src_offset)
        np.left_shift(halves, 16, out=target.view(np.uint32), dtype=np.uint32)


def _caster():
    return _torch_cast() or _numpy_cast


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(19)
    except OSError:
        pass
    job, stopped = _read_job()
    if stopped:
        return 0
    cast = _caster()
    with open(job["path"], "rb") as fh:  # private and writable (torch wants that), nothing written back
        file_map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    out = mmap.mmap(job["fd"], job["size"], flags=mmap.MAP_SHARED)
    source = memoryview(file_map)[job["data_start"]:]
    done = 0
    for item in job["items"]:
        if _told_to_stop():
            break
        cast(source, out, item)
        done += 1
        print(done, flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, KeyboardInterrupt):  # the run went away or stopped it: nothing to report
        sys.exit(1)
