"""The dataset scan: which `N_name` folders, images and captions there are.

Reads folder listings, image headers and caption files; never decodes pixels
(see images.probe_image). Stdlib + PIL only, so the wizard and `check` can
scan a dataset without loading torch.

Every finding is a plain string that names its path:
- `problems`: folder-level findings (a folder without the `N_` prefix, 0
  repeats, a subfolder with no images, the image folder one level too deep,
  nothing usable at all);
- `warnings`: file-level findings that do not stop a run (images without a
  caption file, empty or non-UTF-8 captions, unreadable images left out).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from easytrain.data.captions import read_caption
from easytrain.data.images import IMAGE_SUFFIXES, ImageProblem, is_image_name, probe_image
from easytrain.data.masks import has_alpha, mask_files
from easytrain.errors import UserError

CACHE_DIR_NAME = ".easytrain-cache"
EXCLUDED_DIR_NAME = "_excluded"  # where `easytrain images --apply` moves images it set aside
SUBSET_NAME = re.compile(r"^(\d+)(?:_(.*))?$", re.DOTALL)
LISTED_PATHS = 5  # how many example paths a finding names before "and N more"
# Phrases of the per-folder summary warnings (the check report lists those findings itself).
MISSING_CAPTION_PHRASE = "have no caption file"
UNREADABLE_PHRASE = "cannot be read and are left out"
SKIPPED_IMAGE_SUFFIXES = (".gif",)  # pictures that are no training images: named, never silently dropped


@dataclass(frozen=True)
class ImageEntry:
    path: Path
    width: int
    height: int
    caption_path: Optional[Path]
    # The caption as read (first line), or the subset's name when the file is missing.
    caption: str = ""
    mask_path: Optional[Path] = None  # the loss mask's file (mask folder), or None
    mask_from_alpha: bool = False  # the loss mask is this image's alpha channel

    @property
    def has_mask(self) -> bool:
        return self.mask_path is not None or self.mask_from_alpha


@dataclass(frozen=True)
class UnreadableImage:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class SubsetScan:
    folder: Path
    name: str  # the caption for images without a caption file (kohya's class tokens)
    repeats: int
    images: tuple[ImageEntry, ...]
    captions: int  # images that have a caption file
    is_reg: bool
    problems: tuple[str, ...]
    caption_extension: str = ".txt"
    # Per-subset settings from a dataset TOML; None means "use the run's setting".
    shuffle_caption: Optional[bool] = None
    keep_tokens: Optional[int] = None
    flip_aug: Optional[bool] = None
    keep_tokens_separator: Optional[str] = None
    caption_dropout_rate: Optional[float] = None
    caption_dropout_every_n_epochs: Optional[int] = None
    caption_tag_dropout_rate: Optional[float] = None
    random_crop: Optional[bool] = None
    color_aug: Optional[bool] = None

    @property
    def masks(self) -> int:
        """Images that have a loss mask."""
        return sum(1 for image in self.images if image.has_mask)

    @property
    def images_per_epoch(self) -> int:
        return len(self.images) * self.repeats


@dataclass(frozen=True)
class DatasetScan:
    root: Path
    subsets: tuple[SubsetScan, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    unreadable: tuple[UnreadableImage, ...]
    # Dataset-level settings from a dataset TOML (resolution, batch_size,
    # enable_bucket, min_bucket_reso, max_bucket_reso, bucket_reso_steps,
    # bucket_no_upscale); empty for a scanned folder.
    config_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def total_images(self) -> int:
        return sum(len(s.images) for s in self.subsets)

    @property
    def images_per_epoch(self) -> int:
        """Images times repeats (for a regularization scan: before balancing)."""
        return sum(s.images_per_epoch for s in self.subsets)

    @property
    def masked_images(self) -> int:
        return sum(s.masks for s in self.subsets)

    @property
    def all_images(self) -> list[ImageEntry]:
        return [image for subset in self.subsets for image in subset.images]


def scan_image_folder(path, caption_extension: str = ".txt", is_reg: bool = False, *,
                      mask_folder=None, alpha_mask: bool = False) -> DatasetScan:
    """Scan the folder ABOVE the `N_name` folders (N = repeats).

    ``mask_folder`` mirrors it: ``<mask_folder>/<N_name>/<image stem>.<any image extension>``
    is that image's loss mask. With ``alpha_mask`` an image's alpha channel is its mask
    (a mask file wins over the alpha channel).
    """
    root = Path(path).expanduser()
    kind = "regularization image folder" if is_reg else "image folder"
    if not root.exists():
        raise UserError(f"{root}: the {kind} does not exist")
    if not root.is_dir():
        raise UserError(f"{root}: the {kind} must be a folder (the one holding the N_name subfolders)")
    caption_extension = normalise_extension(caption_extension)

    problems: list[str] = []
    subsets: list[SubsetScan] = []
    warnings: list[str] = []
    unreadable: list[UnreadableImage] = []

    folders, loose_images = _list_root(root)
    too_deep = bool(loose_images) and bool(SUBSET_NAME.match(root.name)) and root.parent != root
    if loose_images:
        if too_deep:
            problems.append(
                f"{root}: this looks like one of the N_name subfolders itself (one level too deep); "
                f"pick its parent folder {root.parent} as the {kind}")
        else:
            problems.append(
                f"{root}: {len(loose_images)} image(s) directly in the {kind} are not used; move them into a "
                f"subfolder named like 10_{_suggested_name(root)} (10 = repeats)")

    for folder in folders:
        match = SUBSET_NAME.match(folder.name)
        if not match:
            problems.append(
                f"{folder}: folder name has no repeat count and is skipped; rename it to "
                f"10_{folder.name} (the number in front is how often each image repeats per epoch)")
            continue
        repeats = int(match.group(1))
        if repeats == 0:
            problems.append(
                f"{folder}: 0 repeats, so the folder is skipped; rename it to 1_{match.group(2) or 'name'} or more")
            continue
        subset, subset_warnings, subset_unreadable = scan_subset(
            folder, name=match.group(2) or "", repeats=repeats, is_reg=is_reg,
            caption_extension=caption_extension, alpha_mask=alpha_mask,
            mask_dir=Path(mask_folder).expanduser() / folder.name if mask_folder else None)
        subsets.append(subset)
        problems.extend(p for p in subset.problems if p not in subset_warnings)
        warnings.extend(subset_warnings)
        unreadable.extend(subset_unreadable)

    if mask_folder and not any(s.masks for s in subsets):
        warnings.append(
            f"{mask_folder}: no mask file matches an image (expected {Path(mask_folder) / 'N_name' / 'IMAGE.png'} "
            "next to each image's name); every image trains unmasked")
    elif alpha_mask and not mask_folder and not any(s.masks for s in subsets):
        warnings.append(f"{root}: alpha masks are on but no image has an alpha channel; every image trains unmasked")
    if not any(s.images for s in subsets) and not too_deep:  # too deep: the line above names the right folder
        problems.append(
            f"{root}: no usable N_name subfolders with images (png, jpg, jpeg, webp, bmp); put the images in "
            f"a subfolder such as {root / ('10_' + _suggested_name(root))}")
    return DatasetScan(root, tuple(subsets), tuple(problems), tuple(warnings), tuple(unreadable))


def scan_subset(folder: Path, *, name: str, repeats: int, is_reg: bool, caption_extension: str = ".txt",
                shuffle_caption: Optional[bool] = None, keep_tokens: Optional[int] = None,
                flip_aug: Optional[bool] = None, mask_dir: Optional[Path] = None, alpha_mask: bool = False,
                **overrides: Any,
                ) -> tuple[SubsetScan, list[str], list[UnreadableImage]]:
    """One folder of images: the subset, its file-level warnings and its unreadable images.

    ``overrides`` are the SubsetScan's other per-subset settings (keep_tokens_separator,
    caption_dropout_rate, ...), from a dataset TOML.
    """
    masks = mask_files(mask_dir)
    caption_extension = normalise_extension(caption_extension)
    entries = sorted((e for e in list_folder(folder) if not e.name.startswith(".")), key=lambda e: e.name)
    names = {e.name for e in entries if is_regular_file(e)}  # a FIFO named like a caption would block the read
    images: list[ImageEntry] = []
    unreadable: list[UnreadableImage] = []
    warnings: list[str] = []
    missing: list[Path] = []
    skipped = [Path(e.path) for e in entries if e.name.lower().endswith(SKIPPED_IMAGE_SUFFIXES) and e.name in names]
    for entry in entries:
        if not is_image_name(entry.name):
            continue
        path = Path(entry.path)
        try:
            if not entry.is_file():
                continue
            width, height = probe_image(path, entry.stat().st_size)
        except ImageProblem as problem:
            unreadable.append(UnreadableImage(path, str(problem)))
            continue
        except OSError as exc:  # gone since the listing, a symlink loop, no permission
            unreadable.append(UnreadableImage(path, _os_reason(exc)))
            continue
        stem = entry.name[: entry.name.rfind(".")]
        caption_name = stem + caption_extension
        if caption_name in names:
            caption_path = folder / caption_name
            try:
                caption, caption_warnings = read_caption(caption_path)
            except OSError as exc:
                caption, caption_warnings = name, [f"{caption_path}: {_os_reason(exc)}; the image uses the "
                                                   f"folder name '{name}' as its caption"]
            warnings.extend(caption_warnings)
        else:
            caption_path, caption = None, name
            missing.append(path)
        mask_path = masks.get(stem)
        images.append(ImageEntry(path, width, height, caption_path, caption, mask_path,
                                 mask_path is None and alpha_mask and has_alpha(path)))

    problems: list[str] = []
    if not images:
        if unreadable:
            problems.append(f"{folder}: none of its {len(unreadable)} image file(s) can be read")
        else:
            problems.append(
                f"{folder}: no images here ({', '.join(sorted(s[1:] for s in IMAGE_SUFFIXES))}); "
                "the folder adds nothing")
    if missing:
        fallback = f"the folder name '{name}'" if name else "an empty caption"
        warnings.append(
            f"{folder}: {len(missing)} image(s) {MISSING_CAPTION_PHRASE} ({caption_extension}) and use "
            f"{fallback} instead: {_some_paths(missing)}")
    if skipped:
        warnings.append(
            f"{folder}: {len(skipped)} GIF file(s) are not used for training, nor their captions "
            f"(`easytrain images --convert-animated` writes them as PNG): {_some_paths(skipped)}")
    if unreadable:
        warnings.append(
            f"{folder}: {len(unreadable)} image(s) {UNREADABLE_PHRASE}: "
            + "; ".join(str(u) for u in unreadable[:LISTED_PATHS])
            + (f"; and {len(unreadable) - LISTED_PATHS} more" if len(unreadable) > LISTED_PATHS else ""))
    subset = SubsetScan(
        folder=folder, name=name, repeats=repeats, images=tuple(images),
        captions=len(images) - len(missing), is_reg=is_reg, problems=tuple(problems + warnings),
        caption_extension=caption_extension, shuffle_caption=shuffle_caption, keep_tokens=keep_tokens,
        flip_aug=flip_aug, **overrides)
    return subset, warnings, unreadable


def apply_repeats(train: DatasetScan, reg: Optional[DatasetScan], overrides: Optional[Mapping[str, int]],
                  key: str = "folder_repeats") -> tuple[DatasetScan, Optional[DatasetScan]]:
    """The scans with the repeats of the folders named in ``overrides`` (folder name -> repeats) replaced.

    The answers' per-folder override wins over the number in the folder's name; a name that no
    folder of either scan has is a UserError naming ``key``.
    """
    if not overrides:
        return train, reg
    scans = [scan for scan in (train, reg) if scan is not None]
    names = [s.folder.name for scan in scans for s in scan.subsets]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        roots = " or ".join(str(scan.root) for scan in scans)
        raise UserError(f"{key}: no folder {unknown[0]!r} in {roots}; its folders are "
                        + (", ".join(repr(n) for n in names) or "none")
                        + " (give folder names as they are on disk)")

    def applied(scan: Optional[DatasetScan]) -> Optional[DatasetScan]:
        if scan is None:
            return None
        subsets = tuple(replace(s, repeats=int(overrides[s.folder.name])) if s.folder.name in overrides else s
                        for s in scan.subsets)
        return replace(scan, subsets=subsets)

    return applied(train), applied(reg)


def normalise_extension(extension: str) -> str:
    extension = (extension or ".txt").strip()
    return extension if extension.startswith(".") else "." + extension


def list_folder(folder: Path) -> list[os.DirEntry]:
    """The folder's listing; UserError naming it when it cannot be listed (gone, a loop, no permission)."""
    try:
        with os.scandir(folder) as listing:
            return list(listing)
    except OSError as exc:
        raise UserError(f"{folder}: cannot list this folder ({_os_reason(exc)})") from None


def is_regular_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def is_folder(entry: os.DirEntry) -> bool:
    """A folder to look into; never a link loop or an entry that vanished since the listing."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _os_reason(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ENOENT:
        return "it disappeared while the dataset was read"
    if exc.errno == errno.ELOOP:
        return "a symbolic link that points back to itself (a loop)"
    return exc.strerror or str(exc)


def _list_root(root: Path) -> tuple[list[Path], list[Path]]:
    folders, loose = [], []
    for entry in sorted(list_folder(root), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in (CACHE_DIR_NAME, EXCLUDED_DIR_NAME):
            continue
        if is_folder(entry):
            folders.append(Path(entry.path))
        elif is_image_name(entry.name):
            loose.append(Path(entry.path))
    return folders, loose


def _suggested_name(root: Path) -> str:
    match = SUBSET_NAME.match(root.name)
    if match and match.group(2):
        return match.group(2)
    return root.name if root.name and not match else "name"


def _some_paths(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:LISTED_PATHS])
    if len(paths) > LISTED_PATHS:
        shown += f", and {len(paths) - LISTED_PATHS} more"
    return shown
