"""Read and write .safetensors checkpoints one tensor at a time.

The reader seeks to one tensor's bytes and reads only those (no mapping of the
whole file); the writer computes the header from the shapes and dtypes first,
then takes each tensor's bytes in turn, so a merged 7 GB checkpoint is never in
memory: the peak is about one tensor in its file dtype plus its fp32 copy.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import torch

from easytrain.model.detect import read_safetensors_header

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
FLOAT_NAMES = ("F64", "F32", "F16", "BF16")
COPY_CHUNK = 16 << 20


def itemsize(name: str) -> int:
    return torch.empty((), dtype=DTYPES[name]).element_size()


class Reader:
    """A safetensors file's header, and its tensors read one at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header = read_safetensors_header(self.path)
        self.tensors: dict[str, dict] = header.tensors
        self.metadata = header.metadata
        with open(self.path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
        self.data_start = 8 + length
        self._fh: BinaryIO = open(self.path, "rb")

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def keys(self) -> list[str]:
        return list(self.tensors)

    def shape(self, key: str) -> tuple:
        return tuple(self.tensors[key]["shape"])

    def dtype_name(self, key: str) -> str:
        return self.tensors[key]["dtype"]

    def _span(self, key: str) -> tuple[int, int]:
        start, end = self.tensors[key]["data_offsets"]
        return self.data_start + start, end - start

    def read(self, key: str) -> torch.Tensor:
        """The tensor ``key`` (a fresh, writable tensor holding only its own bytes)."""
        offset, size = self._span(key)
        self._fh.seek(offset)
        buffer = bytearray(size)
        self._fh.readinto(buffer)
        dtype = DTYPES[self.dtype_name(key)]
        if size == 0:
            return torch.empty(self.shape(key), dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(self.shape(key))

    def read_float32(self, key: str) -> torch.Tensor:
        """The tensor ``key`` in fp32, converted a block of rows at a time (no whole copy in the file's dtype)."""
        shape, dtype = self.shape(key), DTYPES[self.dtype_name(key)]
        if dtype == torch.float32 or not shape or 0 in shape:
            return self.read(key).to(torch.float32)
        result = torch.empty(shape, dtype=torch.float32)
        offset, _size = self._span(key)
        row_bytes = result[0].numel() * itemsize(self.dtype_name(key))
        step = max(1, COPY_CHUNK // max(1, row_bytes))
        self._fh.seek(offset)
        for start in range(0, shape[0], step):
            rows = min(step, shape[0] - start)
            buffer = bytearray(rows * row_bytes)
            self._fh.readinto(buffer)
            result[start:start + rows] = torch.frombuffer(buffer, dtype=dtype).reshape(rows, *shape[1:])
        return result

    def copy_to(self, key: str, out: BinaryIO) -> None:
        """Copy the tensor's bytes as they are, in chunks."""
        offset, size = self._span(key)
        self._fh.seek(offset)
        while size > 0:
            chunk = self._fh.read(min(size, COPY_CHUNK))
            out.write(chunk)
            size -= len(chunk)


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


class Entry:
    """One output tensor: its key, dtype name and shape, and how to write its bytes."""

    def __init__(self, key: str, dtype: str, shape: tuple, write: Callable[[BinaryIO], None]):
        self.key, self.dtype, self.shape, self.write = key, dtype, tuple(shape), write

    @property
    def nbytes(self) -> int:
        size = itemsize(self.dtype)
        for s in self.shape:
            size *= s
        return size


def write_streamed(path: Path, entries: Iterable[Entry], metadata: dict[str, str],
                   on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write the entries as one .safetensors file at ``path``, atomically, one tensor at a time."""
    from easytrain.fsutil import atomic_path

    entries = list(entries)
    header: dict[str, dict] = {}
    offset = 0
    for entry in entries:
        header[entry.key] = {"dtype": entry.dtype, "shape": list(entry.shape),
                             "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            out.write(struct.pack("<Q", len(raw)))
            out.write(raw)
            for done, entry in enumerate(entries, 1):
                before = out.tell()
                entry.write(out)
                written = out.tell() - before
                if written != entry.nbytes:
                    raise RuntimeError(f"{entry.key}: wrote {written} bytes, the header says {entry.nbytes}")
                if on_progress is not None:
                    on_progress(done, len(entries))
