"""The trigger word check: what CLIP makes of a trigger, and how the captions use it.

With the real CLIP BPE shipped in easytrain/model/configs (through the light
`tokenizers` library, never torch or transformers): how many tokens the
trigger becomes, whether it is one token CLIP already knows well (a common
word, whose meaning the LoRA has to fight), whether the captions already use it
as a tag, first or elsewhere, and whether every caption has it. A rarer
spelling is suggested for a common word or one that splits into many pieces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional, Sequence

from easytrain.errors import UserError
from easytrain.tools.token_count import TOKENIZER_DIR, clip_tokenizer
from easytrain.wording import plural

# CLIP's vocabulary is in merge order, so a low id is a frequent piece of text: whole words
# below this id are everyday English (cat 2368, girl 1611, sword 19957 is past it).
COMMON_WORD_BELOW = 15000
MANY_TOKENS = 4  # this many pieces or more: the trigger costs caption length and learns slowly
SUGGESTIONS = 3
_VOWEL_SWAPS = (("a", "4"), ("e", "3"), ("i", "1"), ("o", "0"))


@dataclass(frozen=True)
class TriggerReport:
    trigger: str
    pieces: tuple[str, ...]  # CLIP's BPE pieces, `</w>` marking a word end
    common_word: bool  # one token CLIP knows well
    captions: int  # captions looked at
    with_trigger: int  # captions that have it as a tag
    first: int  # captions where it is the first tag
    suggestions: tuple[str, ...] = ()

    @property
    def tokens(self) -> int:
        return len(self.pieces)

    def lines(self) -> list[str]:
        shown = " ".join(p.replace("</w>", "") for p in self.pieces)
        noun = "token" if self.tokens == 1 else "tokens"
        lines = [f"trigger {self.trigger!r}: {self.tokens} CLIP {noun} ({shown})"]
        if self.common_word:
            lines.append("  a common word CLIP already knows: the LoRA has to fight its meaning")
        elif self.tokens >= MANY_TOKENS:
            lines.append(f"  {self.tokens} pieces: long for a trigger; 2-3 learn faster")
        if self.captions:
            if self.with_trigger == self.captions and self.first == self.captions:
                lines.append(f"  first tag of every caption ({self.captions})")
            elif self.with_trigger == 0:
                lines.append(f"  in none of the {plural(self.captions, 'caption')} yet (put it first in each)")
            else:
                lines.append(f"  a tag in {self.with_trigger} of {plural(self.captions, 'caption')}, first in {self.first}"
                             + ("; it is in every caption" if self.with_trigger == self.captions else "")
                             + (": an existing tag, so it already means something else here"
                                if self.first < self.with_trigger else ""))
        if self.suggestions:
            lines.append("  rarer spellings: " + ", ".join(self.suggestions))
        return lines


def check_trigger(trigger: str, captions: Sequence[Sequence[str]] = (), *, key: str = "trigger") -> TriggerReport:
    """Report on ``trigger`` against ``captions`` (each a list of tags).

    Raises UserError naming ``key`` for a trigger that is empty, holds a comma or has no letter or digit.
    """
    trigger = (trigger or "").strip()
    if not trigger:
        raise UserError(f"{key}: empty; give a word such as mychar")
    if not any(ch.isalnum() for ch in trigger):
        raise UserError(f"{key} {trigger!r}: only punctuation; a trigger needs letters or digits (e.g. mychar)")
    if "," in trigger:
        raise UserError(f"{key} {trigger!r}: one tag, without commas (e.g. mychar)")
    pieces, ids = _tokenize(trigger)
    common = len(ids) == 1 and pieces[0].endswith("</w>") and ids[0] < COMMON_WORD_BELOW
    folded = trigger.lower()
    with_trigger = sum(1 for tags in captions if any(t.lower() == folded for t in tags))
    first = sum(1 for tags in captions if tags and tags[0].lower() == folded)
    used = {t.lower() for tags in captions for t in tags}
    suggestions = rarer_spellings(trigger, used) if common or len(pieces) >= MANY_TOKENS else ()
    return TriggerReport(trigger, tuple(pieces), common, len(captions), with_trigger, first, suggestions)


def likely_trigger(captions: Iterable[Sequence[str]]) -> Optional[str]:
    """The first tag most captions start with (None without captions)."""
    counts: dict[str, int] = {}
    for tags in captions:
        if tags:
            counts[tags[0]] = counts.get(tags[0], 0) + 1
    return max(counts, key=lambda tag: (counts[tag], tag)) if counts else None


def rarer_spellings(trigger: str, used: set[str] = frozenset()) -> tuple[str, ...]:
    """Up to SUGGESTIONS spellings of ``trigger`` that CLIP splits into 2-3 pieces and no caption uses."""
    word = re.sub(r"[^0-9a-z]+", "", trigger.lower()) or "trigger"
    word = word[:8]
    candidates = [word[0] + re.sub(r"[aeiou]", "", word[1:])]
    for vowel, digit in _VOWEL_SWAPS:
        if vowel in word:
            candidates.append(word.replace(vowel, digit, 1))
    candidates += [word + "x", "zk" + word, word[:4] + "qz"]
    chosen: list[str] = []
    for candidate in candidates:
        if candidate in chosen or candidate in used or candidate == word or len(candidate) < 3:
            continue
        pieces, _ids = _tokenize(candidate)
        if 2 <= len(pieces) <= 3:
            chosen.append(candidate)
        if len(chosen) == SUGGESTIONS:
            break
    return tuple(chosen)


def _tokenize(text: str) -> tuple[list[str], list[int]]:
    encoding = _tokenizer().encode(text, add_special_tokens=False)
    return list(encoding.tokens), list(encoding.ids)


@lru_cache(maxsize=1)
def _tokenizer():
    try:
        return clip_tokenizer(TOKENIZER_DIR)
    except Exception as exc:  # the files or the `tokenizers` package missing, or unreadable
        raise UserError(f"the trigger check needs the CLIP tokenizer files in {TOKENIZER_DIR} and the "
                        f"`tokenizers` package ({exc})") from None
