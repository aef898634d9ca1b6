"""The wording of one-line reports, shared by the Rich and the plain view."""

from __future__ import annotations

from typing import Optional

from easytrain.progress import format as fmt
from easytrain.progress.state import RunState
from easytrain.train import events as ev
from easytrain.wording import plural


def step_line(state: RunState) -> str:
    parts = [f"step {state.step}/{state.total_steps}" if state.total_steps else f"step {state.step}"]
    if state.epochs:
        parts.append(f"epoch {state.epoch}/{state.epochs}")
    parts.append(f"loss {fmt.loss(state.loss)}")
    parts.append(f"avg {fmt.loss(state.loss_average)}")
    if state.validation_loss is not None:
        parts.append(f"val {fmt.loss(state.validation_loss)}")
    if state.lrs:
        parts.append("lr " + " ".join(f"{name}={fmt.learning_rate(lr)}" for name, lr in lr_pairs(state)))
    parts.append(fmt.speed(state.seconds_per_step))
    parts.append(fmt.images_per_second(state.images_per_second))
    parts.append(f"elapsed {fmt.duration(state.elapsed())}")
    parts.append(f"eta {fmt.duration(state.eta())}")
    if state.peak_memory_bytes is not None:
        parts.append(f"peak mem {fmt.memory(state.peak_memory_bytes)}")
    return " | ".join(parts)


ESTIMATE_AFTER_STEPS = 5  # the run-time estimate is said once, when this session has timed this many steps


def estimate_line(state: RunState) -> Optional[str]:
    """Once, after the first few timed steps: how long the rest will take at this pace; None otherwise."""
    if state.steps_seen != ESTIMATE_AFTER_STEPS or not state.total_steps:
        return None
    left = state.total_steps - state.step
    eta = state.eta()
    if left <= 0 or eta is None:
        return None
    import time

    finish = time.strftime("%H:%M", time.localtime(time.time() + eta))
    day = "" if eta < 20 * 3600 else f" on {time.strftime('%a %d %b', time.localtime(time.time() + eta))}"
    return (f"time estimate: about {fmt.duration(eta)} for the {plural(left, 'step')} left at this pace "
            f"({fmt.speed(state.seconds_per_step)}), done around {finish}{day}")


def best_text(state: RunState) -> str:
    """", best 0.1234 at step 300" when an earlier evaluation was lower than the last one."""
    best = state.best_validation
    if best is None or best[1] == state.validation_step:
        return ""
    return f", best {fmt.loss(best[0])} at step {best[1]}"


def lr_pairs(state: RunState) -> list[tuple[str, float]]:
    names = state.lr_groups
    return [(names[i] if i < len(names) else str(i), lr) for i, lr in enumerate(state.lrs)]


def event_line(event: ev.Event, state: RunState) -> Optional[str]:
    """One line describing a non-step event; None for step events."""
    if isinstance(event, ev.RunStarted):
        text = (f"training {event.name} on {event.device}: {plural(event.total_steps, 'step')} "
                f"({plural(event.epochs, 'epoch')} x {plural(event.steps_per_epoch, 'step')}, batch {event.batch_size}, "
                f"{plural(event.num_images, 'image')} per epoch)")
        if event.start_step:
            text += f", resuming after step {event.start_step}"
        return text
    if isinstance(event, ev.PhaseStarted):
        return f"{event.phase}..." if event.total is None else f"{event.phase} 0/{event.total}..."
    if isinstance(event, ev.PhaseProgress):
        return f"{event.phase} {event.done}/{event.total}" if event.total else f"{event.phase} {event.done}"
    if isinstance(event, ev.PhaseEnded):
        text = f"{event.phase} done in {event.seconds:.1f} s"
        if event.peak_memory_bytes is not None:
            text += f", peak GPU {fmt.memory(event.peak_memory_bytes)}"
        return text
    if isinstance(event, ev.EpochEnded):
        of = f"/{state.epochs}" if state.epochs else ""
        return f"epoch {event.epoch}{of} done at step {event.step}, average loss {fmt.loss(event.average_loss)}"
    if isinstance(event, ev.CheckpointSaved):
        if event.epoch_finished:
            text = f"saved epoch {event.epoch} (step {event.step}): {event.path}"
        else:
            text = f"saved at step {event.step} (epoch {event.epoch} in progress): {event.path}"
        if event.state_path:
            text += f" (state: {event.state_path})"
        return text
    if isinstance(event, ev.ValidationDone):
        return f"validation loss {fmt.loss(event.loss)} at step {event.step}{best_text(state)}"
    if isinstance(event, ev.SampleSaved):
        if event.step is not None:
            return f"sample at step {event.step}: {event.path}"
        return f"sample for epoch {event.epoch}: {event.path}"
    if isinstance(event, ev.Message):
        return f"warning: {event.text}" if event.level == "warning" else event.text
    if isinstance(event, ev.RunFinished):
        return None  # the summary printed after the view (progress/summary.py) says it, once
    if isinstance(event, ev.RunStopped):
        text = f"stopped at step {event.step}: {event.reason}"
        if event.saved_path:
            text += f"; saved {event.saved_path}"
        return text
    if isinstance(event, ev.RunFailed):
        text = f"failed at step {event.step}: {event.reason}"
        if event.advice:
            text += f". {event.advice}"
        if event.last_good_path:
            text += f" Last good file: {event.last_good_path}"
        return text
    return None
