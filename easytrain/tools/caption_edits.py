"""Caption edits as a plan you can look at, apply, and undo.

    plan = plan_edits(folder, TagEdits(add_trigger="alice", underscores=True))
    plan.changes          # files that would change, with the first line before and after
    undo_id = apply(plan) # writes atomically; the originals go to the undo folder first
    undo(folder)          # puts the last applied change back, byte for byte

Planning reads only; nothing on disk changes until `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from easytrain.errors import UserError
from easytrain.tools.batch_write import write_many
from easytrain.tools.caption_files import load_captions
from easytrain.tools.dataset_files import resolve_root
from easytrain.tools.tag_ops import TagEdits, edit_tags, is_kaomoji
from easytrain.tools.undo import UndoResult, record_undo, undo_last

__all__ = ["TagEdits", "CaptionChange", "EditPlan", "plan_edits", "apply", "undo"]


@dataclass(frozen=True)
class CaptionChange:
    path: Path
    before: str  # first line now
    after: str  # first line after the edit
    old_bytes: bytes
    new_bytes: bytes


@dataclass(frozen=True)
class EditPlan:
    root: Path
    edits: TagEdits
    changes: tuple[CaptionChange, ...]
    captions: int  # caption files looked at
    skipped: tuple[str, ...]  # files left untouched, each message naming the file (not UTF-8)
    head_underscores: int = 0  # captions whose protected first tags still hold underscores
    without_caption: int = 0  # images with no caption file: no edit reaches them

    @property
    def changed_files(self) -> list[Path]:
        return [change.path for change in self.changes]


def plan_edits(folder, edits: TagEdits, caption_extension: str = ".txt") -> EditPlan:
    """What `edits` would do to every caption file under `folder`; reads only."""
    root = resolve_root(folder)
    if edits.empty:
        raise UserError("no caption edit given: use --add-trigger, --remove, --replace, --merge, "
                        "--underscores or --dedupe")
    dataset = load_captions(root, caption_extension)
    changes, head_underscores = [], 0
    for caption in dataset.captions:
        tags = caption.tags
        new_tags = edit_tags(tags, edits)
        if edits.underscores and any("_" in tag and not is_kaomoji(tag)
                                     for tag in new_tags[: max(0, edits.keep_tokens)]):
            head_underscores += 1
        if new_tags == tags:
            continue
        after = ", ".join(new_tags)
        changes.append(CaptionChange(caption.path, caption.first_line, after, caption.raw,
                                     caption.with_first_line(after)))
    return EditPlan(root, edits, tuple(changes), len(dataset.captions), dataset.not_utf8, head_underscores,
                    len(dataset.without_caption))


def apply(plan: EditPlan) -> str | None:
    """Write the planned changes; returns the undo id (None when nothing changes).

    Refuses when a file changed on disk since the plan was made (plan again).
    """
    if not plan.changes:
        return None
    for change in plan.changes:
        try:
            current = change.path.read_bytes()
        except OSError as exc:
            raise UserError(f"{change.path}: cannot be read any more ({exc}); make the plan again") from None
        if current != change.old_bytes:
            raise UserError(f"{change.path}: changed on disk since the preview; nothing was written, "
                            "preview again")
    description = "tags: " + "; ".join(plan.edits.describe())
    undo_id, _entry = record_undo(plan.root, description, kept=plan.changed_files)
    write_many((change.path, change.new_bytes) for change in plan.changes)
    return undo_id


def undo(folder) -> UndoResult:
    """Put the last applied change under `folder` back (caption edits, image fixes, tagging alike)."""
    return undo_last(resolve_root(folder))
