"""The base model file's hashes that kohya writes into every LoRA file: ``ss_sd_model_hash`` (A1111's old
8-digit hash) and ``ss_new_sd_model_hash`` (sha256 of the whole file).

The sha256 reads every byte: 2 GiB for SD1.5, 6.5 GiB for SDXL, 23 GiB for Flux.1, seconds on a fast
disk and a minute or more on a slow one. A run therefore starts it on a thread before it imports the model
libraries and loads the model (hashlib lets other threads run while it hashes), at the lowest priority so
that it takes only what the imports, the loading and the training leave idle, and waits for it only when
it saves its first file. The result is remembered per file, by its size and modification time, in
easytrain's cache folder, so a re-run or the next job of a queue on the same base model reads nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from easytrain.background import lowest_priority
from easytrain.model.tiny_cache import default_cache_dir

CACHE_FILE = "base_model_hashes.json"
CACHE_ENTRIES = 200  # the newest files hashed; an entry is about 200 bytes
_CHUNK = 8 << 20
_cache_lock = threading.Lock()


def base_model_hashes(path: str | Path) -> dict[str, str]:
    """Both hashes of a model file; empty for what is not a file (a diffusers folder, the built-in tiny
    model), as kohya writes none."""
    path = Path(path).expanduser()
    if not path.is_file():
        return {}
    with open(path, "rb") as fh:
        fh.seek(0x100000)
        legacy = hashlib.sha256(fh.read(0x10000)).hexdigest()[:8]
        fh.seek(0)
        digest = hashlib.file_digest(fh, "sha256") if hasattr(hashlib, "file_digest") else _sha256(fh)
    return {"ss_sd_model_hash": legacy, "ss_new_sd_model_hash": digest.hexdigest()}


def _sha256(fh):
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_CHUNK), b""):
        digest.update(chunk)
    return digest


def remembered_hashes(path: str | Path, cache_dir: Path | None = None,
                      before_reading: Callable[[], None] | None = None) -> dict[str, str]:
    """``base_model_hashes``, read from the cache when the file's size and modification time are the ones
    hashed before; hashed and remembered otherwise (``before_reading`` is called first: it may wait). A cache
    that cannot be read or written is only slower."""
    path = Path(path).expanduser()
    if not path.is_file():
        return {}
    cache = (cache_dir or default_cache_dir()) / CACHE_FILE
    key, stat = str(path.resolve()), path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = _read_cache(cache).get(key)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and _valid(entry.get("hashes")):
        return dict(entry["hashes"])
    if before_reading is not None:
        before_reading()
    hashes = base_model_hashes(path)
    _remember(cache, key, {**stamp, "hashes": hashes})
    return hashes


def hashes_in_background(path: str | Path, after: Callable[[], None] | None = None) -> Callable[[], dict[str, str]]:
    """Start ``remembered_hashes(path)`` on a thread; the returned call waits for it and gives the hashes.
    ``after``: what the reading waits for (the early conversion's helper, which needs the idle core more).
    A file that cannot be read to the end (moved, a failing disk) gives none: the LoRA file is saved
    without those two keys rather than not at all. Any other error is raised by the caller's thread."""
    result: dict = {}

    def work() -> None:
        lowest_priority()
        try:
            result["hashes"] = remembered_hashes(path, before_reading=after)
        except OSError:
            result["hashes"] = {}
        except BaseException as exc:  # handed to the waiting caller
            result["error"] = exc

    thread = threading.Thread(target=work, name="base-model-hash", daemon=True)
    thread.start()

    def wait() -> dict[str, str]:
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["hashes"]

    return wait


def _valid(hashes) -> bool:
    return (isinstance(hashes, dict) and set(hashes) == {"ss_sd_model_hash", "ss_new_sd_model_hash"}
            and all(isinstance(v, str) for v in hashes.values()))


def _read_cache(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(cache: Path, key: str, entry: dict) -> None:
    with _cache_lock:
        data = _read_cache(cache)
        data.pop(key, None)
        data[key] = entry
        data = dict(list(data.items())[-CACHE_ENTRIES:])
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, staging = tempfile.mkstemp(prefix=".hashes-", dir=cache.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh)
                os.replace(staging, cache)
            finally:
                if os.path.exists(staging):
                    os.unlink(staging)
        except OSError:
            pass
