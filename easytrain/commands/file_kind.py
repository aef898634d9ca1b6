"""What a file really is, from its first bytes: for a base model that is not the checkpoint its name says.

A text file renamed to `.ckpt`, a web page saved instead of a download, a picture: `check` reads a few
bytes and names the kind, so `train` never gets as far as torch's unpickler to find out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

SNIFF_BYTES = 512

_MAGIC = (
    (b"PK\x03\x04", None),                       # zip: PyTorch's own .ckpt format (checked by detect)
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF file (WebP image or audio)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "a program (ELF)"),
    (b"MZ", "a Windows program"),
)


def legacy_ckpt_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a PyTorch .ckpt in the legacy (pickle) format, or None when it may be one.

    A legacy torch file is a pickle: it starts with the PROTO opcode (0x80). Zip-format files are left
    to the detection, which reads their key names.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "the file is empty"
    if head.startswith(b"\x80"):
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return None if kind is None else f"this is {kind}, not a checkpoint"
    text = _as_text(head)
    if text is not None:
        lowered = text.lstrip().lower()
        if lowered.startswith(("<!doctype html", "<html")):
            return "this is a web page (HTML), not a checkpoint: probably a download that failed or a login page"
        if lowered.startswith("version https://git-lfs"):
            return "this is a Git LFS pointer, not the model: run `git lfs pull` where you cloned it"
        first = " ".join(text.split())[:40]
        return f"this is a text file ({first!r}...), not a checkpoint"
    return "this is not a PyTorch checkpoint (it is neither a zip nor a pickle file)"


def _as_text(head: bytes) -> Optional[str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # a multi-byte character cut at the end of the read
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    printable = sum(1 for c in text if c.isprintable() or c in "\r\n\t")
    return text if text and printable >= 0.95 * len(text) else None
