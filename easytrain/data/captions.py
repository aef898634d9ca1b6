"""Caption files and tag shuffling (stdlib only)."""

from __future__ import annotations

import random
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
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        warnings.append(f"{path}: caption file is not UTF-8; unreadable characters were replaced (save it as UTF-8)")
    lines = text.splitlines()
    caption = lines[0].strip() if lines else ""
    if not caption:
        warnings.append(f"{path}: caption is empty; the image trains without a caption")
    return caption, warnings


def split_tags(caption: str) -> list[str]:
    """Comma-separated tags, stripped, empty ones dropped."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def shuffle_tags(caption: str, keep_tokens: int, rng: random.Random) -> str:
    """The caption with its first `keep_tokens` tags in place and the rest shuffled."""
    tags = split_tags(caption)
    keep = max(0, keep_tokens)
    head, tail = tags[:keep], tags[keep:]
    rng.shuffle(tail)
    return ", ".join(head + tail)


def clean_caption(caption: str) -> str:
    """The caption as it is trained without shuffling: tags stripped and rejoined."""
    if "," not in caption:
        return caption.strip()
    return ", ".join(split_tags(caption))
