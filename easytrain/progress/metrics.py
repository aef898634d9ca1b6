"""A sink that keeps `NAME.metrics.csv` next to the outputs and draws `NAME.loss.png` at the end.

Both carry the run's name, so a second run with another name in the same output
folder never overwrites them (`metrics.csv` and `loss.png` of earlier versions
are still read by `compare`).

Columns: step, epoch, loss, one `lr_<group>` per learning-rate group, seconds
(the wall time of that step), and `validation_loss` when the run holds images
out (filled on the rows of the steps it was measured after, empty elsewhere).
Rows are buffered and written every few seconds.
A resumed run (RunStarted.start_step > 0) keeps the rows up to its start step
and continues the same file; a fresh run starts a new file.
"""

from __future__ import annotations

import csv
import math
import time
from array import array
from pathlib import Path
from typing import Callable, Optional, TextIO

from easytrain.fsutil import atomic_write_text
from easytrain.progress.loss_plot import write_loss_png
from easytrain.train import events as ev

CSV_SUFFIX = ".metrics.csv"
PNG_SUFFIX = ".loss.png"
LEGACY_CSV_NAME = "metrics.csv"   # what versions before issue 28 wrote, one per folder
LEGACY_PNG_NAME = "loss.png"


def metrics_csv_path(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / f"{name}{CSV_SUFFIX}"


def loss_png_path(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / f"{name}{PNG_SUFFIX}"


class MetricsWriter:
    def __init__(self, output_dir: str | Path, name: str, *, flush_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.output_dir = Path(output_dir)
        self.name = name
        self.csv_path = metrics_csv_path(output_dir, name)
        self.png_path = loss_png_path(output_dir, name)
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._file: Optional[TextIO] = None
        self._pending: list[str] = []
        self._last_flush = clock()
        self._columns = 0
        self._validation_column = False
        self._held: Optional[list[str]] = None      # with validation: the last step's row, not yet final
        self.steps = array("q")
        self.losses = array("d")
        self.validation: list[tuple[int, float]] = []

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __call__(self, event: ev.Event) -> None:
        if type(event) is ev.StepEnded:
            self._on_step(event)
        elif isinstance(event, ev.ValidationDone):
            self._on_validation(event)
        elif isinstance(event, ev.RunStarted):
            self._start(event.lr_groups, event.start_step, validation=event.validation_images > 0)
        elif isinstance(event, (ev.RunFinished, ev.RunStopped, ev.RunFailed)):
            self.close()
            self.draw()

    def _start(self, lr_groups: tuple[str, ...], start_step: int, *, validation: bool = False) -> None:
        self.close()
        header = ["step", "epoch", "loss", *(f"lr_{group}" for group in lr_groups), "seconds"]
        if validation:
            header.append("validation_loss")
        kept = self._rows_to_keep(header, start_step) if start_step > 0 else []
        self.steps = array("q", (int(row[0]) for row in kept if row[2]))
        self.losses = array("d", (float(row[2]) for row in kept if row[2]))
        self.validation = [(int(row[0]), float(row[-1])) for row in kept if validation and row[-1]]
        lines = [",".join(header)] + [",".join(row) for row in kept]
        atomic_write_text(self.csv_path, "\n".join(lines) + "\n")
        self._columns = len(lr_groups)
        self._validation_column = validation
        self._file = open(self.csv_path, "a", encoding="utf-8", newline="")
        self._last_flush = self.clock()

    def _rows_to_keep(self, header: list[str], start_step: int) -> list[list[str]]:
        """Rows of an earlier session up to the resume point, if the file has our columns."""
        try:
            with open(self.csv_path, encoding="utf-8", newline="") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError):
            return []
        if not rows or rows[0] != header:
            return []
        kept = []
        for row in rows[1:]:
            try:
                if len(row) == len(header) and int(row[0]) <= start_step:
                    float(row[2] or 0)
                    kept.append(row)
            except ValueError:
                continue
        return kept

    def _on_step(self, event: ev.StepEnded) -> None:
        if self._file is None:
            self._start(tuple(str(i) for i in range(len(event.lrs))), 0)
        lrs = [f"{lr:.6g}" for lr in event.lrs[:self._columns]]
        lrs += [""] * (self._columns - len(lrs))
        row = [str(event.step), str(event.epoch), f"{event.loss:.6g}", *lrs, f"{event.seconds:.4f}"]
        if self._validation_column:
            self._release_held()
            self._held = row + [""]
        else:
            self._pending.append(",".join(row) + "\n")
        self.steps.append(event.step)
        self.losses.append(event.loss)
        if self.clock() - self._last_flush >= self.flush_seconds:
            self.flush()

    def _on_validation(self, event: ev.ValidationDone) -> None:
        self.validation.append((event.step, event.loss))
        if not self._validation_column or self._file is None:
            return
        if self._held is None or self._held[0] != str(event.step):
            # measured before any step of this session (a resumed run's first save): a row of its own
            self._release_held()
            self._held = [str(event.step), str(event.epoch), "", *([""] * self._columns), "", ""]
        self._held[-1] = f"{event.loss:.6g}"

    def _release_held(self) -> None:
        if self._held is not None:
            self._pending.append(",".join(self._held) + "\n")
            self._held = None

    def flush(self) -> None:
        if self._file is None:
            return
        if self._pending:
            self._file.write("".join(self._pending))
            self._pending.clear()
        self._file.flush()
        self._last_flush = self.clock()

    def close(self) -> None:
        if self._file is not None:
            self._release_held()
            self.flush()
            self._file.close()
            self._file = None

    def draw(self) -> Optional[Path]:
        """Write loss.png from the losses seen so far; None when there are none."""
        if not any(math.isfinite(v) for v in self.losses):
            return None
        title = f"{self.name}: training and validation loss" if self.validation else f"{self.name}: training loss"
        write_loss_png(self.png_path, self.steps, self.losses, title, self.validation)
        return self.png_path
