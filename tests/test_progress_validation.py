"""The validation loss in the views, metrics.csv and loss.png; a run without one says nothing of it."""

from __future__ import annotations

import csv
import dataclasses
import io

from PIL import Image
from rich.console import Console

from easytrain.progress import MetricsWriter, PlainView, RichView
from easytrain.progress.loss_plot import VALIDATION
from easytrain.train import events as ev

from tests._progress_helpers import FakeClock, run_started, step


def validated_run(sink, steps=8) -> None:
    sink(dataclasses.replace(run_started(total_steps=steps, epochs=2), validation_images=3))
    for i in range(1, steps + 1):
        sink(step(i, steps_per_epoch=steps // 2, loss=0.3 - i / 100))
        if i in (2, 4, 6, 8):
            sink(ev.ValidationDone(step=i, epoch=(i - 1) // 4 + 1, loss={2: 0.25, 4: 0.2, 6: 0.22, 8: 0.23}[i]))
    sink(ev.RunFinished(steps, 4.0, "/out/run/mylora.safetensors", 0.2))


def test_plain_lines_show_each_validation_and_the_best_so_far():
    out = io.StringIO()
    validated_run(PlainView(out, every=4, clock=FakeClock()))
    lines = out.getvalue().splitlines()
    assert "validation loss 0.2500 at step 2" in lines
    assert "validation loss 0.2000 at step 4" in lines
    assert "validation loss 0.2200 at step 6, best 0.2000 at step 4" in lines
    assert [line for line in lines if line.startswith("step 8/8")][0].split(" | ")[4] == "val 0.2200"   # printed before step 8's own


def test_rich_panel_shows_the_validation_figure():
    console = Console(record=True, width=100, force_terminal=True, color_system="standard")
    view = RichView(console, clock=FakeClock())
    validated_run(view)
    console.print(view.panel)
    text = console.export_text()
    assert "val loss" in text and "0.2300" in text and "at step 8" in text and "best 0.2000 at step 4" in text


def test_metrics_csv_column_and_loss_png_dots(tmp_path):
    writer = MetricsWriter(tmp_path, "mylora")
    validated_run(writer)
    with open(tmp_path / "mylora.metrics.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][-1] == "validation_loss" and len(rows) == 9
    assert [(row[0], row[-1]) for row in rows[1:] if row[-1]] == [("2", "0.25"), ("4", "0.2"), ("6", "0.22"),
                                                                  ("8", "0.23")]
    with Image.open(tmp_path / "mylora.loss.png") as image:
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1_000_000)}
    assert VALIDATION in colours


def test_a_resumed_run_keeps_earlier_validation_rows(tmp_path):
    validated_run(MetricsWriter(tmp_path, "mylora"))
    writer = MetricsWriter(tmp_path, "mylora")
    writer(dataclasses.replace(run_started(total_steps=8, epochs=2, start_step=4), validation_images=3))
    assert writer.validation == [(2, 0.25), (4, 0.2)]
    writer(ev.ValidationDone(step=4, epoch=1, loss=0.2))           # measured again before the first new step
    writer(step(5, steps_per_epoch=4))
    writer.close()
    with open(tmp_path / "mylora.metrics.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert [row[0] for row in rows[1:]] == ["1", "2", "3", "4", "4", "5"]
    assert rows[5][2] == "" and rows[5][-1] == "0.2"


def test_without_validation_nothing_is_said(tmp_path):
    out = io.StringIO()
    view = PlainView(out, every=1, clock=FakeClock())
    writer = MetricsWriter(tmp_path, "mylora")
    for sink in (view, writer):
        sink(run_started(total_steps=2, epochs=1))
        sink(step(1))
        sink(step(2))
        sink(ev.RunFinished(2, 1.0, "/out/run/mylora.safetensors", 0.2))
    assert "val" not in out.getvalue()
    assert "validation" not in (tmp_path / "mylora.metrics.csv").read_text()
