"""Which folders and files the preparation tools work on.

DIR is either the image folder above the `N_name` folders or one such folder.
Only names are listed here (no image decoding), so a report over 10,000
captions stays fast. The tools' own folders (`.easytrain`, `_excluded`) and
hidden entries are never part of the dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain.data.images import is_image_name
from easytrain.data.scan import (CACHE_DIR_NAME, SKIPPED_IMAGE_SUFFIXES, is_folder, is_regular_file, list_folder,
                                 normalise_extension)
from easytrain.errors import UserError

TOOLS_DIR_NAME = ".easytrain"
EXCLUDED_DIR_NAME = "_excluded"
# Animated GIFs are not training images, but the image tools look at them (to convert them).
EXTRA_IMAGE_SUFFIXES = frozenset(SKIPPED_IMAGE_SUFFIXES)
SKIPPED_FOLDERS = frozenset({TOOLS_DIR_NAME, EXCLUDED_DIR_NAME, CACHE_DIR_NAME})


@dataclass(frozen=True)
class ImageFile:
    path: Path
    caption_path: Optional[Path]  # None when the image has no caption file


@dataclass(frozen=True)
class DatasetFolder:
    path: Path
    images: tuple[ImageFile, ...]


def resolve_root(path) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"{root}: folder does not exist; give the image folder above the N_name "
                        "folders, or one N_name folder")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder; give the image folder above the N_name folders, "
                        "or one N_name folder")
    return root.resolve()


def dataset_folders(root: Path, caption_extension: str = ".txt", *, include_gif: bool = False,
                    ) -> list[DatasetFolder]:
    """The folders holding images: `root` itself if it has images, then each subfolder that has."""
    caption_extension = normalise_extension(caption_extension)
    folders = []
    top = _folder(root, caption_extension, include_gif)
    if top.images:
        folders.append(top)
    for entry in sorted(list_folder(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in SKIPPED_FOLDERS or not is_folder(entry):
            continue
        folder = _folder(Path(entry.path), caption_extension, include_gif)
        if folder.images:
            folders.append(folder)
    if not folders:
        raise UserError(f"{root}: no images found here or in its subfolders (png, jpg, jpeg, webp, bmp)")
    return folders


def is_tool_image_name(name: str, include_gif: bool) -> bool:
    if is_image_name(name):
        return True
    return include_gif and not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTRA_IMAGE_SUFFIXES


def _folder(path: Path, caption_extension: str, include_gif: bool) -> DatasetFolder:
    entries = [e for e in list_folder(path) if not e.name.startswith(".")]
    names = {e.name for e in entries if is_regular_file(e)}  # never a FIFO, a link loop or a folder
    images = []
    for entry in sorted(entries, key=lambda e: e.name):
        if not is_tool_image_name(entry.name, include_gif) or entry.name not in names:
            continue
        caption_name = os.path.splitext(entry.name)[0] + caption_extension
        caption = path / caption_name if caption_name in names else None
        images.append(ImageFile(Path(entry.path), caption))
    return DatasetFolder(path, tuple(images))


def relative_name(root: Path, path: Path) -> str:
    """A path as shown in reports: relative to DIR when inside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
