import csv
import logging
from pathlib import Path
import math

import pytest
from PIL import Image

from easytrain.progress import MetricsWriter, fan_out, summary_lines
from easytrain.progress.loss_plot import nice_ticks, smooth
from easytrain.train import events as ev

from tests._progress_helpers import FakeClock, run_started, step


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _finish(steps):
    return ev.RunFinished(step=steps, seconds=42.0, final_path="/out/run/mylora.safetensors", average_loss=0.1)


def test_metrics_csv_rows_and_loss_png(tmp_path):
    clock = FakeClock()
    writer = MetricsWriter(tmp_path, "mylora", flush_seconds=5.0, clock=clock)
    writer(run_started(total_steps=300, epochs=3, output_dir=str(tmp_path)))
    for i in range(1, 4):
        writer(step(i, steps_per_epoch=100, loss=0.25 + i / 100, seconds=0.125))
    # Buffered: nothing but the header on disk until the flush interval passes.
    header = ["step", "epoch", "loss", "lr_unet", "lr_text_encoder", "seconds"]
    assert _rows(tmp_path / "mylora.metrics.csv") == [header]
    clock.now += 6
    writer(step(4, steps_per_epoch=100, loss=0.29, seconds=0.125))
    rows = _rows(tmp_path / "mylora.metrics.csv")
    assert rows[1] == ["1", "1", "0.26", "0.0005", "0.0001", "0.1250"]
    assert len(rows) == 5

    for i in range(5, 301):
        writer(step(i, steps_per_epoch=100, loss=0.2 + 0.1 * math.sin(i / 7) * math.exp(-i / 150)))
    writer(_finish(300))
    rows = _rows(tmp_path / "mylora.metrics.csv")
    assert len(rows) == 301 and rows[-1][:2] == ["300", "3"]
    with Image.open(tmp_path / "mylora.loss.png") as image:
        image.verify()
    with Image.open(tmp_path / "mylora.loss.png") as image:
        assert image.format == "PNG" and image.size == (1200, 675)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colours) > 50                                   # a drawn curve, not a blank canvas


@pytest.mark.parametrize("outcome", [
    ev.RunStopped(step=7, reason="Ctrl+C"),
    ev.RunFailed(step=7, reason="loss became NaN", advice="try bf16"),
])
def test_loss_png_also_after_a_stopped_or_failed_run_with_nan(tmp_path, outcome):
    writer = MetricsWriter(tmp_path, "mylora")
    writer(run_started(output_dir=str(tmp_path)))
    for i in range(1, 7):
        writer(step(i))
    writer(step(7, loss=float("nan")))
    writer(outcome)
    rows = _rows(tmp_path / "mylora.metrics.csv")
    assert rows[-1][2] == "nan" and len(rows) == 8
    with Image.open(tmp_path / "mylora.loss.png") as image:
        assert image.size == (1200, 675)


def test_no_png_without_losses_and_single_step_plots(tmp_path):
    writer = MetricsWriter(tmp_path, "empty")
    writer(run_started(output_dir=str(tmp_path)))
    writer(ev.RunFailed(step=0, reason="out of GPU memory"))
    assert not (tmp_path / "empty.loss.png").exists()
    writer(run_started(output_dir=str(tmp_path)))
    writer(step(1))
    writer(_finish(1))
    assert (tmp_path / "empty.loss.png").exists()


def test_resume_keeps_rows_up_to_the_resume_step(tmp_path):
    first = MetricsWriter(tmp_path, "mylora")
    first(run_started(output_dir=str(tmp_path)))
    for i in range(1, 13):
        first(step(i))
    first(ev.RunStopped(step=12, reason="Ctrl+C"))

    resumed = MetricsWriter(tmp_path, "mylora")
    resumed(run_started(start_step=10, output_dir=str(tmp_path)))
    for i in range(11, 15):
        resumed(step(i))
    resumed(_finish(14))
    assert [row[0] for row in _rows(tmp_path / "mylora.metrics.csv")[1:]] == [str(i) for i in range(1, 15)]
    assert list(resumed.steps) == list(range(1, 15))

    fresh = MetricsWriter(tmp_path, "mylora")
    fresh(run_started(output_dir=str(tmp_path)))
    fresh(step(1))
    fresh.close()
    assert len(_rows(tmp_path / "mylora.metrics.csv")) == 2


def test_steps_without_run_started_get_numbered_lr_columns(tmp_path):
    writer = MetricsWriter(tmp_path, "bare")
    with writer:
        writer(step(1))
    assert _rows(tmp_path / "bare.metrics.csv")[0] == ["step", "epoch", "loss", "lr_0", "lr_1", "seconds"]


def test_plot_helpers():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 4870, 6)[:3] == [1000, 2000, 3000]
    assert smooth([1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0]          # no pull towards zero at the start


def test_fan_out_survives_a_failing_sink(caplog):
    received_a, received_b = [], []

    def broken(event):
        raise RuntimeError("disk full")

    sink = fan_out(received_a.append, broken, received_b.append)
    with caplog.at_level(logging.ERROR, logger="easytrain"):
        for i in range(1, 4):
            sink(step(i))
    assert len(received_a) == len(received_b) == 3
    errors = [r for r in caplog.records if r.name == "easytrain"]
    assert len(errors) == 1 and "RuntimeError: disk full" in errors[0].getMessage()
    assert errors[0].exc_info is None                       # one line on screen: no traceback
    report = errors[0].getMessage().split("details in ")[1]
    assert "raise RuntimeError" in Path(report).read_text()  # ... it is in the report file


def test_fan_out_lets_keyboard_interrupt_through():
    def interrupted(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fan_out(interrupted)(step(1))


def test_summary_of_a_finished_run():
    event = ev.RunFinished(step=1000, seconds=3725.0, final_path="/out/run/mylora.safetensors",
                           average_loss=0.0987,
                           files=("/out/run/mylora-000001.safetensors", "/out/run/mylora.safetensors"))
    lines = summary_lines(event, extra_files=["/out/run/metrics.csv", "/out/run/loss.png"])
    text = "\n".join(lines)
    assert "1000 steps in 1:02:05" in text and "final average loss 0.0987" in text
    assert [line.strip() for line in lines if line.startswith("  /")] == [
        "/out/run/mylora.safetensors", "/out/run/mylora-000001.safetensors",
        "/out/run/metrics.csv", "/out/run/loss.png"]
    assert "<lora:mylora:1>" in text and "copy mylora.safetensors into stable-diffusion-webui/models/Lora" in text
    assert lines[-1].startswith("To pick among the saved files: ") and lines[-1].endswith("compare /out/run")
    alone = summary_lines(ev.RunFinished(step=5, seconds=1.0, final_path="/o/a.safetensors", average_loss=0.1))
    assert "compare" not in "\n".join(alone)


def test_summary_of_stopped_and_failed_runs():
    stopped = summary_lines(ev.RunStopped(step=55, reason="Ctrl+C", saved_path="/o/a-000002.safetensors",
                                          state_path="/o/a-000002-state"),
                            resume_command="easytrain train answers/a.json --resume")
    assert stopped[0] == "Training stopped at step 55: Ctrl+C."
    assert stopped[-1] == "To continue: easytrain train answers/a.json --resume"
    failed = summary_lines(ev.RunFailed(step=9, reason="loss became NaN", advice="Use bf16.",
                                        last_good_path="/o/a-000001.safetensors"))
    assert "What usually helps: Use bf16." in failed
    assert failed[-1] == "The last good file is kept: /o/a-000001.safetensors"
    with pytest.raises(TypeError):
        summary_lines(step(1))
