"""One `easytrain queue` per folder, every job claimed before it starts, and one run per output.

The queue folder holds ``.easytrain-queue.lock`` (pid, host, start time) while
a queue runs it; a second queue on the same folder says who holds it and
exits. A lock whose process is gone (a crash, kill -9) is stale and taken
over. Each job is claimed with a ``.NAME.json.claim`` file created
exclusively (an atomic create) before it starts, so a job never trains twice
even if two runners raced past the lock. A run (`train`, each queue job) holds
``OUTPUT/.NAME.lock`` likewise, so two runs never write the same output at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from easytrain.errors import UserError

LOCK_NAME = ".easytrain-queue.lock"
RUN_LOCK_SUFFIX = ".lock"  # OUTPUT/.NAME.lock while a run of NAME trains there
CLAIM_SUFFIX = ".claim"


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _create_exclusive(path: Path) -> bool:
    """Create ``path`` holding this process's id; False when it already exists (someone else has it)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(_owner(), fh)
    return True


def _read_owner(path: Path) -> Optional[dict]:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        int(owner["pid"])
        return owner
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(owner: Optional[dict]) -> bool:
    """Whether the owner may still run; a lock from another machine is taken as alive (it cannot be asked)."""
    if owner is None:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _describe(owner: dict) -> str:
    return f"pid {owner['pid']} on {owner.get('host', '?')}, since {owner.get('since', '?')}"


@contextmanager
def queue_lock(folder: Path) -> Iterator[list[str]]:
    """Hold the folder's queue lock; yields notes (a stale lock taken over). UserError when it is held."""
    lock = folder / LOCK_NAME
    busy = f"{folder}: another easytrain queue is running this folder"
    with _held(lock, busy, "queue lock") as notes:
        yield notes


@contextmanager
def run_lock(output_dir: Path, name: str) -> Iterator[list[str]]:
    """Hold ``OUTPUT/.NAME.lock`` while a run of NAME writes there: a second `train` of the same output
    would move or overwrite the first one's files. Yields notes; UserError naming the holder when held."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    busy = f"{folder / name}: another easytrain run is training into this output (the same folder and name)"
    with _held(folder / f".{name}{RUN_LOCK_SUFFIX}", busy, "run lock") as notes:
        yield notes


def run_lock_holder(output_dir: Path, name: str) -> Optional[str]:
    """Who is training NAME into ``output_dir`` right now ("pid 4242 on gpu1, since ..."), or None."""
    owner = _read_owner(Path(output_dir) / f".{name}{RUN_LOCK_SUFFIX}")
    return _describe(owner) if owner is not None and _alive(owner) else None


@contextmanager
def _held(lock: Path, busy: str, what: str) -> Iterator[list[str]]:
    notes: list[str] = []
    while not _create_exclusive(lock):
        owner = _read_owner(lock)
        if _alive(owner):
            raise UserError(f"{busy} ({_describe(owner)}); wait for it to finish, or stop it. "
                            f"If it is surely gone, delete {lock}")
        if owner is None and time.time() - _mtime(lock) < 5:
            time.sleep(0.2)   # being written right now by another starting process
            continue
        notes.append(f"a stale {what} ({_describe(owner) if owner else 'unreadable'}) was taken over")
        _remove_if_same(lock, owner)
    try:
        yield notes
    finally:
        lock.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _remove_if_same(path: Path, owner: Optional[dict]) -> None:
    if _read_owner(path) == owner:
        path.unlink(missing_ok=True)


def claim_path(job: Path) -> Path:
    return job.with_name(f".{job.name}{CLAIM_SUFFIX}")


def claim(job: Path) -> Optional[str]:
    """Claim ``job`` for this process; None when claimed, else who has it. A dead owner's claim is taken over."""
    marker = claim_path(job)
    for _ in range(2):
        if _create_exclusive(marker):
            return None
        owner = _read_owner(marker)
        if _alive(owner):
            return _describe(owner)
        _remove_if_same(marker, owner)
    return "another runner"


def release(job: Path) -> None:
    claim_path(job).unlink(missing_ok=True)
