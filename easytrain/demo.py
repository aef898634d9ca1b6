"""The demo dataset: small pictures of coloured shapes with captions.

Made in code (pillow only) so the demo and the tests need no downloads. The
committed copy under answers/demo/ was made by ``make_demo_dataset``; the
`demo` command re-creates it when it is missing.
"""

from __future__ import annotations

import random
from pathlib import Path

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle")
SIZES = ((256, 256), (256, 256), (320, 192), (192, 320))
DEMO_FOLDER = "5_shapes"
# answers/demo.json: 40 steps at 128 px, batch 4. Measured: 27 s of CPU time for the whole run (one thread,
# torch CPU build, AMD EPYC; median of 3), so about half a minute on two quiet CPU cores.
DEMO_ESTIMATE = "about half a minute on two CPU cores (longer while other programs keep them busy)"
TRIGGER = "shapes"


def draw_shape(shape: str, colour: tuple[int, int, int], size: tuple[int, int], rng: random.Random):
    from PIL import Image, ImageDraw

    width, height = size
    background = tuple(rng.randint(200, 255) for _ in range(3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    side = rng.randint(min(size) // 3, min(size) * 2 // 3)
    x = rng.randint(0, width - side)
    y = rng.randint(0, height - side)
    box = (x, y, x + side, y + side)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(x + side // 2, y), (x, y + side), (x + side, y + side)], fill=colour)
    return image


def make_demo_dataset(root: Path, count: int = 16, seed: int = 0) -> Path:
    """Write ``count`` images with captions to ``root/5_shapes``; returns ``root``."""
    rng = random.Random(seed)
    folder = Path(root) / DEMO_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        colour_name = list(COLOURS)[index % len(COLOURS)]
        shape = SHAPES[index % len(SHAPES)]
        size = SIZES[index % len(SIZES)]
        image = draw_shape(shape, COLOURS[colour_name], size, rng)
        stem = f"shape_{index:02d}"
        image.save(folder / f"{stem}.png", optimize=True)
        (folder / f"{stem}.txt").write_text(f"{TRIGGER}, {colour_name} {shape}, simple background\n", encoding="utf-8")
    return Path(root)


def ensure_demo_dataset(root: Path) -> bool:
    """Create the demo images if the folder has none. True when it made them."""
    folder = Path(root) / DEMO_FOLDER
    if folder.is_dir() and any(folder.glob("*.png")):
        return False
    make_demo_dataset(root)
    return True


def demo_answers_in(demo_answers: Path, output: Path) -> Path:
    """A copy of the demo's answers writing into ``output`` (saved there as demo.json); returns its path.

    The copy's data paths are absolute, so it trains the same images from any folder.
    """
    from easytrain import answers as answers_file
    from easytrain.errors import UserError

    target = Path(output).expanduser().absolute()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output: {target}: cannot make this folder ({exc.strerror or exc})") from None
    answers = answers_file.load(demo_answers).absolute().replace(output_folder=str(target))
    return answers_file.save(answers, target / "demo.json")
