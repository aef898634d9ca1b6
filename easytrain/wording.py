"""Small wording helpers shared by the CLI, the plan and the wizard (standard library only)."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """"1 epoch", "2 epochs"."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def bucket_rounding_note(count) -> str | None:
    """Why a StepCount's steps per epoch exceed images / batch (None when they do not).

    Each batch takes pictures of one bucket (one shape), so a bucket whose count is not a multiple of
    the batch size ends in a smaller batch that still takes a step: 180 images at batch 2 can be 91 steps.
    """
    from math import ceil

    batch = max(1, count.batch_size)
    plain = ceil(ceil(count.images_per_epoch / batch) / max(1, count.accumulation))
    if count.steps_per_epoch <= plain:
        return None
    return (f"{count.steps_per_epoch} steps per epoch, not {plain}: each batch holds pictures of one shape "
            f"(bucket), so a bucket that does not fill its last batch still takes a step")


def terminal_width(stream) -> int | None:
    """The terminal's width when ``stream`` is a terminal; None for a pipe or a file (lines stay whole there)."""
    import shutil

    try:
        if not stream.isatty():
            return None
    except (AttributeError, ValueError, OSError):
        return None
    return shutil.get_terminal_size((80, 24)).columns


def wrap_lines(lines, width: int | None) -> list[str]:
    """Each line wrapped to ``width`` (None: unchanged), continuation lines indented under their line's text."""
    import textwrap

    if not width:
        return list(lines)
    wrapped: list[str] = []
    for line in lines:
        if len(line) <= width:
            wrapped.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        wrapped += textwrap.wrap(line.strip(), max(20, width - 1), initial_indent=indent,
                                 subsequent_indent=indent + "    ", break_long_words=False,
                                 break_on_hyphens=False) or [line]
    return wrapped
