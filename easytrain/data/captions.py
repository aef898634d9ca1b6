"""Caption files and tag shuffling (stdlib only)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


def read_caption(path: Path) -> tuple[str, list[str]]:
    """The caption (first line, stripped) and any warnings about the file.

    A file that is not UTF-8 is reported and read with replacement characters
    instead of being dropped.
    """
    warnings = []
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    utf16 = utf16_encoding(data)
    try:
        if utf16:
            text = data.decode(utf16)
            warnings.append(f"{path}: caption file is UTF-16, not UTF-8; it was read as UTF-16 (save it as UTF-8)")
        else:
            text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        warnings.append(f"{path}: caption file is not UTF-8; unreadable characters were replaced (save it as UTF-8)")
    lines = text.splitlines()
    caption = lines[0].strip() if lines else ""
    if not caption:
        warnings.append(f"{path}: caption is empty; the image trains without a caption")
    return caption, warnings


def utf16_encoding(data: bytes) -> str:
    """"utf-16" (with a byte-order mark), "utf-16-le"/"-be" (without: text whose every other byte is
    NUL, as Windows tools write it), or "" for anything else."""
    if len(data) < 2 or len(data) % 2:
        return ""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            data.decode("utf-16")
        except UnicodeDecodeError:  # bytes that merely start like a byte-order mark
            return ""
        return "utf-16"
    if b"\x00" not in data:
        return ""
    odd, even = data[1::2], data[0::2]
    if odd.count(0) >= 0.9 * len(odd) and not even.count(0):
        return "utf-16-le"
    if even.count(0) >= 0.9 * len(even) and not odd.count(0):
        return "utf-16-be"
    return ""


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags, stripped, empty ones dropped."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def clean_caption(caption: str) -> str:
    """The caption as it is trained without shuffling: tags stripped and rejoined."""
    if "," not in caption:
        return caption.strip()
    return ", ".join(split_tags(caption))


@dataclass(frozen=True)
class CaptionRules:
    """How one subset's captions change from epoch to epoch (kohya's caption options)."""
    shuffle: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""  # "|||": tags before it stay first, tags after a second one stay last
    dropout_rate: float = 0.0  # share of captions replaced by "" (caption_dropout_rate)
    dropout_every_n_epochs: int = 0  # every Nth epoch (1-based) trains without captions
    tag_dropout_rate: float = 0.0  # share of the movable tags left out (caption_tag_dropout_rate)

    @property
    def varies(self) -> bool:
        """True when the same caption can come out differently in different epochs."""
        return (self.shuffle or self.dropout_rate > 0 or self.dropout_every_n_epochs > 0
                or self.tag_dropout_rate > 0)


def subset_caption_rules(subset, *, shuffle: bool = False, keep_tokens: int = 0, keep_tokens_separator: str = "",
                         dropout_rate: float = 0.0, dropout_every_n_epochs: int = 0,
                         tag_dropout_rate: float = 0.0) -> CaptionRules:
    """A dataset subset's caption rules: its own settings (a dataset TOML's), else the run's."""
    def own(name, run_value):
        value = getattr(subset, name)
        return run_value if value is None else value

    return CaptionRules(
        shuffle=own("shuffle_caption", shuffle), keep_tokens=own("keep_tokens", keep_tokens),
        keep_tokens_separator=own("keep_tokens_separator", keep_tokens_separator),
        dropout_rate=own("caption_dropout_rate", dropout_rate),
        dropout_every_n_epochs=own("caption_dropout_every_n_epochs", dropout_every_n_epochs),
        tag_dropout_rate=own("caption_tag_dropout_rate", tag_dropout_rate))


def caption_dropped(rules: CaptionRules, epoch: int, rng: random.Random) -> bool:
    """Whether this caption trains as "" this time; ``epoch`` is 1-based, as kohya counts."""
    dropped = rules.dropout_rate > 0 and rng.random() < rules.dropout_rate
    every = rules.dropout_every_n_epochs
    return dropped or (every > 0 and epoch % every == 0)


def split_kept(caption: str, rules: CaptionRules) -> tuple[list[str], list[str], list[str]]:
    """(fixed first tags, movable tags, fixed last tags).

    With the separator in the caption it decides (and keep_tokens is not used):
    ``a, b ||| c, d ||| e`` -> ([a, b], [c, d], [e]). Otherwise the first
    keep_tokens tags are fixed.
    """
    separator = rules.keep_tokens_separator
    if separator and separator in caption:
        head, rest = caption.split(separator, 1)
        middle, _, tail = rest.partition(separator)
        return split_tags(head), split_tags(middle), split_tags(tail)
    tags = split_tags(caption)
    keep = max(0, rules.keep_tokens)
    return tags[:keep], tags[keep:], []


def process_caption(caption: str, rules: CaptionRules, epoch: int, rng: random.Random) -> str:
    """The caption as trained this time, in kohya's order: drop all, else shuffle, then drop tags.

    Kept tags (keep_tokens, or those outside the separators) are never shuffled
    or dropped. Randomness is drawn only for the options that are on, so
    captions without dropout come out as they always did.
    """
    if caption_dropped(rules, epoch, rng):
        return ""
    if not (rules.shuffle or rules.tag_dropout_rate > 0):
        if rules.keep_tokens_separator and rules.keep_tokens_separator in caption:
            head, middle, tail = split_kept(caption, rules)
            return ", ".join(head + middle + tail)
        return clean_caption(caption)
    head, middle, tail = split_kept(caption, rules)
    if rules.shuffle:
        rng.shuffle(middle)
    if rules.tag_dropout_rate > 0:
        middle = [tag for tag in middle if rng.random() >= rules.tag_dropout_rate]
    return ", ".join(head + middle + tail)
