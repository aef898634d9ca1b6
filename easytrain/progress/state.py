"""The numbers a progress view shows, kept up to date from events.

`RunState.apply(event)` runs once per event, possibly thousands of times a
second on the tiny model, so a step event only updates a handful of numbers.
Anything costlier (rates, ETA, the sparkline string) is computed when a view
asks for it, a few times a second at most.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional

from easytrain.train import events as ev

LOSS_EMA_WEIGHT = 0.02       # about the last 50 steps
SPEED_EMA_WEIGHT = 0.1       # about the last 10 steps
SPARK_POINTS = 60


@dataclass
class Phase:
    name: str
    total: Optional[int]
    done: int
    started: float


class RunState:
    def __init__(self, clock: Callable[[], float] = time.monotonic, spark_points: int = SPARK_POINTS) -> None:
        self.clock = clock
        self.started_at = clock()
        self.name = ""
        self.device = ""
        self.output_dir = ""
        self.total_steps = 0
        self.epochs = 0
        self.steps_per_epoch = 0
        self.start_step = 0
        self.lr_groups: tuple[str, ...] = ()

        self.step = 0
        self.epoch = 0
        self.loss: Optional[float] = None
        self.lrs: tuple[float, ...] = ()
        self.peak_memory_bytes: Optional[int] = None
        self.steps_seen = 0                   # steps of this session (resume starts at 0)

        self._loss_ema = 0.0
        self._loss_ema_weight_sum = 0.0
        self._epoch_loss_sum = 0.0
        self._epoch_loss_count = 0
        self._epoch_of_sum = 0
        self.last_epoch_average: Optional[float] = None

        self._seconds_ema: Optional[float] = None
        self._images_ema: Optional[float] = None
        self._first_step_at: Optional[float] = None

        # Sparkline: each point is the mean loss of `_spark_chunk` steps.
        self._spark = deque(maxlen=spark_points)
        self._spark_points = spark_points
        self._spark_chunk = 1
        self._spark_sum = 0.0
        self._spark_count = 0

        self.phases: dict[str, Phase] = {}
        self.last_checkpoint: Optional[str] = None
        self.last_sample: Optional[str] = None
        self.validation_loss: Optional[float] = None
        self.validation_step = 0
        self.best_validation: Optional[tuple[float, int]] = None     # (loss, step)
        self.outcome: Optional[ev.Event] = None

    # ---- events -------------------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        if type(event) is ev.StepEnded:       # the hot path, checked first
            self._on_step(event)
        elif isinstance(event, ev.RunStarted):
            self._on_run_started(event)
        elif isinstance(event, ev.PhaseStarted):
            self.phases[event.phase] = Phase(event.phase, event.total, 0, self.clock())
        elif isinstance(event, ev.PhaseProgress):
            phase = self.phases.get(event.phase)
            if phase is None:
                phase = self.phases[event.phase] = Phase(event.phase, event.total, 0, self.clock())
            phase.done = event.done
            if event.total is not None:
                phase.total = event.total
        elif isinstance(event, ev.PhaseEnded):
            self.phases.pop(event.phase, None)
        elif isinstance(event, ev.EpochEnded):
            self.last_epoch_average = event.average_loss
        elif isinstance(event, ev.CheckpointSaved):
            self.last_checkpoint = event.path
        elif isinstance(event, ev.SampleSaved):
            self.last_sample = event.path
        elif isinstance(event, ev.ValidationDone):
            self._on_validation(event)
        elif isinstance(event, (ev.RunFinished, ev.RunStopped, ev.RunFailed)):
            self.outcome = event
            self.phases.clear()

    def _on_run_started(self, event: ev.RunStarted) -> None:
        self.name = event.name
        self.device = event.device
        self.output_dir = event.output_dir
        self.total_steps = event.total_steps
        self.epochs = event.epochs
        self.steps_per_epoch = event.steps_per_epoch
        self.start_step = event.start_step
        self.step = event.start_step
        self.lr_groups = tuple(event.lr_groups)
        remaining = max(1, event.total_steps - event.start_step)
        # The sparkline window covers roughly the last quarter of the run.
        self._spark_chunk = max(1, math.ceil(remaining / (4 * self._spark_points)))

    def _on_validation(self, event: ev.ValidationDone) -> None:
        self.validation_loss = event.loss
        self.validation_step = event.step
        if math.isfinite(event.loss) and (self.best_validation is None or event.loss < self.best_validation[0]):
            self.best_validation = (event.loss, event.step)

    def _on_step(self, event: ev.StepEnded) -> None:
        self.step = event.step
        self.epoch = event.epoch
        if event.epoch != self._epoch_of_sum:
            self._epoch_of_sum = event.epoch
            self._epoch_loss_sum = 0.0
            self._epoch_loss_count = 0
        loss = event.loss
        self.loss = loss
        self.lrs = event.lrs
        if event.peak_memory_bytes is not None:
            self.peak_memory_bytes = event.peak_memory_bytes
        self.steps_seen += 1

        if loss == loss and loss not in (math.inf, -math.inf):
            w = LOSS_EMA_WEIGHT
            self._loss_ema = (1 - w) * self._loss_ema + w * loss
            self._loss_ema_weight_sum = (1 - w) * self._loss_ema_weight_sum + w
            self._epoch_loss_sum += loss
            self._epoch_loss_count += 1
            self._spark_sum += loss
            self._spark_count += 1
            if self._spark_count >= self._spark_chunk:
                self._spark.append(self._spark_sum / self._spark_count)
                self._spark_sum = 0.0
                self._spark_count = 0

        s = event.seconds
        if self._seconds_ema is None:
            self._seconds_ema = s
            self._images_ema = float(event.images)
            self._first_step_at = self.clock()
        else:
            w = SPEED_EMA_WEIGHT
            self._seconds_ema = (1 - w) * self._seconds_ema + w * s
            self._images_ema = (1 - w) * self._images_ema + w * event.images

    # ---- derived numbers (called at render time) -----------------------------

    @property
    def loss_average(self) -> Optional[float]:
        """Exponential moving average of the loss, corrected for its start at zero."""
        if self._loss_ema_weight_sum <= 0:
            return None
        return self._loss_ema / self._loss_ema_weight_sum

    @property
    def epoch_average(self) -> Optional[float]:
        if not self._epoch_loss_count:
            return None
        return self._epoch_loss_sum / self._epoch_loss_count

    @property
    def epoch_average_differs(self) -> bool:
        """False while this epoch holds every step seen so far: its average covers the same steps as the
        running one, so showing both says the same thing twice."""
        return 0 < self._epoch_loss_count < self.steps_seen

    @property
    def seconds_per_step(self) -> Optional[float]:
        """Recent step time, from the loop's own step timings."""
        return self._seconds_ema

    @property
    def images_per_second(self) -> Optional[float]:
        if not self._seconds_ema or self._images_ema is None:
            return None
        return self._images_ema / self._seconds_ema

    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.started_at)

    def eta(self) -> Optional[float]:
        """Seconds left, from the wall-clock pace since the first step of this session.

        Wall clock includes saving and sampling pauses, so the estimate covers
        them too; the first step is left out because it carries warm-up costs.
        """
        remaining = self.total_steps - self.step
        if remaining <= 0:
            return 0.0 if self.total_steps else None
        if self._first_step_at is not None and self.steps_seen > 1:
            span = self.clock() - self._first_step_at
            if span > 0:
                return remaining * span / (self.steps_seen - 1)
        if self._seconds_ema:
            return remaining * self._seconds_ema
        return None

    def sparkline_points(self) -> list[float]:
        return list(self._spark)
