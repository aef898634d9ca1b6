"""Auto-tagging with a WD14-style tagger the user already has on disk.

The tagger folder holds `model.onnx` and `selected_tags.csv` (columns
tag_id,name,category,count; category 0 = general, 4 = character, 9 = rating),
the layout of the wd-v1-4 and wd-v3 taggers. Nothing is downloaded.

The model takes NHWC float32 BGR pixels 0-255, the picture padded to a square
on white and resized to the model's input size, and gives one probability per
tag. Ratings are never written. Character tags come first, then general tags
by confidence, in the caption style of the dataset (spaces or underscores).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageOps

from easytrain.errors import UserError
from easytrain.fsutil import atomic_write_text
from easytrain.tools.caption_files import load_captions
from easytrain.tools.dataset_files import resolve_root
from easytrain.tools.image_inspect import flatten
from easytrain.tools.tag_ops import is_kaomoji, underscores_to_spaces
from easytrain.tools.undo import record_undo

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
GENERAL, CHARACTER, RATING = 0, 4, 9
DEFAULT_GENERAL_THRESHOLD = 0.35
DEFAULT_CHARACTER_THRESHOLD = 0.85
DEFAULT_SIZE = 448
WHITE = (255, 255, 255)
WHERE_TO_GET = ("put a WD14-style tagger there yourself (for example the files of SmilingWolf's "
                "wd-v1-4-moat-tagger-v2 or wd-vit-tagger-v3: model.onnx and selected_tags.csv in one folder)")


@dataclass(frozen=True)
class TagDefinition:
    name: str
    category: int


@dataclass(frozen=True)
class TaggingResult:
    written: tuple[Path, ...]  # caption files written
    skipped: int  # images that already had a caption
    undo_id: Optional[str]
    style: str  # "spaces" | "underscores"
    provider: str
    problems: tuple[str, ...] = ()  # images that could not be read (left without a caption), by path


def read_tags_csv(path: Path) -> list[TagDefinition]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable tags CSV ({exc})") from None
    if not rows or "name" not in rows[0] or "category" not in rows[0]:
        raise UserError(f"{path}: expected a CSV with the columns tag_id,name,category,count")
    tags = []
    for line, row in enumerate(rows, start=2):
        try:
            tags.append(TagDefinition(row["name"].strip(), int(row["category"])))
        except (TypeError, ValueError, AttributeError):
            raise UserError(f"{path}, line {line}: category must be a whole number, got {row.get('category')!r}") from None
    return tags


class Tagger:
    """An ONNX tagger loaded from a folder; `predict(images)` -> probabilities per tag."""

    def __init__(self, folder, use_gpu: bool = True):
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise UserError(f"{folder}: tagger folder does not exist; {WHERE_TO_GET}")
        model_path, tags_path = folder / MODEL_FILE, folder / TAGS_FILE
        missing = [p.name for p in (model_path, tags_path) if not p.is_file()]
        if missing:
            raise UserError(f"{folder}: the tagger folder has no {' and no '.join(missing)}; it needs "
                            f"{MODEL_FILE} and {TAGS_FILE} side by side; {WHERE_TO_GET}")
        self.tags = read_tags_csv(tags_path)
        ort = _import_onnxruntime()
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            raise UserError(f"{model_path}: onnxruntime cannot load this model ({exc})") from None
        self.provider = self.session.get_providers()[0]
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = model_input.shape
        if len(shape) != 4:
            raise UserError(f"{model_path}: expected an image input of shape (batch, height, width, 3), got {shape}")
        self.size = shape[1] if isinstance(shape[1], int) else DEFAULT_SIZE
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        outputs = self.session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(self.tags):
            raise UserError(f"{tags_path}: lists {len(self.tags)} tags but the model gives {outputs[-1]} outputs; "
                            "the CSV and the model must come from the same tagger")

    def preprocess(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                image.load()
                picture = flatten(ImageOps.exif_transpose(image), WHITE)
        except Exception as exc:  # any decoder failure is the file's fault
            raise UserError(f"{path}: the image cannot be decoded ({exc}); it was left without a caption") from None
        side = max(picture.size)
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
        if side != self.size:
            canvas = canvas.resize((self.size, self.size), Image.Resampling.BICUBIC)
        return np.asarray(canvas, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR

    def predict(self, pictures: list[np.ndarray]) -> np.ndarray:
        """Probabilities, one row per preprocessed picture."""
        if self.fixed_batch is not None and self.fixed_batch != len(pictures):
            return np.concatenate([self.predict([p]) for p in pictures])
        batch = np.ascontiguousarray(np.stack(pictures))
        return np.asarray(self.session.run(None, {self.input_name: batch})[0])

    def select(self, probabilities: np.ndarray, general_threshold: float, character_threshold: float,
               ) -> list[str]:
        """Tag names over their category's threshold: characters first, then general, each by confidence."""
        picked = []
        for index, (tag, probability) in enumerate(zip(self.tags, probabilities)):
            if tag.category == CHARACTER and probability >= character_threshold:
                picked.append((0, -float(probability), index, tag.name))
            elif tag.category == GENERAL and probability >= general_threshold:
                picked.append((1, -float(probability), index, tag.name))
        return [name for *_, name in sorted(picked)]


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("the tagger needs onnxruntime: pip install onnxruntime "
                        "(or onnxruntime-gpu for an NVIDIA GPU)") from None
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def caption_style(captions: list[list[str]]) -> str:
    """"underscores" when the dataset's multi-word tags mostly use them, else "spaces"."""
    underscores = spaces = 0
    for tags in captions:
        for tag in tags:
            if "_" in tag and not is_kaomoji(tag):
                underscores += 1
            elif " " in tag:
                spaces += 1
    return "underscores" if underscores > spaces else "spaces"


