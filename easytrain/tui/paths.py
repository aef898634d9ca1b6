"""Path completion and filtering for the path questions (no Textual).

Completion works like a shell's Tab: the last part of what was typed is
completed to the longest common prefix of the matching entries; a single
matching folder gets its trailing slash so the next Tab goes inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

SHOWN_CANDIDATES = 8


@dataclass(frozen=True)
class Completion:
    text: str  # the new field text
    candidates: tuple[str, ...]  # entry names still matching (several: Tab again after typing more)


def wants_files(kind: str) -> bool:
    return kind in ("file", "model")


def shows_entry(path: Path, kind: str, extensions: Iterable[str]) -> bool:
    """Whether a browser or completion for ``kind`` lists ``path`` (folders always do)."""
    try:
        if path.is_dir():
            return True
    except OSError:
        return False
    if not wants_files(kind):
        return False
    allowed = tuple(e.lower() for e in extensions)
    return not allowed or path.suffix.lower() in allowed


def complete_path(text: str, kind: str, extensions: Iterable[str], base_dir: Path) -> Completion:
    """Complete the last component of ``text``, relative paths against ``base_dir``."""
    extensions = tuple(extensions)
    cut = max(text.rfind("/"), text.rfind(os.sep))
    head, prefix = text[:cut + 1], text[cut + 1:]
    folder = Path(os.path.expanduser(head or "."))
    if not folder.is_absolute():
        folder = base_dir / folder
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return Completion(text, ())
    matches = []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        if entry.name.startswith(".") and not prefix.startswith("."):
            continue
        if shows_entry(Path(entry.path), kind, extensions):
            matches.append(entry)
    if not matches:
        return Completion(text, ())
    if len(matches) == 1:
        only = matches[0]
        suffix = os.sep if only.is_dir() else ""
        return Completion(head + only.name + suffix, ())
    common = os.path.commonprefix([m.name for m in matches])
    names = tuple(m.name + (os.sep if m.is_dir() else "") for m in matches)
    return Completion(head + common if len(common) > len(prefix) else text, names)
