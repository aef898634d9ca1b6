"""`easytrain compare OUTPUT_FOLDER`: every saved file side by side, to pick the one to keep.

Prints one table (epoch/step, the training loss since the previous file, the
validation loss, the size, the sample images) and writes one picture,
``NAME_compare.png``: a row per saved file, a column per sample prompt, the
file with the lowest validation loss framed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.progress import format as fmt
from easytrain.review.grid import write_grid
from easytrain.review.saved_files import RunReview, SavedFile, review_run

HEADER = ("file", "epoch", "step", "train loss", "val loss", "size", "samples")


def run_compare(folder: str, name: Optional[str] = None) -> int:
    review = review_run(folder, name)
    print("\n".join(table_lines(review)))
    grid = write_grid(review, prompt_texts(review))
    if grid is not None:
        print(f"picture: {grid}")
    else:
        print("no sample images to compare; turn sample_images on to get a picture of each saved file")
    return 0


def table_lines(review: RunReview) -> list[str]:
    best = review.best
    rows = [_row(f, review.folder, best) for f in review.files]
    widths = [max(len(HEADER[i]), *(len(row[i]) for row in rows)) for i in range(len(HEADER) - 1)]
    lines = [f"{len(review.files)} saved files of {review.name} in {review.folder}:"]
    for row in (HEADER, *rows):
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    if best is not None:
        lines.append(f"lowest validation loss (*): {best.path.name} ({fmt.loss(best.validation_loss)})")
    return lines


def _row(f: SavedFile, folder: Path, best: Optional[SavedFile]) -> tuple[str, ...]:
    validation = fmt.loss(f.validation_loss)
    if best is not None and f.path == best.path:
        validation += " *"
    samples = " ".join(str(p.relative_to(folder)) if p is not None else "-" for p in f.samples) or "-"
    return (f.path.name, _number(f.epoch), _number(f.step), fmt.loss(f.training_loss), validation,
            _size(f.size), samples)


def _number(value: Optional[int]) -> str:
    return "-" if value is None else str(value)


def _size(num_bytes: int) -> str:
    if num_bytes >= 2**20:
        return f"{num_bytes / 2**20:.1f} MiB"
    return f"{num_bytes / 2**10:.0f} KiB"


def prompt_texts(review: RunReview) -> list[str]:
    """The sample prompts, from the run's copy of its answers; [] when they cannot be read any more."""
    from easytrain import answers as answers_file
    from easytrain.sampling.prompts import parse_prompts_file
    from easytrain.run_files import answers_copy_path

    try:
        answers = answers_file.load(answers_copy_path(review.folder, review.name), check_paths=False)
        prompts_file = answers.path("sample_prompts")
        if prompts_file is None or not prompts_file.is_file():
            return []
        return [p.prompt for p in parse_prompts_file(prompts_file)]
    except UserError:
        return []