def styled(tag: str, style: str) -> str:
    if style == "spaces":
        return underscores_to_spaces(tag)
    return tag if is_kaomoji(tag) else tag.replace(" ", "_")


def tag_folder(folder, tagger_dir, *, general_threshold: float = DEFAULT_GENERAL_THRESHOLD,
               character_threshold: float = DEFAULT_CHARACTER_THRESHOLD, overwrite: bool = False,
               batch_size: int = 8, caption_extension: str = ".txt", use_gpu: bool = True,
               on_progress: Optional[Callable[[int, int], None]] = None,
               on_start: Optional[Callable[[int, str, str], None]] = None) -> TaggingResult:
    """Write tags for the images without a caption (all images with `overwrite`).

    on_start(count, style, provider) is called once the work is known; on_progress(done, total) after
    each batch. Every write is recorded for undo first.
    """
    for name, value in (("--general-threshold", general_threshold), ("--character-threshold", character_threshold)):
        if not 0.0 < value <= 1.0:
            raise UserError(f"{name}: must be above 0 and at most 1, got {value}")
    if batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {batch_size}")
    root = resolve_root(folder)
    tagger = Tagger(tagger_dir, use_gpu=use_gpu)
    dataset = load_captions(root, caption_extension)
    style = caption_style([c.tags for c in dataset.captions])
    if overwrite:
        todo = [item for item in dataset.images if item.caption_path is None or item.caption is not None]
    else:
        todo = [item for item in dataset.images
                if item.caption_path is None or (item.caption is not None and not item.caption.tags)]
    skipped = len(dataset.images) - len(todo)
    if on_start:
        on_start(len(todo), style, tagger.provider)
    if not todo:
        return TaggingResult((), skipped, None, style, tagger.provider)

    targets = [item.caption_path or item.image.with_suffix(_extension(caption_extension)) for item in todo]
    undo_id, _entry = record_undo(
        root, f"tags: auto-tagged {len(todo)} images with {Path(tagger_dir).name}",
        kept=[t for t in targets if t.exists()], created=[t for t in targets if not t.exists()])
    written, problems = [], []
    for start in range(0, len(todo), batch_size):
        pictures, chunk_targets = [], []
        for item, target in zip(todo[start:start + batch_size], targets[start:start + batch_size]):
            try:
                pictures.append(tagger.preprocess(item.image))
                chunk_targets.append(target)
            except UserError as problem:
                problems.append(str(problem))
        if pictures:
            for target, row in zip(chunk_targets, tagger.predict(pictures)):
                tags = [styled(t, style) for t in tagger.select(row, general_threshold, character_threshold)]
                atomic_write_text(target, ", ".join(tags))
                written.append(target)
        if on_progress:
            on_progress(min(start + batch_size, len(todo)), len(todo))
    return TaggingResult(tuple(written), skipped, undo_id, style, tagger.provider, tuple(problems))


def _extension(caption_extension: str) -> str:
    return caption_extension if caption_extension.startswith(".") else "." + caption_extension
