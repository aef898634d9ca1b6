"""Fixes for the problems the image report finds, planned first, applied on request.

Each fix is asked for by its own option. Changed images keep their path and
format (their originals go to the undo folder); GIFs and animated WebPs become
PNG frames (the originals go to the undo folder); duplicates, unreadable and
too-small images move with their captions into `DIR/_excluded/<reason>/`.
Nothing is deleted, and `undo` puts everything back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from PIL import Image, ImageColor, ImageOps, ImageSequence

from easytrain.errors import UserError
from easytrain.fsutil import atomic_path, atomic_write_bytes
from easytrain.tools.dataset_files import EXCLUDED_DIR_NAME, relative_name
from easytrain.tools.image_inspect import ImageInfo, flatten, has_transparency
from easytrain.tools.image_report import ImageReport
from easytrain.tools.undo import move_file, record_undo, taken_path

WHITE = (255, 255, 255)
REASONS = ("unreadable", "duplicates", "near-duplicates", "too-small")
JPEG_QUALITY = 95


@dataclass(frozen=True)
class FixOptions:
    flatten: bool = False
    background: tuple[int, int, int] = WHITE
    convert_animated: Optional[str] = None  # "all" (every frame) or "first"
    pad_square: bool = False
    exclude_duplicates: bool = False
    exclude_near_duplicates: bool = False
    exclude_unreadable: bool = False
    min_size: Optional[int] = None  # shorter side in pixels

    @property
    def empty(self) -> bool:
        return not (self.flatten or self.convert_animated or self.pad_square or self.exclude_duplicates
                    or self.exclude_near_duplicates or self.exclude_unreadable or self.min_size)


@dataclass(frozen=True)
class Rewrite:
    path: Path
    steps: tuple[str, ...]  # "flatten", "pad"


@dataclass(frozen=True)
class Conversion:
    path: Path
    outputs: tuple[Path, ...]  # PNG frames to write
    caption_copies: tuple[tuple[Path, Path], ...]  # (caption, copy) for frames named differently
    taken: tuple[Path, ...]  # the original (and its caption when no frame keeps its name)


@dataclass(frozen=True)
class Exclusion:
    path: Path
    reason: str
    moves: tuple[tuple[Path, Path], ...]  # the image and its caption: (from, to)


@dataclass(frozen=True)
class FixPlan:
    root: Path
    options: FixOptions
    rewrites: tuple[Rewrite, ...] = ()
    conversions: tuple[Conversion, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not (self.rewrites or self.conversions or self.exclusions)


def parse_colour(value: str) -> tuple[int, int, int]:
    try:
        colour = ImageColor.getrgb(value)
    except ValueError:
        raise UserError(f"--background {value!r}: not a colour; use a name (white, black) or #rrggbb") from None
    return tuple(colour[:3])


def plan_fixes(report: ImageReport, options: FixOptions) -> FixPlan:
    root = report.root
    captions = report.captions()
    excluded: dict[Path, str] = {}

    def exclude(infos, reason: str):
        for info in infos:
            excluded.setdefault(info.path, reason)

    if options.exclude_unreadable:
        exclude(report.unreadable, "unreadable")
    if options.exclude_duplicates:
        for group in report.exact_duplicates:
            exclude(group[1:], "duplicates")
    if options.exclude_near_duplicates:
        for group in report.near_duplicates:
            keep = max(group, key=lambda i: (i.width * i.height, i.size_bytes, _neg_path(i)))
            exclude([i for i in group if i.sha256 != keep.sha256], "near-duplicates")
            exclude([i for i in group if i.sha256 == keep.sha256 and i.path != keep.path], "duplicates")
    if options.min_size:
        exclude([i for i in report.infos if i.readable and min(i.width, i.height) < options.min_size],
                "too-small")

    taken_names: set[Path] = set()
    exclusions = []
    for path, reason in sorted(excluded.items(), key=lambda item: (REASONS.index(item[1]), str(item[0]))):
        target = _free_target(root / EXCLUDED_DIR_NAME / reason / path.relative_to(root), captions.get(path),
                              taken_names)
        moves = [(path, target)]
        caption = captions.get(path)
        if caption is not None:
            moves.append((caption, target.with_suffix(caption.suffix)))
        exclusions.append(Exclusion(path, reason, tuple(moves)))

    rewrites, conversions = [], []
    existing = set(captions)
    for info in report.infos:
        if not info.readable or info.path in excluded:
            continue
        if options.convert_animated and (info.format == "GIF" or info.animated):
            conversions.append(_conversion(info, options.convert_animated, captions.get(info.path), existing))
            continue
        steps = []
        if options.flatten and info.transparent:
            steps.append("flatten")
        if options.pad_square and info.width != info.height:
            steps.append("pad")
        if steps:
            rewrites.append(Rewrite(info.path, tuple(steps)))
    notes = []
    if options.convert_animated is None and any(i.format == "GIF" for i in report.infos if i.readable):
        notes.append("GIF files are not used for training until converted (--convert-animated)")
    return FixPlan(root, options, tuple(rewrites), tuple(conversions), tuple(exclusions), tuple(notes))


def _neg_path(info: ImageInfo) -> tuple:
    # max() picks the first path among equals
    return tuple(-ord(c) for c in str(info.path))


def _free_target(target: Path, caption: Optional[Path], taken: set[Path]) -> Path:
    candidate, number = target, 1
    while (candidate in taken or candidate.exists()
           or (caption is not None and candidate.with_suffix(caption.suffix).exists())):
        number += 1
        candidate = target.with_name(f"{target.stem}-{number}{target.suffix}")
    taken.add(candidate)
    return candidate


def _conversion(info: ImageInfo, mode: str, caption: Optional[Path], existing: set[Path]) -> Conversion:
    path = info.path
    frames = info.frames if mode == "all" else 1
    if frames == 1:
        single = path.with_suffix(".png")
        outputs = [single if single not in existing and not single.exists()
                   else _free_name(path.with_name(f"{path.stem}_frame0.png"), existing)]
    else:
        digits = max(3, len(str(frames - 1)))
        outputs = [_free_name(path.with_name(f"{path.stem}_{n:0{digits}d}.png"), existing) for n in range(frames)]
    existing.update(outputs)
    copies, taken = [], [path]
    if caption is not None:
        for output in outputs:
            if output.stem != path.stem:
                copies.append((caption, output.with_suffix(caption.suffix)))
        if all(output.stem != path.stem for output in outputs):
            taken.append(caption)
    return Conversion(path, tuple(outputs), tuple(copies), tuple(taken))


def _free_name(path: Path, existing: set[Path]) -> Path:
    candidate, number = path, 1
    while candidate in existing or candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def describe_plan(plan: FixPlan, listed: int = 5) -> list[str]:
    name = lambda p: relative_name(plan.root, p)  # noqa: E731
    lines = []

    def section(title, items, describe):
        if not items:
            return
        lines.append(f"{title} ({len(items)}):")
        lines.extend(f"    {describe(item)}" for item in items[:listed])
        if len(items) > listed:
            lines.append(f"    ... and {len(items) - listed} more")

    section("Rewrite in place", plan.rewrites, lambda r: f"{name(r.path)}: {' + '.join(r.steps)}")
    section("Convert to PNG", plan.conversions,
            lambda c: f"{name(c.path)} -> {name(c.outputs[0])}"
                      + (f" ... {name(c.outputs[-1])} ({len(c.outputs)} frames)" if len(c.outputs) > 1 else ""))
    section("Move out of the dataset", plan.exclusions,
            lambda e: f"{name(e.path)} -> {name(e.moves[0][1])}" + (" (with caption)" if len(e.moves) > 1 else ""))
    lines.extend(f"Note: {note}" for note in plan.notes)
    return lines


def apply_fixes(plan: FixPlan) -> Optional[str]:
    """Carry the plan out; returns the undo id (None when there was nothing to do)."""
    if plan.empty:
        return None
    description = "images: " + ", ".join(
        part for part, items in (("rewrite", plan.rewrites), ("convert", plan.conversions),
                                 ("exclude", plan.exclusions)) if items)
    undo_id, entry = record_undo(
        plan.root, description,
        kept=[r.path for r in plan.rewrites],
        taken=[p for c in plan.conversions for p in c.taken],
        created=[p for c in plan.conversions for p in c.outputs] + [copy for c in plan.conversions
                                                                    for _, copy in c.caption_copies],
        moved=[move for e in plan.exclusions for move in e.moves])
    for exclusion in plan.exclusions:
        for source, target in exclusion.moves:
            move_file(source, target)
    for rewrite in plan.rewrites:
        _rewrite(rewrite, plan.options)
    for conversion in plan.conversions:
        _convert(conversion, plan.options)
        for caption, copy in conversion.caption_copies:
            atomic_write_bytes(copy, caption.read_bytes())
        for path in conversion.taken:
            move_file(path, taken_path(plan.root, entry, path))
    return undo_id


def _rewrite(rewrite: Rewrite, options: FixOptions) -> None:
    path = rewrite.path
    with Image.open(path) as original:
        original.load()
        image_format = original.format
        icc = original.info.get("icc_profile")
        image = ImageOps.exif_transpose(original)
    if "flatten" in rewrite.steps:
        image = flatten(image, options.background)
    if "pad" in rewrite.steps:
        image = pad_square(image, options.background)
    _save(image, path, image_format, icc)


def pad_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """The picture centred on a square canvas of `background`."""
    side = max(image.size)
    if has_transparency(image):
        image, fill = image.convert("RGBA"), tuple(background) + (255,)
    else:
        image, fill = flatten(image, background), tuple(background)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def _save(image: Image.Image, path: Path, image_format: Optional[str], icc: Optional[bytes]) -> None:
    options: dict = {}
    if icc:
        options["icc_profile"] = icc
    if image_format == "JPEG":
        image = image.convert("RGB")
        options.update(quality=JPEG_QUALITY, subsampling=0)
    elif image_format == "WEBP":
        options.update(lossless=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format=image_format or "PNG", **options)


def _convert(conversion: Conversion, options: FixOptions) -> None:
    with Image.open(conversion.path) as animation:
        for output, frame in zip(conversion.outputs, ImageSequence.Iterator(animation)):
            picture = frame.convert("RGBA")
            if options.flatten or not has_transparency(picture):
                picture = flatten(picture, options.background)
            with atomic_path(output) as tmp:
                picture.save(tmp, format="PNG")
