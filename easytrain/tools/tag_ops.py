"""Edits on one caption's tag list. Pure functions, no files.

Tags compare after trimming (case and inner spaces matter). The first
`keep_tokens` tags of the edited caption are its head (usually the trigger):
the edits that name no tag (`underscores`, `dedupe`) leave the head as it is;
the edits that name a tag (`remove`, `replace`, `merge`, `add_trigger`) apply
wherever that tag is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from easytrain.data.captions import split_tags
from easytrain.errors import UserError

# A kaomoji such as ^_^ >_< o_o 0_0 x_x ;_; has no two letters or digits in a
# row; a real tag with underscores (long_hair, 1_girl) always has.
_WORD = re.compile(r"[^\W_]{2,}")


@dataclass(frozen=True)
class TagEdits:
    add_trigger: str | None = None
    remove: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()  # (old, new)
    merge: tuple[tuple[tuple[str, ...], str], ...] = ()  # (sources, target)
    underscores: bool = False
    dedupe: bool = False
    keep_tokens: int = 1

    @property
    def empty(self) -> bool:
        return not (self.add_trigger or self.remove or self.replace or self.merge or self.underscores
                    or self.dedupe)

    def describe(self) -> list[str]:
        lines = []
        if self.remove:
            lines.append("remove " + ", ".join(self.remove))
        for old, new in self.replace:
            lines.append(f"replace {old} -> {new}")
        for sources, target in self.merge:
            lines.append(f"merge {', '.join(sources)} -> {target}")
        if self.underscores:
            lines.append("underscores to spaces (kaomoji kept)")
        if self.dedupe:
            lines.append("drop repeated tags")
        if self.add_trigger:
            lines.append(f"trigger '{self.add_trigger}' first")
        return lines


def is_kaomoji(tag: str) -> bool:
    return "_" in tag and not _WORD.search(tag)


def underscores_to_spaces(tag: str) -> str:
    return tag if is_kaomoji(tag) else tag.replace("_", " ")


def edit_tags(tags: list[str], edits: TagEdits) -> list[str]:
    """The tag list after all edits, in a fixed order: remove, replace, merge, the trigger first, then
    underscores and dedupe, which leave the head alone: the first `keep_tokens` tags of that final order
    (what training keeps in front), so a tag the trigger pushed out of the head is edited like any other."""
    result = list(tags)
    if edits.remove:
        removed = set(edits.remove)
        result = [tag for tag in result if tag not in removed]
    for old, new in edits.replace:
        result = _rename(result, {old}, new)
    for sources, target in edits.merge:
        result = _rename(result, set(sources), target)
    if edits.add_trigger:
        trigger = edits.add_trigger
        if not result or result[0] != trigger:
            result = [trigger] + [tag for tag in result if tag != trigger]
    keep = max(0, edits.keep_tokens)
    if edits.underscores:
        result = [tag if index < keep else underscores_to_spaces(tag) for index, tag in enumerate(result)]
    if edits.dedupe:
        seen: set[str] = set()
        kept = []
        for index, tag in enumerate(result):
            if tag in seen and index >= keep:
                continue
            seen.add(tag)
            kept.append(tag)
        result = kept
    return result


def _rename(tags: list[str], sources: set[str], target: str) -> list[str]:
    """Sources become `target` at the first place any of them (or the target) stands; later copies go."""
    if not any(tag in sources for tag in tags):
        return tags
    renamed, placed = [], False
    for tag in tags:
        if tag in sources or tag == target:
            if placed:
                continue
            placed = True
            renamed.append(target)
        else:
            renamed.append(tag)
    return renamed


def repeated_tags(tags: list[str]) -> list[str]:
    seen, repeated = set(), []
    for tag in tags:
        if tag in seen and tag not in repeated:
            repeated.append(tag)
        seen.add(tag)
    return repeated


# ---- parsing the command-line forms -------------------------------------------------

def parse_tag_list(values) -> tuple[str, ...]:
    """`--remove "a, b" c` -> ("a", "b", "c")."""
    tags: list[str] = []
    for value in values or ():
        tags.extend(split_tags(value))
    return tuple(tags)


def parse_replace(value: str) -> tuple[str, str]:
    old, sep, new = value.partition("=")
    old, new = old.strip(), new.strip()
    if not sep or not old or not new or "," in old or "," in new:
        raise UserError(f"--replace {value!r}: write it as OLD=NEW with one tag on each side, "
                        "e.g. --replace \"blonde hair=yellow hair\"")
    return old, new


def parse_merge(value: str) -> tuple[tuple[str, ...], str]:
    left, sep, right = value.rpartition("=")
    sources, target = split_tags(left), right.strip()
    if not sep or not sources or not target or "," in target:
        raise UserError(f"--merge {value!r}: write it as \"a, b, c = a\" (the tags on the left become "
                        "the one tag on the right)")
    return tuple(sources), target


def check_tag(tag: str, option: str) -> str:
    tag = tag.strip()
    if not tag or "," in tag:
        raise UserError(f"{option} {tag!r}: give one tag (no commas), e.g. {option} mychar")
    return tag
