"""Dataset preparation speed: the caption report and an edit on 10,000 captions, and
perceptual hashing of 10,000 small images over the CPU cores. Prints the figures.

    .venv/bin/python bench/prep.py [--captions 10000] [--images 10000] [--workers N]

Targets: report and edit each under 2 s for 10,000 captions.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("1girl", "solo", "long_hair", "short hair", "smile", "blue eyes", "looking at viewer", "shirt", "skirt",
         "outdoors", "sky", "cloud", "tree", "standing", "holding", "open mouth", "blush", "brown_hair",
         "jewelry", "^_^", "simple background", "white background", "upper body", "full body", "hat")


def make_captions(root: Path, count: int) -> None:
    from PIL import Image

    rng = random.Random(0)
    root.mkdir(parents=True)
    pixel = root / "pixel.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(pixel)
    data = pixel.read_bytes()
    pixel.unlink()
    for folder_index in range(4):
        folder = root / f"{folder_index + 1}_set{folder_index}"
        folder.mkdir(parents=True)
        for i in range(folder_index, count, 4):
            (folder / f"{i:05d}.png").write_bytes(data)
            tags = rng.sample(WORDS, rng.randint(8, 20)) + [f"extra{i % 500}"]
            (folder / f"{i:05d}.txt").write_text(", ".join(tags), encoding="utf-8")


def make_images(root: Path, count: int) -> None:
    from PIL import Image

    rng = random.Random(1)
    folder = root / "1_pics"
    folder.mkdir(parents=True)
    for i in range(count):
        grid = Image.new("RGB", (6, 6))
        grid.putdata([tuple(rng.randint(0, 255) for _ in range(3)) for _ in range(36)])
        grid.resize((96, 96), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.jpg", quality=85)


def _settle() -> None:
    """Flush the freshly made files first: a real dataset is not still sitting in the write cache."""
    if hasattr(os, "sync"):
        os.sync()


def timed(label: str, function):
    start = time.perf_counter()
    result = function()
    print(f"{label}: {time.perf_counter() - start:.2f} s", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--dir", default=None, help="make the test data here (e.g. /dev/shm to leave the disk out)")
    args = parser.parse_args()

    from easytrain.tools.caption_edits import TagEdits, apply, plan_edits, undo
    from easytrain.tools.caption_report import caption_report
    from easytrain.tools.image_report import image_report

    with tempfile.TemporaryDirectory(prefix="easytrain-bench-", dir=args.dir) as tmp:
        captions = Path(tmp) / "captions"
        make_captions(captions, args.captions)
        _settle()
        print(f"{args.captions} captions in {captions}")
        report = timed(f"caption report ({args.captions} captions, token counts included)",
                       lambda: caption_report(captions))
        print(f"  {report.distinct_tags} tags, {len(report.too_long[75])} over 75 tokens, "
              f"token counts {'exact' if report.tokens_exact else 'estimated'}")
        edits = TagEdits(add_trigger="mytrig", remove=("hat",), replace=(("skirt", "long skirt"),),
                         underscores=True, dedupe=True)

        def edit():
            plan = plan_edits(captions, edits)
            apply(plan)
            return plan

        plan = timed("edit: plan + apply (trigger, remove, replace, underscores, dedupe)", edit)
        print(f"  {len(plan.changes)} files changed")
        timed("undo", lambda: undo(captions))

        images = Path(tmp) / "images"
        make_images(images, args.images)
        _settle()
        workers = args.workers or os.cpu_count()
        result = timed(f"image report with perceptual hashes ({args.images} images of 96x96, {workers} workers)",
                       lambda: image_report(images, workers=workers))
        print(f"  {len(result.near_duplicates)} near-duplicate groups, {len(result.exact_duplicates)} exact")
        if args.images <= 20_000:
            timed("the same on 1 worker", lambda: image_report(images, workers=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
