"""Every LoRA file a run saved, with what is known about each: epoch, step, losses, size, samples.

Read from the output folder alone, so it works on a finished run, a stopped
one and one still training: the files' own metadata (``ss_epoch``,
``ss_steps``, ``ss_validation_loss``), ``NAME.metrics.csv`` for the training loss
and ``sample/`` for the images made at the same point.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.progress.metrics import LEGACY_CSV_NAME, metrics_csv_path
from easytrain.sampling.paths import parse_sample_name, sample_dir

_SAVED_NAME = re.compile(r"^(?P<name>.+?)(?:-(?P<epoch>\d{6})|-step(?P<step>\d{8}))?\.safetensors$")


@dataclass(frozen=True)
class SavedFile:
    path: Path
    kind: str                              # "epoch" | "step" | "final"
    epoch: Optional[int]
    step: Optional[int]
    size: int                              # bytes
    validation_loss: Optional[float]
    training_loss: Optional[float]         # mean training loss since the previous saved file
    samples: tuple[Optional[Path], ...]    # by prompt index; None where that prompt has no image


@dataclass(frozen=True)
class RunReview:
    folder: Path
    name: str
    files: tuple[SavedFile, ...]           # in training order, the final file last
    prompts: int                           # columns of the sample grid

    @property
    def best(self) -> Optional[SavedFile]:
        """The file with the lowest validation loss; None when none was measured."""
        measured = [f for f in self.files if f.validation_loss is not None and math.isfinite(f.validation_loss)]
        return min(measured, key=lambda f: f.validation_loss) if measured else None


def run_names(folder: Path) -> list[str]:
    """The names of the runs whose LoRA files lie in ``folder``."""
    names = set()
    for path in folder.glob("*.safetensors"):
        match = _SAVED_NAME.match(path.name)
        if match:
            names.add(match.group("name"))
    return sorted(names)


def review_run(folder: str | Path, name: Optional[str] = None) -> RunReview:
    """The saved files of the run ``name`` in ``folder`` (the only run there when ``name`` is None)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: output folder not found")
    names = run_names(folder)
    if name is None:
        if not names:
            raise UserError(f"{folder}: no LoRA files (.safetensors) here; give the output folder of a run")
        if len(names) > 1:
            raise UserError(f"{folder}: holds the files of several runs ({', '.join(names)}); "
                            "pick one with --name")
        name = names[0]
    elif name not in names:
        raise UserError(f"{folder}: no LoRA files of a run named {name!r}"
                        + (f" (runs here: {', '.join(names)})" if names else ""))

    found = []
    for path in folder.glob("*.safetensors"):
        match = _SAVED_NAME.match(path.name)
        if match and match.group("name") == name:
            found.append(_read_file(path, match))
    found.sort(key=lambda f: (f.kind == "final", f.step if f.step is not None else -1))
    samples = _samples(folder, name)
    losses = _training_losses(_metrics_file(folder, name, names))
    prompts = max((len(row) for row in samples.values()), default=0)
    files = []
    previous_step = 0
    for f in found:
        row = _samples_for(f, samples)
        training = _mean_between(losses, previous_step, f.step) if f.step is not None else None
        files.append(SavedFile(f.path, f.kind, f.epoch, f.step, f.size, f.validation_loss, training,
                               tuple(row) + (None,) * (prompts - len(row))))
        if f.step is not None and f.kind != "final":
            previous_step = f.step
    return RunReview(folder, name, tuple(files), prompts)


def _read_file(path: Path, match: re.Match) -> SavedFile:
    from easytrain.model.detect import read_safetensors_header

    kind = "epoch" if match.group("epoch") else "step" if match.group("step") else "final"
    try:
        metadata = read_safetensors_header(path).metadata
    except (UserError, OSError):
        metadata = {}
    epoch = _int(metadata.get("ss_epoch")) or (int(match.group("epoch")) if match.group("epoch") else None)
    step = _int(metadata.get("ss_steps")) or (int(match.group("step")) if match.group("step") else None)
    return SavedFile(path, kind, epoch, step, path.stat().st_size, _float(metadata.get("ss_validation_loss")),
                     None, ())


def _samples(folder: Path, name: str) -> dict[tuple[str, int], list[Optional[Path]]]:
    """{("epoch", 3) or ("step", 500): [image of prompt 0, image of prompt 1, ...]}"""
    rows: dict[tuple[str, int], list[Optional[Path]]] = {}
    images = sample_dir(folder)
    if not images.is_dir():
        return rows
    for path in sorted(images.iterdir()):
        parsed = parse_sample_name(name, path.name)
        if parsed is None:
            continue
        key = ("epoch", parsed.epoch) if parsed.epoch is not None else ("step", parsed.step)
        row = rows.setdefault(key, [])
        row.extend([None] * (parsed.index + 1 - len(row)))
        row[parsed.index] = path
    return rows


def _samples_for(f: SavedFile, samples: dict) -> list[Optional[Path]]:
    """The samples made with this file's weights: at its step, else (epoch or final file) at its epoch."""
    if f.step is not None and ("step", f.step) in samples:
        return samples[("step", f.step)]
    if f.kind in ("epoch", "final") and f.epoch is not None:
        return samples.get(("epoch", f.epoch), [])
    return []


def _metrics_file(folder: Path, name: str, names: list[str]) -> Path:
    """The run's own NAME.metrics.csv; an earlier version's shared metrics.csv only when it is the only run."""
    own = metrics_csv_path(folder, name)
    return own if own.is_file() or len(names) > 1 else folder / LEGACY_CSV_NAME


def _training_losses(path: Path) -> list[tuple[int, float]]:
    """(step, loss) rows of a metrics file; [] when the file is missing or not ours."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError):
        return []
    if not rows or rows[0][:3] != ["step", "epoch", "loss"]:
        return []
    losses = []
    for row in rows[1:]:
        try:
            step, loss = int(row[0]), float(row[2])
        except (ValueError, IndexError):
            continue            # a validation-only row, or a line cut short by a stop
        if math.isfinite(loss):
            losses.append((step, loss))
    return losses


def _mean_between(losses: list[tuple[int, float]], after: int, upto: int) -> Optional[float]:
    window = [loss for step, loss in losses if after < step <= upto]
    return sum(window) / len(window) if window else None


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
