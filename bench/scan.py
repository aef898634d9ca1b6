"""Benchmark: scan and bucket 10,000 small generated images.

    .venv/bin/python bench/scan.py [--images 10000]

Prints the seconds for the scan and for bucketing, and the peak memory
(target: under 5 s on a 2-core machine). The images live in a temp folder.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from easytrain.data.buckets import BucketSettings, count_epoch  # noqa: E402
from easytrain.data.scan import scan_image_folder  # noqa: E402

SIZES = [(64, 64), (96, 64), (64, 96), (128, 72), (72, 128), (80, 80), (120, 90), (90, 120)]
FORMATS = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP")]


def make_dataset(root: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    encoded: dict[tuple, bytes] = {}
    for folder_index in range(4):
        (root / f"{folder_index + 1}_subject{folder_index}").mkdir()
    for index in range(count):
        size = rng.choice(SIZES)
        suffix, fmt = FORMATS[index % len(FORMATS)]
        key = (size, fmt)
        if key not in encoded:
            path = root / f"proto.{suffix}"
            Image.new("RGB", size, (rng.randrange(256), 80, 160)).save(path, fmt)
            encoded[key] = path.read_bytes()
            path.unlink()
        folder = root / f"{index % 4 + 1}_subject{index % 4}"
        (folder / f"img{index:05d}.{suffix}").write_bytes(encoded[key])
        if index % 10:
            (folder / f"img{index:05d}.txt").write_text(f"subject{index % 4}, tag{index % 37}, tag{index % 11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        make_dataset(root, args.images)
        print(f"generated {args.images} images in {time.perf_counter() - started:.1f} s")

        tracemalloc.start()
        started = time.perf_counter()
        scan = scan_image_folder(root)
        scanned = time.perf_counter() - started
        started = time.perf_counter()
        epoch = count_epoch(scan, None, BucketSettings(), batch_size=2)
        bucketed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    total = scanned + bucketed
    print(f"scan: {scan.total_images} images in {scanned:.2f} s; buckets: {len(epoch.bucket_counts)} "
          f"in {bucketed:.2f} s; total {total:.2f} s ({'OK' if total < 5 else 'OVER'} the 5 s target)")
    print(f"peak Python memory during scan+bucketing: {peak / 2**20:.1f} MiB; "
          f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
