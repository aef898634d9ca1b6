"""The captions step without the screen: top tags, the edits the person chose, apply and undo.

Everything on disk goes through easytrain.tools.caption_edits, so the wizard
writes exactly what `easytrain tags` would and keeps the same undo record.
Undo only takes back what this wizard run applied: an older change made from
the command line is left for `easytrain tags DIR --undo`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from easytrain.data.captions import split_tags
from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.tools import caption_edits
from easytrain.tools.caption_files import load_captions
from easytrain.tools.tag_ops import TagEdits
from easytrain.tools.trigger_check import check_trigger, likely_trigger
from easytrain.tools.undo import latest_entry

TOP_TAGS = 15


@dataclass(frozen=True)
class TagCounts:
    captions: int  # caption files read
    distinct: int
    top: tuple[tuple[str, int], ...]  # (tag, in how many captions), most frequent first


def count_tags(folder: Path, caption_extension: str = ".txt", top: int = TOP_TAGS) -> TagCounts:
    """Tags as the edits see them (case kept), each counted once per caption."""
    dataset = load_captions(folder, caption_extension)
    counts: Counter = Counter()
    for caption in dataset.captions:
        counts.update(set(caption.tags))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return TagCounts(len(dataset.captions), len(counts), tuple(ranked[:top]))


def chosen_edits(trigger: str, remove_marked: tuple[str, ...], remove_typed: str, underscores: bool,
                 keep_tokens: int = 1) -> TagEdits:
    """The TagEdits for what the screen holds; raises UserError for a trigger with a comma."""
    trigger = trigger.strip()
    if "," in trigger or (trigger and not any(ch.isalnum() for ch in trigger)):
        check_trigger(trigger, key="trigger tag")  # raises: the same words as `easytrain tags`
    remove = list(remove_marked)
    remove += [tag for tag in split_tags(remove_typed) if tag not in remove]
    return TagEdits(add_trigger=trigger or None, remove=tuple(remove), underscores=underscores,
                    keep_tokens=keep_tokens)


@dataclass
class CaptionStep:
    """One image folder's captions step; the wizard keeps it, so undo survives going back and forth."""
    folder: Path  # the image folder, resolved
    caption_extension: str = ".txt"
    applied: list[str] = field(default_factory=list)  # undo ids applied in this run, oldest first
    _tags: Optional[list] = field(default=None, repr=False)  # the captions' tags, read once per change

    def counts(self) -> TagCounts:
        return count_tags(self.folder, self.caption_extension)

    def trigger_lines(self, trigger: str) -> list[str]:
        """The trigger check of what is typed (nothing typed: the captions' usual first tag), against the
        captions as they are now."""
        if self._tags is None:
            self._tags = [c.tags for c in load_captions(self.folder, self.caption_extension).captions]
        if not trigger.strip():
            trigger = likely_trigger(self._tags) or ""
            if not trigger:
                return []
        try:
            return check_trigger(trigger, self._tags, key="trigger tag").lines()
        except UserError as exc:
            return [str(exc)]

    def plan(self, edits: TagEdits) -> Optional[caption_edits.EditPlan]:
        """What ``edits`` would change (reads only); None when no edit is chosen."""
        if edits.empty:
            return None
        return caption_edits.plan_edits(self.folder, edits, self.caption_extension)

    def apply(self, plan: caption_edits.EditPlan) -> Optional[str]:
        undo_id = caption_edits.apply(plan)
        self._tags = None
        if undo_id is not None:
            self.applied.append(undo_id)
        return undo_id

    @property
    def can_undo(self) -> bool:
        return bool(self.applied)

    def undo(self):
        """Take back the last change this run applied; UserError when something else came after it."""
        if not self.applied:
            raise UserError("nothing applied in this step to undo")
        latest = latest_entry(self.folder)
        if latest is None or latest.name != self.applied[-1]:
            raise UserError(f"{self.folder}: the last change there was not made here; "
                            f"use `{command('tags', str(self.folder), '--undo')}` to go back step by step")
        result = caption_edits.undo(self.folder)
        self._tags = None
        self.applied.pop()
        return result
