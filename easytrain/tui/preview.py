"""The steps preview shown under every question once the image folder is known.

The numbers come from the plan's own arithmetic (plan.run_length, which also
applies a dataset TOML's batch and bucket settings), so the wizard never
promises a different count than `easytrain check` prints. Scans are cached per
folder: they read file headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from easytrain import questions as Q
from easytrain.answers import Answers
from easytrain.data.scan import DatasetScan, apply_repeats, scan_image_folder
from easytrain.errors import UserError
from easytrain.plan import SURELY_TOO_MANY, answer, run_length, steps_warning
from easytrain.wording import bucket_rounding_note


@dataclass(frozen=True)
class StepsLine:
    text: str
    level: str  # "ok" | "warn" | "bad"
    warning: Optional[str] = None


class StepsPreview:
    """Computes the status line from the current answers, scanning each folder once."""

    def __init__(self) -> None:
        self._scans: dict[tuple[str, str, bool], DatasetScan] = {}
        self._toml_scans: dict[tuple[str, str], tuple[DatasetScan, Optional[DatasetScan]]] = {}

    def scan(self, folder: str, base_dir: Path, caption_extension: str = ".txt", is_reg: bool = False) -> DatasetScan:
        """Scan a folder answer (cached); raises UserError as scan_image_folder does."""
        path = Q.resolve(folder, base_dir).resolve()
        key = (str(path), caption_extension, is_reg)
        if key not in self._scans:
            self._scans[key] = scan_image_folder(path, caption_extension=caption_extension, is_reg=is_reg)
        return self._scans[key]

    def scan_toml(self, toml: str, base_dir: Path, caption_extension: str) -> tuple[DatasetScan, Optional[DatasetScan]]:
        """Scan a dataset TOML answer (cached); raises UserError as scan_dataset_toml does."""
        from easytrain.data.toml_config import scan_dataset_toml

        path = Q.resolve(toml, base_dir).resolve()
        key = (str(path), caption_extension)
        if key not in self._toml_scans:
            self._toml_scans[key] = scan_dataset_toml(path, default_caption_extension=caption_extension)
        return self._toml_scans[key]

    def forget(self) -> None:
        self._scans.clear()
        self._toml_scans.clear()

    def line(self, values: Mapping[str, Any], base_dir: Path, *, tiny: bool = False) -> Optional[StepsLine]:
        """The preview for ``values``; None until the image folder is answered and scans.

        ``tiny``: the base model is one of easytrain's tiny test models, which a few dozen steps train
        (the demo's 40), so the usual-range warning stays away.
        """
        folder, toml = values.get("image_folder"), values.get("dataset_config")
        if not folder and not toml:
            return None
        extension = values.get("caption_extension") or ".txt"
        try:
            if toml:
                train, reg = self.scan_toml(toml, base_dir, extension)
            else:
                train = self.scan(folder, base_dir, extension)
                reg = None
                if values.get("use_regularization") and values.get("reg_image_folder"):
                    reg = self.scan(values["reg_image_folder"], base_dir, extension, is_reg=True)
            train, reg = apply_repeats(train, reg, values.get("folder_repeats"))
        except UserError:
            return None
        if train.total_images == 0:
            return StepsLine("no usable images in the image folder yet", "bad")
        try:
            answers = Answers(values)
            train = held_out_of(answers, train)
            count = run_length(answers, train, reg).steps
        except (ValueError, TypeError, UserError):  # half-typed bucket or batch settings
            return None
        warning = None if tiny or values.get("base_model") == Q.BUILTIN_TINY else steps_warning(count.total_steps)
        level = "ok" if warning is None else ("bad" if count.total_steps > SURELY_TOO_MANY else "warn")
        return StepsLine(count.line(), level, warning or bucket_rounding_note(count))


def held_out_of(answers: Answers, train):
    """The training scan without the validation split's images, as the plan counts it."""
    from easytrain.data.validation_split import hold_out

    split = answers.get("validation_split", 0.0)
    if not isinstance(split, (int, float)) or isinstance(split, bool):
        return train
    return hold_out(train, fraction=float(split), seed=int(answer(answers, "validation_seed")))[0]
