"""The few lines printed after a run: what was written and what to do with it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from easytrain.invocation import command
from easytrain.progress import format as fmt
from easytrain.train import events as ev
from easytrain.wording import plural

MAX_FILES_LISTED = 12


def summary_lines(event: ev.RunFinished | ev.RunStopped | ev.RunFailed, *,
                  extra_files: Iterable[str | Path] = (),
                  resume_command: Optional[str] = None, start_step: int = 0,
                  trigger: Optional[str] = None,
                  webui: tuple[str, str] = ("AUTOMATIC1111", "stable-diffusion-webui/models/Lora")) -> list[str]:
    """Plain text lines (no markup) summing up a finished, stopped or failed run.

    `extra_files` adds files written beside the run's own (the epoch and step
    files, the sample folder, metrics.csv, loss.png); `resume_command` is shown for a stopped run, e.g.
    "easytrain train answers/mylora.json --resume". `start_step` is the step a resumed session began
    after (its time covers only the steps after it); `trigger` is the word the captions start with;
    `webui` the web UI that applies the file and its LoRA folder (the architecture's catalog entry).
    """
    if isinstance(event, ev.RunFinished):
        return _finished(event, extra_files, start_step, trigger, webui)
    if isinstance(event, ev.RunStopped):
        return _stopped(event, resume_command)
    if isinstance(event, ev.RunFailed):
        return _failed(event, resume_command)
    raise TypeError(f"summary_lines takes RunFinished, RunStopped or RunFailed, not {type(event).__name__}")


def _finished(event: ev.RunFinished, extra_files: Iterable[str | Path], start_step: int,
              trigger: Optional[str], webui: tuple[str, str]) -> list[str]:
    final = Path(event.final_path)
    name = final.stem
    if 0 < start_step < event.step:
        ran = (f"steps {start_step + 1}-{event.step} (resumed after step {start_step}; "
               f"{plural(event.step, 'step')} in all) in {fmt.duration(event.seconds)}")
    else:
        ran = f"{plural(event.step, 'step')} in {fmt.duration(event.seconds)}"
    lines = [f"Training finished: {ran}, final average loss {fmt.loss(event.average_loss)}."]
    files = _unique([str(final), *(str(f) for f in extra_files if str(f).endswith(".safetensors")),
                     *event.files, *(str(f) for f in extra_files)])
    lines.append("Files written:")
    lines += [f"  {f}" for f in files[:MAX_FILES_LISTED]]
    if len(files) > MAX_FILES_LISTED:
        lines.append(f"  ... and {len(files) - MAX_FILES_LISTED} more in {final.parent}")
    lines += [
        "",
        f"To use it in {webui[0]}: copy {final.name} into {webui[1]},",
        (f"then add {trigger} and <lora:{name}:1> to a prompt" if trigger else f"then add <lora:{name}:1> to a prompt")
        + " (lower the 1, e.g. 0.7, if it overpowers the image).",
        "In ComfyUI: copy it into ComfyUI/models/loras and pick it in a LoraLoader node.",
    ]
    if sum(1 for f in files if f.endswith(".safetensors")) > 1:
        lines.append(f"To pick among the saved files: {command('compare', str(final.parent))}")
    return lines


def _stopped(event: ev.RunStopped, resume_command: Optional[str]) -> list[str]:
    lines = [f"Training stopped at step {event.step}: {event.reason}."]
    if event.saved_path:
        lines.append(f"Saved so far: {event.saved_path}")
    if event.state_path:
        lines.append(f"Training state: {event.state_path}")
        lines.append(f"To continue: {resume_command or command('train', 'ANSWERS_FILE', '--resume')}")
    return lines


def _failed(event: ev.RunFailed, resume_command: Optional[str]) -> list[str]:
    lines = [f"Training failed at step {event.step}: {event.reason}."]
    if event.advice:
        lines.append(f"What usually helps: {event.advice}")
    if event.last_good_path:
        lines.append(f"The last good file is kept: {event.last_good_path}")
        if resume_command:
            lines.append(f"To continue from the last saved state: {resume_command}")
    return lines


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
