"""`easytrain compare`: the table and the grid of a real run's saved files, finished or stopped."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from _train_helpers import Recorder, fast_plan
from easytrain.cli import main
from easytrain.commands.compare import table_lines
from easytrain.progress import MetricsWriter, fan_out
from easytrain.review.grid import grid_path, write_grid
from easytrain.review.saved_files import review_run
from easytrain.train import events as ev
from easytrain.train.control import TrainControl
from easytrain.train.loop import run_training

PROMPTS = "a red square --s 2 --d 5\na blue square --s 2 --w 128 --h 64\n"


def train(plan, control=None):
    events = Recorder()
    metrics = MetricsWriter(plan.output_dir, plan.output_name)
    run_training(plan, fan_out(events, metrics), control)
    metrics.close()
    return events


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Three epochs of one step, a file and two samples after each."""
    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    plan = fast_plan(tmp, epochs=3, batch_size=16, save_every_n_epochs=1, sample_images=True,
                     sample_prompts=str(tmp / "prompts.txt"), sample_every_n_epochs=1, save_state=False)
    return plan, train(plan)


def test_table_lists_every_saved_file_with_its_losses_size_and_samples(finished, capsys):
    plan, events = finished
    assert main(["compare", str(plan.output_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"3 saved files of fast in {plan.output_dir}:"
    assert lines[1].split() == ["file", "epoch", "step", "train", "loss", "val", "loss", "size", "samples"]
    losses = [e.loss for e in events.of(ev.StepEnded)]
    for row, (name, epoch, loss) in zip(lines[2:5], [("fast-000001.safetensors", 1, losses[0]),
                                                     ("fast-000002.safetensors", 2, losses[1]),
                                                     ("fast.safetensors", 3, losses[2])]):
        cells = row.split()
        assert cells[:5] == [name, str(epoch), str(epoch), f"{float(f'{loss:.6g}'):.4f}", "-"]   # as in metrics.csv
        assert cells[6] == "KiB"
        assert cells[7:] == [f"sample/fast_e{epoch:06d}_00_5.png", f"sample/fast_e{epoch:06d}_01_1.png"]
    assert "lowest validation loss" not in out                   # none measured: nothing said
    assert f"picture: {plan.output_dir / 'fast_compare.png'}" in out


def test_grid_has_a_row_per_file_and_a_column_per_prompt(finished):
    plan, _ = finished
    with Image.open(plan.output_dir / "fast_compare.png") as picture:
        width, height = picture.size
    # label column + 2 prompt columns of the widest sample (128 px); 3 rows of the tallest cell
    assert width == 220 + 2 * (128 + 8) + 8
    assert height > 3 * 64


def test_lowest_validation_loss_is_marked_in_table_and_grid(finished, tmp_path):
    plan, _ = finished
    folder = tmp_path / "copy"
    shutil.copytree(plan.output_dir, folder)
    for name, loss in (("fast-000001", 0.3), ("fast-000002", 0.1), ("fast", 0.2)):
        path = folder / f"{name}.safetensors"
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
        save_file(load_file(path), path, metadata={**metadata, "ss_validation_loss": str(loss)})
    review = review_run(folder)
    assert review.best.path.name == "fast-000002.safetensors"
    lines = table_lines(review)
    assert "0.1000 *" in lines[3] and "*" not in lines[2] + lines[4]
    assert lines[-1] == "lowest validation loss (*): fast-000002.safetensors (0.1000)"
    with Image.open(write_grid(review)) as picture:
        rgb = picture.convert("RGB")
        framed = [rgb.getpixel((3, y)) for y in range(rgb.height)]
    assert (30, 150, 60) in framed                               # the green frame on the best row only
    row_top = framed.index((30, 150, 60))
    assert sum(1 for pixel in framed if pixel == (30, 150, 60)) < rgb.height / 2
    assert row_top > rgb.height / 3


def test_a_stopped_run_compares_its_step_file(tmp_path, capsys):
    plan = fast_plan(tmp_path, epochs=3, batch_size=16, save_every_n_epochs=1, save_state=False)
    control = TrainControl()

    def stop_after_two(event):
        if isinstance(event, ev.StepEnded) and event.step == 2:
            control.request_stop("test")

    train_events = Recorder()
    metrics = MetricsWriter(plan.output_dir, plan.output_name)
    run_training(plan, fan_out(train_events, metrics, stop_after_two), control)
    metrics.close()
    assert main(["compare", str(plan.output_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[2:4]] == [["fast-000001.safetensors", "1", "1"],
                                                         ["fast-step00000002.safetensors", "2", "2"]]
    assert "no sample images to compare" in lines[-1]
    assert not grid_path(review_run(plan.output_dir)).exists()


def test_bad_folders_are_one_line_exit_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"easytrain: {tmp_path / 'nope'}: output folder not found"
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "b-000001.safetensors").write_bytes(b"x")
    assert main(["compare", str(tmp_path)]) == 2
    assert "several runs (a, b); pick one with --name" in capsys.readouterr().err
    assert main(["compare", str(tmp_path), "--name", "c"]) == 2
    assert "no LoRA files of a run named 'c'" in capsys.readouterr().err
