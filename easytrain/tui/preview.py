"""The steps preview shown under every question once the image folder is known.

The numbers come from the same functions the plan uses (data.buckets.count_epoch
and plan.count_steps), so the wizard never promises a different count than
`easytrain check` prints. Scans are cached per folder: they read file headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from easytrain import questions as Q
from easytrain.answers import Answers
from easytrain.data.buckets import count_epoch
from easytrain.data.scan import DatasetScan, apply_repeats, scan_image_folder
from easytrain.errors import UserError
from easytrain.plan import SURELY_TOO_MANY, bucket_settings, count_steps, steps_warning


@dataclass(frozen=True)
class StepsLine:
    text: str
    level: str  # "ok" | "warn" | "bad"
    warning: Optional[str] = None


class StepsPreview:
    """Computes the status line from the current answers, scanning each folder once."""

    def __init__(self) -> None:
        self._scans: dict[tuple[str, str, bool], DatasetScan] = {}

    def scan(self, folder: str, base_dir: Path, caption_extension: str = ".txt", is_reg: bool = False) -> DatasetScan:
        """Scan a folder answer (cached); raises UserError as scan_image_folder does."""
        path = Q.resolve(folder, base_dir).resolve()
        key = (str(path), caption_extension, is_reg)
        if key not in self._scans:
            self._scans[key] = scan_image_folder(path, caption_extension=caption_extension, is_reg=is_reg)
        return self._scans[key]

    def forget(self) -> None:
        self._scans.clear()

    def line(self, values: Mapping[str, Any], base_dir: Path) -> Optional[StepsLine]:
        """The preview for ``values``; None until the image folder is answered and scans."""
        folder = values.get("image_folder")
        if not folder:
            return None
        extension = values.get("caption_extension") or ".txt"
        try:
            train = self.scan(folder, base_dir, extension)
            reg = None
            if values.get("use_regularization") and values.get("reg_image_folder"):
                reg = self.scan(values["reg_image_folder"], base_dir, extension, is_reg=True)
            train, reg = apply_repeats(train, reg, values.get("folder_repeats"))
        except UserError:
            return None
        if train.total_images == 0:
            return StepsLine("no usable images in the image folder yet", "bad")
        answers = Answers(values)
        batch = values.get("batch_size") or 1
        try:
            epoch = count_epoch(train, reg, bucket_settings(answers), batch)
        except (ValueError, UserError):  # half-typed bucket settings
            return None
        count = count_steps(images=train.total_images, images_per_epoch=epoch.images_per_epoch,
                            steps_per_epoch=epoch.steps_per_epoch, batch_size=batch,
                            length_by=values.get("length_by") or "epochs", epochs=values.get("epochs"),
                            max_steps=values.get("max_steps"))
        warning = steps_warning(count.total_steps)
        level = "ok" if warning is None else ("bad" if count.total_steps > SURELY_TOO_MANY else "warn")
        return StepsLine(count.line(), level, warning)
