"""A sink that writes TensorBoard event files under ``OUTPUT/logs/NAME/``.

Scalars (training loss, smoothed loss, validation loss, learning rates, it/s,
images/s, peak GPU memory) and the sample images, written with the
`tensorboard` package's own event-file writer, which queues records and writes
them on its own thread: the training step never waits for the disk. Step
scalars are written every `every` steps (the loop reads the loss back from the
GPU at that cadence, so values in between would only repeat it).

`tensorboard` is imported when the run starts, never by the wizard.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Optional

from easytrain.progress.state import RunState
from easytrain.train import events as ev

LOG_FOLDER = "logs"
GIB = 1024 ** 3


def log_dir(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / LOG_FOLDER / name


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardWriter:
    def __init__(self, output_dir: str | Path, name: str, *, every: int = 10) -> None:
        self.folder = log_dir(output_dir, name)
        self.every = max(1, int(every))
        self.state = RunState()
        self._writer = None
        self._sample_tags: dict[str, str] = {}

    def __enter__(self) -> "TensorBoardWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __call__(self, event: ev.Event) -> None:
        state = self.state
        state.apply(event)
        if type(event) is ev.StepEnded:
            if event.step % self.every == 0 or event.step == state.total_steps:
                self._step_scalars(event)
        elif isinstance(event, ev.ValidationDone):
            self._scalars(event.step, {"loss/validation": event.loss})
        elif isinstance(event, ev.SampleSaved):
            self._image(event)
        elif isinstance(event, ev.RunStarted):
            self._open(event.start_step)
        elif isinstance(event, (ev.RunFinished, ev.RunStopped, ev.RunFailed)):
            self.close()

    def _open(self, start_step: int = 0) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.folder), flush_secs=10)
        if start_step:
            # A resumed run starts over after start_step: TensorBoard drops what the earlier event
            # files logged from here on (what torch's SummaryWriter(purge_step=...) writes).
            self._writer.add_event(Event(wall_time=time.time(), step=start_step + 1,
                                         session_log=SessionLog(status=SessionLog.START)))

    def _step_scalars(self, event: ev.StepEnded) -> None:
        state = self.state
        values = {"loss/train": event.loss}
        if state.loss_average is not None:
            values["loss/smoothed"] = state.loss_average
        for index, lr in enumerate(event.lrs):
            group = state.lr_groups[index] if index < len(state.lr_groups) else str(index)
            values[f"lr/{group}"] = lr
        if state.seconds_per_step:
            values["speed/it_per_s"] = 1.0 / state.seconds_per_step
        if state.images_per_second:
            values["speed/images_per_s"] = state.images_per_second
        if event.peak_memory_bytes is not None:
            values["gpu/peak_memory_gib"] = event.peak_memory_bytes / GIB
        self._scalars(event.step, values)

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is None:
            return
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value)) for tag, value in values.items()])
        self._add(step, summary)

    def _image(self, event: ev.SampleSaved) -> None:
        if self._writer is None:
            return
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        try:
            encoded = Path(event.path).read_bytes()
            with Image.open(event.path) as image:
                width, height = image.size
        except OSError:         # the sample went missing: nothing to show, training goes on
            return
        tag = self._sample_tags.setdefault(event.prompt, f"samples/prompt {len(self._sample_tags) + 1:02d}")
        picture = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
        self._add(self.state.step, Summary(value=[Summary.Value(tag=tag, image=picture)]))

    def _add(self, step: int, summary) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> Optional[Path]:
        """Write what is queued and close the event file; the log folder, or None if none was opened."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        return self.folder
