"""Rename `N_name` folders to new repeat counts, previewed first and undoable like every dataset tool.

The renames are recorded as moves in DIR/.easytrain/undo/ before any folder
changes; `easytrain images DIR --undo` (or `tags DIR --undo`, or the wizard's
Ctrl+Z) puts the old names back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from easytrain.data.scan import SUBSET_NAME
from easytrain.errors import UserError
from easytrain.tools.undo import UndoResult, record_undo, undo_last


@dataclass(frozen=True)
class FolderRename:
    old: Path
    new: Path

    def line(self) -> str:
        return f"{self.old.name} -> {self.new.name}"


def plan_renames(root: Path, repeats: Mapping[str, int]) -> tuple[FolderRename, ...]:
    """The renames that give each folder named in ``repeats`` its new count (reads only).

    Raises UserError, before anything changes, for a folder that is not there or a new name
    that is already taken.
    """
    renames = []
    for folder, count in repeats.items():
        old = root / folder
        match = SUBSET_NAME.match(folder)
        if not old.is_dir() or not match:
            raise UserError(f"{old}: not an N_name folder of {root}; nothing was renamed")
        name = match.group(2)
        new = root / (f"{int(count)}_{name}" if name is not None else str(int(count)))
        if new != old:
            renames.append(FolderRename(old, new))
    targets = [r.new for r in renames]
    olds = {r.old for r in renames}
    for rename in renames:
        if targets.count(rename.new) > 1 or (rename.new.exists() and rename.new not in olds):
            raise UserError(f"{rename.new}: already exists, so {rename.old.name} cannot take its name; "
                            "nothing was renamed")
    if olds & set(targets):
        raise UserError(f"{root}: the new names swap with old ones ({', '.join(r.line() for r in renames)}); "
                        "rename by hand or set folder_repeats instead; nothing was renamed")
    return tuple(renames)


def apply_renames(root: Path, renames: tuple[FolderRename, ...]) -> str | None:
    """Rename the folders (an undo record first); returns the undo id, None when nothing changes."""
    if not renames:
        return None
    undo_id, _entry = record_undo(root, "rename folders: " + ", ".join(r.line() for r in renames),
                                  moved=[(r.old, r.new) for r in renames])
    for rename in renames:
        os.rename(rename.old, rename.new)
    return undo_id


def undo_renames(root: Path) -> UndoResult:
    return undo_last(root)
