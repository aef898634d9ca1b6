"""Rich live view for a terminal.

Events only update a `RunState`; `RunPanel` reads that state whenever Rich
refreshes the live area (a few times a second, on Rich's own thread), so the
cost per training step is a few attribute writes. Rare events (epochs,
checkpoints, warnings) are also printed as lines above the live area, which
leaves a readable history in the scrollback.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from easytrain.progress import format as fmt
from easytrain.progress.lines import ESTIMATE_AFTER_STEPS, best_text, estimate_line, event_line, lr_pairs
from easytrain.progress.state import RunState
from easytrain.train import events as ev

MAX_WIDTH = 100
LABEL = "dim"
LABEL_WIDTH = 6
_EVENT_STYLES = {
    ev.RunStarted: "bold",
    ev.PhaseEnded: "dim",
    ev.EpochEnded: "cyan",
    ev.CheckpointSaved: "green",
    ev.SampleSaved: "magenta",
    ev.RunFinished: "bold green",
    ev.RunStopped: "bold yellow",
    ev.RunFailed: "bold red",
}


class RunPanel:
    """Renders the current state of a run; re-rendered on each refresh."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Two columns stay free: a "^C" the terminal echoes after the last border must not wrap and
        # scroll, or the next refresh would start one line low and leave a stray border in the scrollback.
        width = min(options.max_width - 2, MAX_WIDTH)
        s = self.state
        rows: list = []
        bars = self._bars()
        if bars.row_count:
            rows.append(bars)
        if s.steps_seen:
            rows.append(self._numbers(width - 4))
        if not rows:
            rows.append(Text("starting...", style=LABEL))
        title = Text.assemble(("easytrain", "bold"), (f" · {s.name}" if s.name else ""))
        subtitle = Text(s.device, style=LABEL) if s.device else None
        yield Panel(Group(*rows), title=title, title_align="left", subtitle=subtitle,
                    subtitle_align="right", width=width, border_style="blue")

    def _bars(self) -> Table:
        """The steps bar and one bar per running phase, in one table so the bars line up."""
        s = self.state
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(no_wrap=True, max_width=24, overflow="ellipsis", style="bold")
        table.add_column(ratio=1)
        table.add_column(no_wrap=True, justify="right")
        if s.total_steps or s.steps_seen:
            total = s.total_steps or None
            count = f"{s.step}/{total} {fmt.percent(s.step, total)}" if total else str(s.step)
            table.add_row("steps", _progress_bar(s.step, total, "cyan"), count)
        now = s.clock()
        for phase in list(s.phases.values()):
            if phase.total:
                count = f"{phase.done}/{phase.total} {fmt.percent(phase.done, phase.total)}"
            else:
                count = str(phase.done) if phase.done else fmt.duration(now - phase.started)
            table.add_row(phase.name, _progress_bar(phase.done, phase.total, "magenta"), count)
        return table

    def _numbers(self, width: int) -> Group:
        s = self.state
        numbers = _grid(4)
        epoch = f"{s.epoch}/{s.epochs}" if s.epochs else str(s.epoch)
        numbers.add_row("epoch", epoch, f"elapsed {fmt.duration(s.elapsed())}",
                        Text(f"ETA {fmt.duration(s.eta())}", style="bold"))
        numbers.add_row("loss", Text(fmt.loss(s.loss), style="bold"), f"avg {fmt.loss(s.loss_average)}",
                        f"epoch avg {fmt.loss(s.epoch_average)}" if s.epoch_average_differs else "")
        if s.validation_loss is not None:
            numbers.add_row("val loss", Text(fmt.loss(s.validation_loss), style="bold"),
                            f"at step {s.validation_step}", best_text(s).lstrip(", "))
        memory = f"peak GPU {fmt.memory(s.peak_memory_bytes)}" if s.peak_memory_bytes is not None else ""
        numbers.add_row("speed", fmt.speed(s.seconds_per_step), fmt.images_per_second(s.images_per_second),
                        memory)

        # Long values get their own two-column grid so they never squeeze the numbers.
        details = _grid(2)
        value_width = max(10, width - LABEL_WIDTH - 2)
        pairs = lr_pairs(s)
        if pairs:
            lrs = "  ".join(f"{name} {fmt.learning_rate(lr)}" for name, lr in pairs)
            details.add_row("lr", Text(lrs, overflow="ellipsis"))
        if s.last_checkpoint:
            details.add_row("saved", Text(fmt.shorten_path(s.last_checkpoint, value_width), style="green"))
        if s.last_sample:
            details.add_row("sample", Text(fmt.shorten_path(s.last_sample, value_width), style="magenta"))
        spark = fmt.sparkline(s.sparkline_points()[-value_width:])
        if spark:
            details.add_row("trend", Text(spark, style="yellow"))
        return Group(numbers, details)


def _grid(columns: int) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style=LABEL, no_wrap=True, min_width=LABEL_WIDTH)
    for _ in range(columns - 1):
        grid.add_column(no_wrap=True, overflow="ellipsis")
    return grid


def _progress_bar(done: int, total: Optional[int], colour: str) -> ProgressBar:
    return ProgressBar(total=total, completed=done, pulse=not total, complete_style=colour,
                       finished_style="green")


class RichView:
    """Context manager and event sink showing a live panel on a terminal."""

    def __init__(self, console: Optional[Console] = None, *, refresh_per_second: float = 4.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console if console is not None else Console()
        self.state = RunState(clock)
        self.panel = RunPanel(self.state)
        self._live = Live(self.panel, console=self.console, refresh_per_second=refresh_per_second,
                          transient=False)

    def __enter__(self) -> "RichView":
        self._live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._live.stop()

    def note(self, text: str) -> None:
        """A line above the live area (what a signal handler says): printed any other way, it would
        shift the live area and leave a stray copy of the panel behind."""
        self.console.print(Text(text, style="yellow"), overflow="fold")

    def __call__(self, event: ev.Event) -> None:
        self.state.apply(event)
        if type(event) is ev.StepEnded:
            if self.state.steps_seen == ESTIMATE_AFTER_STEPS:    # once: the run's length at the pace measured
                estimate = estimate_line(self.state)
                if estimate:
                    self.console.print(Text(estimate, style="bold"), overflow="fold")
            return      # shown by the live panel, not as lines
        if isinstance(event, (ev.PhaseStarted, ev.PhaseProgress)):
            return
        line = event_line(event, self.state)
        if line is None:
            return
        if isinstance(event, ev.Message):
            style = "yellow" if event.level == "warning" else ""
        else:
            style = _EVENT_STYLES.get(type(event), "")
        self.console.print(Text(line, style=style), overflow="fold")
