"""The comparison picture: one row per saved file, one column per sample prompt (Pillow only).

Each row starts with the file's name, epoch/step and validation loss; the row
of the file with the lowest validation loss is framed and labelled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw

from easytrain.review.saved_files import RunReview, SavedFile
from easytrain.sampling.sheet import caption_font, draw_text_line, line_height, thumbnail, wrap_text

PADDING = 8
LABEL_WIDTH = 220
HEADER_LINES = 3
BACKGROUND = (255, 255, 255)
MISSING = (236, 236, 236)
BEST = (30, 150, 60)
TEXT = (20, 20, 20)


def grid_path(review: RunReview) -> Path:
    return review.folder / f"{review.name}_compare.png"


def render_grid(review: RunReview, prompts: Sequence[str] = ()) -> Optional[Image.Image]:
    """The grid, or None when no saved file has a sample image."""
    rows = [f for f in review.files if any(f.samples)]
    if not rows:
        return None
    thumbs = {(r, c): _thumb(path) for r, f in enumerate(rows) for c, path in enumerate(f.samples)}
    cell_w = max([t.width for t in thumbs.values() if t is not None] + [96])
    cell_h = max([t.height for t in thumbs.values() if t is not None] + [96])
    font = caption_font()
    line = line_height(font)
    cell_h = max(cell_h, 4 * line)             # room for the row's label
    header_h = HEADER_LINES * line + PADDING
    columns = review.prompts
    width = LABEL_WIDTH + columns * (cell_w + PADDING) + PADDING
    height = header_h + len(rows) * (cell_h + PADDING) + PADDING
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)

    for column in range(columns):
        text = prompts[column] if column < len(prompts) else f"prompt {column + 1}"
        x = LABEL_WIDTH + column * (cell_w + PADDING)
        for number, part in enumerate(wrap_text(text, font, cell_w, HEADER_LINES)):
            draw_text_line(draw, (x, PADDING + number * line), part, font)

    best = review.best
    for r, saved in enumerate(rows):
        y = header_h + r * (cell_h + PADDING)
        is_best = best is not None and saved.path == best.path
        for number, part in enumerate(_row_label(saved, is_best)):
            for piece in wrap_text(part, font, LABEL_WIDTH - 2 * PADDING, 1):
                draw_text_line(draw, (PADDING, y + number * line), piece, font)
        for column in range(columns):
            x = LABEL_WIDTH + column * (cell_w + PADDING)
            thumb = thumbs.get((r, column))
            if thumb is None:
                draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=MISSING)
            else:
                image.paste(thumb, (x + (cell_w - thumb.width) // 2, y + (cell_h - thumb.height) // 2))
        if is_best:
            draw.rectangle([2, y - PADDING // 2, width - 3, y + cell_h + PADDING // 2 - 1], outline=BEST, width=3)
    return image


def _row_label(saved: SavedFile, is_best: bool) -> list[str]:
    where = []
    if saved.epoch is not None:
        where.append(f"epoch {saved.epoch}")
    if saved.step is not None:
        where.append(f"step {saved.step}")
    lines = [saved.path.name, ", ".join(where)]
    if saved.validation_loss is not None:
        lines.append(f"validation loss {saved.validation_loss:.4f}")
    if is_best:
        lines.append("lowest validation loss")
    return lines


def _thumb(path: Optional[Path]) -> Optional[Image.Image]:
    if path is None:
        return None
    try:
        with Image.open(path) as picture:
            return thumbnail(picture)
    except OSError:          # a sample deleted or cut short: an empty cell
        return None


def write_grid(review: RunReview, prompts: Sequence[str] = ()) -> Optional[Path]:
    """Write the grid next to the run's files; its path, or None when there is nothing to show."""
    import io

    from easytrain.fsutil import atomic_write_bytes

    picture = render_grid(review, prompts)
    if picture is None:
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    path = grid_path(review)
    atomic_write_bytes(path, buffer.getvalue())
    return path
