"""`easytrain compare`: the table and the grid of a real run's saved files, finished or stopped."""

from __future__ import annotations

import pytest
from PIL import Image

from _train_helpers import Recorder, fast_plan
from easytrain.cli import main
from easytrain.progress import MetricsWriter, fan_out
from easytrain.review.grid import grid_path, write_grid
from easytrain.review.saved_files import review_run
from easytrain.train import events as ev
from easytrain.train.control import TrainControl
from easytrain.train.loop import run_training

PROMPTS = "a red square --s 2 --d 5\na blue square --s 2 --w 128 --h 64\n"


def train(plan, control=None):
    events = Recorder()
    metrics = MetricsWriter(plan.saving.output_dir, plan.saving.output_name)
    run_training(plan, fan_out(events, metrics), control)
    metrics.close()
    return events


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Three epochs of one step, a file and two samples after each; one image of four held out."""
    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    plan = fast_plan(tmp, epochs=3, batch_size=16, save_every_n_epochs=1, sample_images=True,
                     sample_prompts=str(tmp / "prompts.txt"), sample_every_n_epochs=1, save_state=False,
                     validation_split=0.25)
    return plan, train(plan)


def test_table_lists_every_saved_file_with_its_losses_size_and_samples(finished, capsys):
    plan, events = finished
    assert main(["compare", str(plan.saving.output_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"3 saved files of fast in {plan.saving.output_dir}:"
    assert lines[1].split() == ["file", "epoch", "step", "train", "loss", "val", "loss", "size", "samples"]
    losses = [e.loss for e in events.of(ev.StepEnded)]
    validation = [v.loss for v in events.of(ev.ValidationDone)]
    best = validation.index(min(validation))
    names = ["fast-000001.safetensors", "fast-000002.safetensors", "fast.safetensors"]
    for epoch, (row, name) in enumerate(zip(lines[2:5], names), 1):
        cells = row.split()
        loss = f"{float(f'{losses[epoch - 1]:.6g}'):.4f}"               # as metrics.csv keeps it
        assert cells[:5] == [name, str(epoch), str(epoch), loss, f"{validation[epoch - 1]:.4f}"]
        marked = cells[5] == "*"
        assert marked == (epoch - 1 == best)
        assert cells[6 + marked:] == ["KiB", f"sample/fast_e{epoch:06d}_00_5.png", f"sample/fast_e{epoch:06d}_01_1.png"]
    assert lines[5] == f"lowest validation loss (*): {names[best]} ({validation[best]:.4f})"
    assert f"picture: {plan.saving.output_dir / 'fast_compare.png'}" in out


def test_grid_has_a_row_per_file_and_a_column_per_prompt(finished):
    plan, _ = finished
    with Image.open(plan.saving.output_dir / "fast_compare.png") as picture:
        width, height = picture.size
    # label column + 2 prompt columns of the widest sample (128 px); 3 rows of the tallest cell
    assert width == 220 + 2 * (128 + 8) + 8
    assert height > 3 * 64


def test_the_grid_frames_the_row_of_the_lowest_validation_loss(finished):
    plan, events = finished
    validation = [v.loss for v in events.of(ev.ValidationDone)]
    best = validation.index(min(validation))
    review = review_run(plan.saving.output_dir)
    assert review.best.validation_loss == min(validation)
    with Image.open(write_grid(review)) as picture:
        rgb = picture.convert("RGB")
    framed = [y for y in range(rgb.height) if rgb.getpixel((3, y)) == (30, 150, 60)]
    pitch = max(framed) - min(framed) + 1                  # the frame spans one row and its padding
    header = rgb.height - 3 * pitch - 8
    assert (min(framed) + 4 - header) / pitch == best      # ... the row of the best file


def test_a_stopped_run_compares_its_step_file(tmp_path, capsys):
    plan = fast_plan(tmp_path, epochs=3, batch_size=16, save_every_n_epochs=1, save_state=False)
    control = TrainControl()

    def stop_after_two(event):
        if isinstance(event, ev.StepEnded) and event.step == 2:
            control.request_stop("test")

    train_events = Recorder()
    metrics = MetricsWriter(plan.saving.output_dir, plan.saving.output_name)
    run_training(plan, fan_out(train_events, metrics, stop_after_two), control)
    metrics.close()
    assert main(["compare", str(plan.saving.output_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[2:4]] == [["fast-000001.safetensors", "1", "1"],
                                                         ["fast-step00000002.safetensors", "2", "2"]]
    assert "no sample images to compare" in lines[-1]
    assert not [line for line in lines if "lowest validation loss" in line]   # none measured: nothing said
    assert not grid_path(review_run(plan.saving.output_dir)).exists()


def test_bad_folders_are_one_line_exit_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"easytrain: {tmp_path / 'nope'}: output folder not found"
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "b-000001.safetensors").write_bytes(b"x")
    assert main(["compare", str(tmp_path)]) == 2
    assert "several runs (a, b); pick one with --name" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "--name", "c"]) == 2
    assert "no LoRA files of a run named 'c'" in capsys.readouterr().err
