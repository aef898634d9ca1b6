"""The undo folder: every applied change keeps what it replaces, so it can be put back.

Each applied change gets `DIR/.easytrain/undo/<id>/` with a manifest and the
original files under `files/` (same relative paths as in DIR). The manifest is
written before anything in DIR changes, so even an interrupted change can be
undone. Undoing moves the originals back byte for byte, moves files the change
created aside into the entry (nothing is ever deleted), and renames the entry
to `<id>.undone`. A later undo goes one further back.

Originals are kept as hard links where the file system allows (every write in
the tools replaces a file by rename, so the link keeps the old bytes), else copied.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

from easytrain.errors import UserError
from easytrain.fsutil import atomic_write_text, json_text
from easytrain.tools.dataset_files import EXCLUDED_DIR_NAME, TOOLS_DIR_NAME

UNDO_DIR = Path(TOOLS_DIR_NAME) / "undo"
MANIFEST = "manifest.json"
UNDONE_SUFFIX = ".undone"


@dataclass(frozen=True)
class UndoResult:
    undo_id: str
    description: str
    restored: tuple[Path, ...]
    set_aside: tuple[Path, ...]  # files the change had created, now inside the undo entry
    conflicts: tuple[str, ...] = field(default=())


def undo_root(root: Path) -> Path:
    return root / UNDO_DIR


def record_undo(root: Path, description: str, *, kept: Iterable[Path] = (), taken: Iterable[Path] = (),
                created: Iterable[Path] = (), moved: Iterable[tuple[Path, Path]] = ()) -> tuple[str, Path]:
    """Prepare an undo entry before a change touches DIR; returns (id, entry folder).

    kept: files that will be rewritten in place (a copy of each is kept);
    taken: files the caller will move into the entry's `files/` itself (see `taken_path`);
    created: files the change will create; moved: (from, to) moves inside DIR.
    """
    try:
        return _record(root, description, list(kept), list(taken), list(created), list(moved))
    except OSError as exc:
        raise UserError(f"{root}: cannot keep the undo record in {undo_root(root)} "
                        f"({exc.strerror or exc}; a read-only disk?), so nothing was changed. Copy the "
                        "images to a folder you can write to") from None


def _record(root: Path, description: str, kept: list[Path], taken: list[Path], created: list[Path],
            moved: list[tuple[Path, Path]]) -> tuple[str, Path]:
    entry = _new_entry(root)
    files = entry / "files"
    pairs = [(path, files / _rel(root, path)) for path in kept]
    for folder in {target.parent for _path, target in pairs}:
        folder.mkdir(parents=True, exist_ok=True)
    for path, target in pairs:
        keep_original(path, target)
    manifest = {
        "id": entry.name,
        "description": description,
        "created_at": datetime.now().isoformat(timespec="seconds"),
        "kept": [_rel(root, p) for p in kept],
        "taken": [_rel(root, p) for p in taken],
        "created": [_rel(root, p) for p in created],
        "moved": [[_rel(root, a), _rel(root, b)] for a, b in moved],
    }
    atomic_write_text(entry / MANIFEST, json_text(manifest, indent=1))
    return entry.name, entry


def taken_path(root: Path, entry: Path, path: Path) -> Path:
    """Where a taken file goes inside the entry."""
    return entry / "files" / _rel(root, path)


def keep_original(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def move_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise UserError(f"{target}: already exists; move it away and try again")
    os.replace(source, target)


def latest_entry(root: Path) -> Path | None:
    folder = undo_root(root)
    if not folder.is_dir():
        return None
    entries = [p for p in folder.iterdir()
               if p.is_dir() and not p.name.endswith(UNDONE_SUFFIX) and (p / MANIFEST).is_file()]
    return max(entries, key=lambda p: p.name, default=None)


def undo_last(root: Path) -> UndoResult:
    """Put the last applied change in DIR back; raise UserError when there is none."""
    entry = latest_entry(root)
    if entry is None:
        raise UserError(f"{root}: nothing to undo (no applied change under {undo_root(root)})")
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{entry / MANIFEST}: cannot read the undo record ({exc})") from None

    restored, set_aside, conflicts = [], [], []
    for rel in manifest.get("created", []):
        path = root / rel
        if path.exists():
            move_file(path, _free_path(entry / "created" / rel))
            set_aside.append(path)
    for source_rel, target_rel in manifest.get("moved", []):
        source, target = root / source_rel, root / target_rel
        if not target.exists():
            continue
        if source.exists():
            conflicts.append(f"{source}: exists again, so {target} stays where it is")
            continue
        move_file(target, source)
        restored.append(source)
    for rel in manifest.get("kept", []) + manifest.get("taken", []):
        original, path = entry / "files" / rel, root / rel
        if not original.exists():
            continue  # the change was interrupted before it took this file
        if path.exists():
            if _same_bytes(path, original):
                continue
            move_file(path, _free_path(entry / "replaced" / rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(original, path)
        restored.append(path)
    _remove_empty_dirs(root / EXCLUDED_DIR_NAME)
    entry.rename(_free_path(entry.with_name(entry.name + UNDONE_SUFFIX)))
    return UndoResult(manifest.get("id", entry.name), manifest.get("description", ""), tuple(restored),
                      tuple(set_aside), tuple(conflicts))


def _new_entry(root: Path) -> Path:
    base = undo_root(root) / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    entry, number = base, 1
    while True:
        try:
            entry.mkdir(parents=True)
            return entry
        except FileExistsError:
            number += 1
            entry = base.with_name(f"{base.name}-{number}")


def _rel(root: Path, path: Path) -> str:
    root_text, text = str(root), str(path)
    if text.startswith(root_text + os.sep):  # the common case, without pathlib's parsing (10,000s of files)
        return text[len(root_text) + 1:].replace(os.sep, "/")
    return Path(path).relative_to(root).as_posix()


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return a.read_bytes() == b.read_bytes()


def _free_path(path: Path) -> Path:
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.{number}")
    return candidate


def _remove_empty_dirs(folder: Path) -> None:
    """Empty folders a change made under `_excluded` go again (only empty ones, bottom up)."""
    if not folder.is_dir():
        return
    for dirpath, _dirnames, _files in sorted(os.walk(folder), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
