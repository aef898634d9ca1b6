"""Atomic file writes: a crash or a full disk never destroys an earlier file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    The temporary file lives in the same folder so the final ``os.replace`` is
    atomic. On any error the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes owner-only files; outputs should be readable like any other new file.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        note_target(exc, target)
        raise


def note_target(exc: BaseException, target: str | os.PathLike) -> None:
    """Remember on ``exc`` which file was being saved when it was raised (the innermost save wins)."""
    if getattr(exc, "easytrain_target", None) is None:
        try:
            exc.easytrain_target = str(target)  # type: ignore[attr-defined]
        except AttributeError:
            pass


def failed_save(exc: BaseException) -> Optional[tuple[str, OSError]]:
    """(the file being saved, the OS error) when ``exc`` is a save that the disk refused; else None."""
    target = getattr(exc, "easytrain_target", None)
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and target is not None:
            return target, current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def json_text(data, indent: int = 2) -> str:
    """``data`` as JSON text, non-ASCII kept readable; a file name that is not UTF-8 (held with surrogate
    escapes) is written as \\u escapes, which read back to the same name."""
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(data, indent=indent)
    return text + "\n"


def atomic_write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(target, text.encode(encoding))
