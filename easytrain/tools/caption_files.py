"""Reading caption files so that a rewrite changes only what an edit changed.

Training uses a caption file's first line; an edit rewrites that line and
keeps everything else (a UTF-8 byte-order mark, the line ending, later lines)
byte for byte. A file that is not UTF-8 is never rewritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain.data.captions import split_tags, utf16_encoding
from easytrain.tools.dataset_files import DatasetFolder, ImageFile, dataset_folders

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CaptionFile:
    path: Path
    raw: bytes
    first_line: str  # without its line ending
    rest: str  # the line ending after the first line and everything after it

    @property
    def tags(self) -> list[str]:
        return split_tags(self.first_line)

    def with_first_line(self, line: str) -> bytes:
        prefix = BOM if self.raw.startswith(BOM) else b""
        return prefix + (line + self.rest).encode("utf-8")


class NotUtf8(Exception):
    pass


def read_caption_file(path: Path) -> CaptionFile:
    raw = path.read_bytes()
    body = raw[len(BOM):] if raw.startswith(BOM) else raw
    if utf16_encoding(body):  # NUL between the letters would be edited as text: leave it alone
        raise NotUtf8(f"{path}: caption file is UTF-16, not UTF-8; left untouched, save it as UTF-8 to edit it")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(f"{path}: caption file is not UTF-8 (byte {exc.start}); left untouched, "
                      "save it as UTF-8 to edit it") from None
    end = _line_end(text)
    return CaptionFile(path, raw, text[:end], text[end:])


def _line_end(text: str) -> int:
    for index, char in enumerate(text):
        if char in "\r\n":
            return index
    return len(text)


@dataclass(frozen=True)
class CaptionedImage:
    folder: Path
    image: Path
    caption_path: Optional[Path]  # None: the image has no caption file
    caption: Optional[CaptionFile]  # None: no caption file, or one that is not UTF-8


@dataclass(frozen=True)
class DatasetCaptions:
    root: Path
    folders: tuple[DatasetFolder, ...]
    images: tuple[CaptionedImage, ...]
    not_utf8: tuple[str, ...]  # one message per file, naming it

    @property
    def captions(self) -> list[CaptionFile]:
        return [item.caption for item in self.images if item.caption is not None]

    @property
    def without_caption(self) -> list[Path]:
        return [item.image for item in self.images if item.caption_path is None]


def load_captions(root: Path, caption_extension: str = ".txt") -> DatasetCaptions:
    folders = dataset_folders(root, caption_extension)
    images, not_utf8 = [], []
    for folder in folders:
        for image in folder.images:
            images.append(CaptionedImage(folder.path, image.path, image.caption_path, _read(image, not_utf8)))
    return DatasetCaptions(root, tuple(folders), tuple(images), tuple(not_utf8))


def _read(image: ImageFile, not_utf8: list[str]) -> Optional[CaptionFile]:
    if image.caption_path is None:
        return None
    try:
        return read_caption_file(image.caption_path)
    except NotUtf8 as problem:
        not_utf8.append(str(problem))
        return None
