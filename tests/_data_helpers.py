"""Helpers for the data tests: generated images and caption files in tmp folders."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_image(path: Path, size=(64, 64), color=(200, 30, 30), mode="RGB", fmt=None, **save_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode in ("RGBA", "LA"):
        color = color if len(color) == len(mode) else tuple(color) + (255,)
    elif mode in ("L", "P"):
        color = color[0] if isinstance(color, tuple) else color
    elif mode == "CMYK":
        color = (0, 200, 200, 0)
    Image.new(mode, size, color).save(path, fmt, **save_args)
    return path


def make_subset(root: Path, folder: str, count: int, size=(64, 64), captions=True, caption="tag1, tag2, tag3",
                suffix="png") -> Path:
    """`count` images (and captions) in root/folder; image i has a distinct colour."""
    folder_path = root / folder
    folder_path.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        make_image(folder_path / f"img{index:03d}.{suffix}", size, ((index * 37) % 256, 100, 50))
        if captions:
            (folder_path / f"img{index:03d}.txt").write_text(caption, encoding="utf-8")
    return folder_path
