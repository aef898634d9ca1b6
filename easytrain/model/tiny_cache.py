"""The cache every family's tiny test models are built into once (staged, then renamed into place)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def default_cache_dir() -> Path:
    return Path(os.environ.get("EASYTRAIN_CACHE") or Path.home() / ".cache" / "easytrain")


_COMPLETE_MARKER = "complete"


def build_once(name: str, build, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder ``name``, made by ``build(folder)`` the first time (staged, then renamed into place)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / name
    if (final / _COMPLETE_MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-building-", dir=root))
    try:
        build(staging)
        (staging / _COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / _COMPLETE_MARKER).is_file():
                raise  # not a concurrent build that won: a real failure
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
