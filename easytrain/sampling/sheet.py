"""One picture per epoch with every sample side by side and its prompt underneath (Pillow only)."""

from __future__ import annotations

import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

THUMB = 384          # longest side of an image on the sheet; samples are never enlarged
PADDING = 8
MIN_CELL_WIDTH = 160  # tiny samples still get a readable caption column
FONT_SIZE = 14
CAPTION_LINES = 4
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)


def contact_sheet(images: Sequence[Image.Image], captions: Sequence[str]) -> Image.Image:
    """A grid of roughly square shape; each cell holds a thumbnail and its wrapped caption."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    if len(images) != len(captions):
        raise ValueError("one caption per image")
    thumbs = [thumbnail(image) for image in images]
    font = caption_font()
    line_h = line_height(font)
    cell_w = max(max(t.width for t in thumbs), MIN_CELL_WIDTH)
    image_h = max(t.height for t in thumbs)
    wrapped = [wrap_text(caption, font, cell_w, CAPTION_LINES) for caption in captions]
    cell_h = image_h + PADDING + max(1, max(len(lines) for lines in wrapped)) * line_h

    columns = math.ceil(math.sqrt(len(thumbs)))
    rows = math.ceil(len(thumbs) / columns)
    sheet = Image.new("RGB", (columns * (cell_w + PADDING) + PADDING, rows * (cell_h + PADDING) + PADDING), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for position, (thumb, lines) in enumerate(zip(thumbs, wrapped)):
        row, column = divmod(position, columns)
        x = PADDING + column * (cell_w + PADDING)
        y = PADDING + row * (cell_h + PADDING)
        sheet.paste(thumb, (x + (cell_w - thumb.width) // 2, y))
        text_y = y + image_h + PADDING
        for line in lines:
            draw_text_line(draw, (x, text_y), line, font)
            text_y += line_h
    return sheet


def wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last kept line ends with an ellipsis if text was cut."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and _text_width(font, candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
        while _text_width(font, current) > width and len(current) > 1:   # one word wider than the cell
            cut = _fit(current, font, width)
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and _text_width(font, last + "…") > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last + "…"]
    return lines


def _fit(text: str, font, width: int) -> int:
    cut = len(text)
    while cut > 1 and _text_width(font, text[:cut]) > width:
        cut -= 1
    return cut


def draw_text_line(draw, xy, text: str, font) -> None:
    try:
        draw.text(xy, text, fill=TEXT_COLOUR, font=font)
    except UnicodeEncodeError:  # the bitmap fallback font knows Latin-1 only
        draw.text(xy, text.encode("latin-1", "replace").decode("latin-1"), fill=TEXT_COLOUR, font=font)


def thumbnail(image: Image.Image) -> Image.Image:
    thumb = image.convert("RGB")
    if max(thumb.size) > THUMB:
        thumb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    return thumb


def caption_font():
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def _text_width(font, text: str) -> float:
    return font.getlength(text)


def line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ayg|")
    return int(bottom - min(top, 0)) + 3
