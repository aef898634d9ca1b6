"""Writing many small files atomically without paying one disk flush per file.

Same guarantee as easytrain.fsutil (a crash leaves each file either old or
new, never half written): every new content goes to a temporary file beside
its target, one `os.sync()` flushes them all, then each is renamed over its
target. fsutil's one fsync per file made an edit of 10,000 captions take
several seconds. Where `os.sync` does not exist
(Windows), each file is flushed on its own.

Renames wait on the disk, not the CPU, so a few threads overlap them (on a busy virtual disk 10,000 renames took 20 s in a row and under 2 s
with 8 threads).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, TypeVar

IO_THREADS = 8
PARALLEL_FROM = 64  # below this, threads cost more than they save
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
T = TypeVar("T")


def for_each(function: Callable[[T], object], items: list[T]) -> None:
    """Run `function` on every item, overlapping the waits on the disk; the first error is raised."""
    if len(items) < PARALLEL_FROM:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(IO_THREADS) as pool:
        for _ in pool.map(function, items):
            pass


def write_many(items: Iterable[tuple[Path, bytes]]) -> None:
    """Write each (path, data) atomically; on any error no target is touched and temporaries go."""
    sync_all = hasattr(os, "sync")
    pending = [(_temporary(target), target, data) for target, data in items]

    def write(item: tuple[Path, Path, bytes]) -> None:
        temporary, _target, data = item
        with open(_create(temporary), "wb", closefd=True) as handle:
            handle.write(data)
            if not sync_all:
                handle.flush()
                os.fsync(handle.fileno())

    try:
        for item in pending:  # creating files in one folder gains nothing from threads
            write(item)
        if sync_all:
            os.sync()
    except BaseException:
        for temporary, _target, _data in pending:
            temporary.unlink(missing_ok=True)
        raise
    for_each(lambda item: os.replace(item[0], item[1]), pending)


def _temporary(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _create(path: Path) -> int:
    try:
        return os.open(path, _FLAGS, 0o666)  # the umask applies, as for any new file
    except FileExistsError:  # left behind by a crashed run of this same process id
        path.unlink()
        return os.open(path, _FLAGS, 0o666)
