"""Learning-rate schedules as pure functions of the step.

Each schedule maps the optimizer step (0-based: the step about to be taken)
to a factor of the base learning rate, so tests can check the formula and a
resumed run lands on the same rate. The formulas are the ones diffusers and
transformers use (and so kohya's sd-scripts): a linear ramp ``step / warmup``,
then the named decay over the remaining steps. Every schedule except
``constant`` gets the warmup, including those that nominally lack one.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

from easytrain.catalog import SCHEDULERS
from easytrain.errors import UserError

Schedule = Callable[[int], float]


def _warmup(step: int, warmup_steps: int) -> float:
    return step / max(1, warmup_steps)


def _progress(step: int, warmup_steps: int, total_steps: int) -> float:
    """How far past the warmup the step is: 0.0 at its end, 1.0 at the last step."""
    return (step - warmup_steps) / max(1, total_steps - warmup_steps)


def constant(step: int) -> float:
    return 1.0


def constant_with_warmup(step: int, *, warmup_steps: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return 1.0


def linear(step: int, *, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    return max(0.0, 1.0 - _progress(step, warmup_steps, total_steps))


def cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Half a cosine wave from 1 down to 0."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = _progress(step, warmup_steps, total_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_with_restarts(step: int, *, warmup_steps: int, total_steps: int, cycles: int) -> float:
    """``cycles`` half-cosines in a row, each starting again at the full rate."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = _progress(step, warmup_steps, total_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def polynomial(step: int, *, warmup_steps: int, total_steps: int, power: float) -> float:
    """(1 - progress) ** power down to an end rate of 0."""
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    if step > total_steps:
        return 0.0
    remaining = 1.0 - _progress(step, warmup_steps, total_steps)
    return max(0.0, remaining) ** power


# One factor-of-step function per catalog name, given the run's numbers.
SCHEDULE_FUNCTIONS: dict[str, Callable[..., Schedule]] = {
    "constant": lambda **_: constant,
    "constant_with_warmup": lambda *, warmup_steps, **_: partial(constant_with_warmup, warmup_steps=warmup_steps),
    "linear": lambda *, warmup_steps, total_steps, **_: partial(linear, warmup_steps=warmup_steps,
                                                               total_steps=total_steps),
    "cosine": lambda *, warmup_steps, total_steps, **_: partial(cosine, warmup_steps=warmup_steps,
                                                               total_steps=total_steps),
    "cosine_with_restarts": lambda *, warmup_steps, total_steps, restarts, **_: partial(
        cosine_with_restarts, warmup_steps=warmup_steps, total_steps=total_steps, cycles=max(1, int(restarts or 1))),
    "polynomial": lambda *, warmup_steps, total_steps, power, **_: partial(
        polynomial, warmup_steps=warmup_steps, total_steps=total_steps,
        power=float(power if power is not None else 1.0)),
}


def schedule_function(name: str, *, total_steps: int, warmup_steps: int = 0,
                      restarts: int = 1, power: float = 1.0) -> Schedule:
    """The factor-of-step function for a scheduler name from the answers file."""
    if name not in SCHEDULE_FUNCTIONS:
        raise UserError(f"scheduler: unknown scheduler {name!r}; allowed: {', '.join(SCHEDULERS)}")
    return SCHEDULE_FUNCTIONS[name](warmup_steps=warmup_steps, total_steps=total_steps, restarts=restarts,
                                    power=power)


def build_scheduler(optimizer, name: str, *, total_steps: int, warmup_steps: int = 0,
                    restarts: int = 1, power: float = 1.0):
    """A torch LambdaLR applying the named schedule to every parameter group."""
    from torch.optim.lr_scheduler import LambdaLR

    fn = schedule_function(name, total_steps=total_steps, warmup_steps=warmup_steps,
                           restarts=restarts, power=power)
    return LambdaLR(optimizer, fn)
