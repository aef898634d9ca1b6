"""The repeats step without the screen: the suggestion for the wizard's answers, and folder renames.

Renames go through easytrain.tools.repeats_rename (the same undo record as the
dataset tools). Undo only takes back what this wizard run renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from easytrain.answers import Answers
from easytrain.data.scan import DatasetScan, apply_repeats
from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.plan import bucket_settings
from easytrain.repeats import RepeatsSuggestion, suggest_repeats
from easytrain.tools import repeats_rename
from easytrain.tools.undo import latest_entry


def suggestion_for(values: Mapping[str, Any], train: DatasetScan, reg: Optional[DatasetScan]) -> RepeatsSuggestion:
    """The suggestion for the answers so far (raises UserError or ValueError when there is none)."""
    train, reg = apply_repeats(train, reg, values.get("folder_repeats"))
    return suggest_repeats(train, reg, bucket_settings(Answers(values)), values.get("batch_size") or 1,
                           epochs_now=values.get("epochs") or 1, length_by=values.get("length_by") or "epochs",
                           max_steps=values.get("max_steps"))


@dataclass
class RenameStep:
    """One image folder's renames in this wizard run, so Ctrl+Z survives going back and forth."""
    folder: Path  # the image folder, resolved
    applied: list[str] = field(default_factory=list)  # undo ids, oldest first

    def apply(self, renames) -> None:
        undo_id = repeats_rename.apply_renames(self.folder, renames)
        if undo_id is not None:
            self.applied.append(undo_id)

    @property
    def can_undo(self) -> bool:
        return bool(self.applied)

    def undo(self):
        if not self.applied:
            raise UserError("nothing renamed in this step to undo")
        latest = latest_entry(self.folder)
        if latest is None or latest.name != self.applied[-1]:
            raise UserError(f"{self.folder}: the last change there was not made here; "
                            f"use `{command('images', str(self.folder), '--undo')}` to go back step by step")
        result = repeats_rename.undo_renames(self.folder)
        self.applied.pop()
        return result
