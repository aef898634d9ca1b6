"""The `easytrain images DIR` report: formats, sizes, transparency, animation, colour
modes, unreadable files, exact and near duplicates.

Decoding and hashing run over the CPU cores (ProcessPoolExecutor); grouping
near duplicates compares every pair of 64-bit hashes with numpy.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from easytrain.data.buckets import BucketSettings, assign_bucket, make_buckets
from easytrain.tools.dataset_files import DatasetFolder, dataset_folders, relative_name, resolve_root
from easytrain.tools.image_inspect import ImageInfo, inspect_image
from easytrain.wording import plural

DEFAULT_THRESHOLD = 6  # bits of 64; resized or re-compressed copies land at 0-4
POOL_MIN_IMAGES = 32  # below this, starting worker processes costs more than it saves


@dataclass(frozen=True)
class ImageReport:
    root: Path
    folders: tuple[DatasetFolder, ...]
    infos: tuple[ImageInfo, ...]
    resolution: int
    threshold: int
    formats: dict[str, int]
    upscaled: tuple[ImageInfo, ...]  # smaller than the training resolution: buckets would enlarge them
    transparent: tuple[ImageInfo, ...]
    animated: tuple[ImageInfo, ...]
    gifs: tuple[ImageInfo, ...]  # GIF files: training skips them unless converted
    colour: dict[str, tuple[ImageInfo, ...]]  # "greyscale" | "cmyk" | "palette" -> images
    unreadable: tuple[ImageInfo, ...]
    exact_duplicates: tuple[tuple[ImageInfo, ...], ...]
    near_duplicates: tuple[tuple[ImageInfo, ...], ...]

    def captions(self) -> dict[Path, Optional[Path]]:
        """Image path -> its caption file (None when it has none)."""
        return {item.path: item.caption_path for folder in self.folders for item in folder.images}


def inspect_all(paths: list[Path], workers: Optional[int] = None,
                on_progress: Optional[Callable[[int, int], None]] = None) -> list[ImageInfo]:
    total = len(paths)
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or total < POOL_MIN_IMAGES:
        infos = []
        for path in paths:
            infos.append(inspect_image(path))
            if on_progress:
                on_progress(len(infos), total)
        return infos
    chunk = max(1, min(64, total // (workers * 8)))
    infos = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for info in pool.map(inspect_image, paths, chunksize=chunk):
            infos.append(info)
            if on_progress and (len(infos) % 100 == 0 or len(infos) == total):
                on_progress(len(infos), total)
    return infos


def image_report(folder, *, resolution: int = 512, threshold: int = DEFAULT_THRESHOLD,
                 workers: Optional[int] = None, caption_extension: str = ".txt",
                 on_progress: Optional[Callable[[int, int], None]] = None) -> ImageReport:
    root = resolve_root(folder)
    folders = dataset_folders(root, caption_extension, include_gif=True)
    paths = [image.path for f in folders for image in f.images]
    infos = inspect_all(paths, workers, on_progress)
    readable = [i for i in infos if i.readable]

    formats = Counter(i.format or "?" for i in readable)
    if len(readable) < len(infos):
        formats["unreadable"] = len(infos) - len(readable)
    settings = BucketSettings(resolution=(resolution, resolution))
    buckets = make_buckets(settings)
    upscaled = [i for i in readable if _upscaled(i, settings, buckets)]
    colour: dict[str, list[ImageInfo]] = {}
    for info in readable:
        if info.colour_kind:
            colour.setdefault(info.colour_kind, []).append(info)
    exact = exact_duplicate_groups(readable)
    near = near_duplicate_groups(readable, threshold, exact)
    return ImageReport(
        root=root, folders=tuple(folders), infos=tuple(infos), resolution=resolution, threshold=threshold,
        formats=dict(formats.most_common()), upscaled=tuple(upscaled),
        transparent=tuple(i for i in readable if i.transparent),
        animated=tuple(i for i in readable if i.animated),
        gifs=tuple(i for i in readable if i.format == "GIF"),
        colour={kind: tuple(items) for kind, items in colour.items()},
        unreadable=tuple(i for i in infos if not i.readable),
        exact_duplicates=exact, near_duplicates=near)


def _upscaled(info: ImageInfo, settings: BucketSettings, buckets) -> bool:
    _bucket, (resized_w, _resized_h) = assign_bucket(info.width, info.height, settings, buckets)
    return resized_w > info.width


def exact_duplicate_groups(infos: list[ImageInfo]) -> tuple[tuple[ImageInfo, ...], ...]:
    by_hash: dict[str, list[ImageInfo]] = {}
    for info in infos:
        by_hash.setdefault(info.sha256, []).append(info)
    return tuple(tuple(group) for group in by_hash.values() if len(group) > 1)


def near_duplicate_groups(infos: list[ImageInfo], threshold: int,
                          exact: tuple[tuple[ImageInfo, ...], ...] = ()) -> tuple[tuple[ImageInfo, ...], ...]:
    """Groups of images whose perceptual hashes differ in at most `threshold` bits.

    Exact copies count as one image here (they are reported as exact duplicates),
    so a group shows only when it holds at least two different files' contents.
    """
    seen: dict[str, int] = {}
    unique: list[ImageInfo] = []
    for info in infos:
        if info.sha256 not in seen:
            seen[info.sha256] = len(unique)
            unique.append(info)
    if len(unique) < 2:
        return ()
    hashes = np.array([info.phash for info in unique], dtype=np.uint64)
    parent = list(range(len(unique)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    block = 512
    for start in range(0, len(hashes), block):
        rows = hashes[start:start + block]
        distances = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        for r, c in zip(*np.nonzero(distances <= threshold)):
            i = start + int(r)
            if int(c) > i:
                a, b = find(i), find(int(c))
                if a != b:
                    parent[b] = a
    groups: dict[int, list[ImageInfo]] = {}
    for index, info in enumerate(unique):
        groups.setdefault(find(index), []).append(info)
    copies = {group[0].sha256: group for group in exact}
    result = []
    for members in groups.values():
        if len(members) < 2:
            continue
        expanded = [copy for info in members for copy in copies.get(info.sha256, (info,))]
        result.append(tuple(sorted(expanded, key=lambda i: str(i.path))))
    return tuple(sorted(result, key=lambda g: str(g[0].path)))


GROUP_WIDTH = 78  # a group of copies wraps at this width, one "= name" per line after the first


def group_text(names: list[str], width: int = GROUP_WIDTH) -> list[str]:
    """``a.png  =  b.png`` when it fits in ``width``; else the first name, then ``= name`` lines under it."""
    one_line = "    " + "  =  ".join(names)
    if len(one_line) <= width:
        return [one_line]
    return ["    " + names[0]] + [f"      = {other}" for other in names[1:]]


def format_report(report: ImageReport, listed: int = 5) -> list[str]:
    name = lambda info: relative_name(report.root, info.path)  # noqa: E731
    lines = [f"Images in {report.root}: {plural(len(report.infos), 'file')}",
             "  " + ", ".join(f"{fmt} {count}" for fmt, count in report.formats.items())]

    def section(title: str, items, describe=name, hint: str = ""):
        if not items:
            return
        lines.append(f"{title} ({len(items)}){': ' + hint if hint else ''}")
        for item in items[:listed]:
            lines.append(f"    {describe(item)}")
        if len(items) > listed:
            lines.append(f"    ... and {len(items) - listed} more")

    section(f"Smaller than {report.resolution} px training", report.upscaled,
            lambda i: f"{name(i)} ({i.width}x{i.height})", "they would be upscaled; --min-size moves tiny ones out")
    section("Transparent", report.transparent, hint="trained on white; --flatten does it now (or --background)")
    section("Animated", [i for i in report.animated if i.format != "GIF"], lambda i: f"{name(i)} ({i.frames} frames)",
            "training uses the first frame only; --convert-animated writes PNG frames")
    section("GIF files", report.gifs, lambda i: name(i) + (f" ({i.frames} frames)" if i.animated else ""),
            "not used for training (check and train skip GIFs); --convert-animated writes them as PNG")
    for kind, items in sorted(report.colour.items()):
        section(f"{kind.capitalize()} mode", items, lambda i: f"{name(i)} ({i.mode})",
                "converted to RGB when training")
    section("Unreadable", report.unreadable, lambda i: f"{name(i)}: {i.problem}",
            "--exclude-unreadable moves them out")

    def group_lines(title: str, groups, hint: str):
        if not groups:
            lines.append(f"No {title.lower()}.")
            return
        lines.append(f"{title} ({plural(len(groups), 'group')}): {hint}")
        for group in groups[:listed]:
            lines.extend(group_text([name(i) for i in group]))
        if len(groups) > listed:
            lines.append(f"    ... and {plural(len(groups) - listed, 'more group')}")

    group_lines("Exact duplicates", report.exact_duplicates, "same bytes; --exclude-duplicates keeps one")
    group_lines("Near duplicates", report.near_duplicates,
                f"perceptual hash within {report.threshold} bits; --exclude-near-duplicates keeps the largest")
    return lines
