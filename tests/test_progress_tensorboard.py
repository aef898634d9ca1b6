"""TensorBoard event files, read back with tensorboard's own reader."""

from __future__ import annotations

import pytest
from PIL import Image

from _progress_helpers import run_started, step
from _train_helpers import Recorder, fast_plan
from easytrain.progress import fan_out
from easytrain.progress.tensorboard import TensorBoardWriter, log_dir
from easytrain.train import events as ev

pytest.importorskip("tensorboard")


def read_back(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_scalars_at_the_log_cadence_validation_and_samples(tmp_path):
    Image.new("RGB", (48, 32), (200, 30, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (16, 16), (30, 30, 200)).save(tmp_path / "b.png")
    writer = TensorBoardWriter(tmp_path, "mylora", every=5)
    writer(run_started(total_steps=12, epochs=2, output_dir=str(tmp_path)))
    for i in range(1, 13):
        writer(step(i, steps_per_epoch=6, peak=3 * 2**30, loss=0.5 - i / 100))
        if i == 6:
            writer(ev.ValidationDone(step=6, epoch=1, loss=0.25))
            writer(ev.SampleSaved(str(tmp_path / "a.png"), 1, "a red square"))
            writer(ev.SampleSaved(str(tmp_path / "b.png"), 1, "a blue square"))
    writer(ev.ValidationDone(step=12, epoch=2, loss=0.2))
    writer(ev.RunFinished(12, 3.0, str(tmp_path / "mylora.safetensors"), 0.4))

    board = read_back(log_dir(tmp_path, "mylora"))
    assert log_dir(tmp_path, "mylora") == tmp_path / "logs" / "mylora"
    tags = board.Tags()
    assert set(tags["scalars"]) == {"loss/train", "loss/smoothed", "loss/validation", "lr/unet", "lr/text_encoder",
                                    "speed/it_per_s", "speed/images_per_s", "gpu/peak_memory_gib"}
    train = board.Scalars("loss/train")
    assert [s.step for s in train] == [5, 10, 12]                  # every 5 steps and the last one
    assert [s.value for s in train] == pytest.approx([0.45, 0.40, 0.38])
    assert [(s.step, s.value) for s in board.Scalars("loss/validation")] == [(6, 0.25), (12, pytest.approx(0.2))]
    assert board.Scalars("lr/unet")[0].value == pytest.approx(5e-4)
    assert board.Scalars("gpu/peak_memory_gib")[0].value == pytest.approx(3.0)
    assert board.Scalars("speed/it_per_s")[0].value == pytest.approx(2.0)   # 0.5 s a step
    assert sorted(tags["images"]) == ["samples/prompt 01", "samples/prompt 02"]
    red = board.Images("samples/prompt 01")
    assert [(i.step, i.width, i.height) for i in red] == [(6, 48, 32)]
    assert red[0].encoded_image_string == (tmp_path / "a.png").read_bytes()


def test_a_real_run_logs_every_step_loss_and_its_samples(tmp_path):
    from easytrain.train.loop import run_training

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square --s 2 --d 5\na blue square --s 2 --w 128 --h 64\n", encoding="utf-8")
    plan = fast_plan(tmp_path, epochs=2, batch_size=16, sample_images=True, sample_prompts=str(prompts),
                     sample_every_n_epochs=1)                      # one step an epoch
    events = Recorder()
    writer = TensorBoardWriter(plan.saving.output_dir, plan.saving.output_name, every=1)
    run_training(plan, fan_out(events, writer))

    board = read_back(log_dir(plan.saving.output_dir, plan.saving.output_name))
    steps = events.of(ev.StepEnded)
    assert [(s.step, s.value) for s in board.Scalars("loss/train")] == [
        (e.step, pytest.approx(e.loss, rel=1e-6)) for e in steps]
    assert len(board.Scalars("lr/unet")) == len(steps) == 2
    blue = board.Images("samples/prompt 02")
    assert [(i.step, i.width, i.height) for i in blue] == [(1, 128, 64), (2, 128, 64)]


def test_a_resumed_run_replaces_what_the_stopped_one_logged_after_its_state(tmp_path):
    """Stopped at step 8 with a state at step 5: the resumed run's steps 6-8 replace the first run's."""
    import time

    first = TensorBoardWriter(tmp_path, "mylora", every=1)
    first(run_started(total_steps=10, epochs=2, output_dir=str(tmp_path)))
    for i in range(1, 9):
        first(step(i, steps_per_epoch=5, loss=1.0))
    first(ev.RunStopped(8, "ctrl+c"))
    time.sleep(1.1)  # event files are named by the second they were opened in
    resumed = TensorBoardWriter(tmp_path, "mylora", every=1)
    resumed(run_started(total_steps=10, epochs=2, output_dir=str(tmp_path), start_step=5))
    for i in range(6, 11):
        resumed(step(i, steps_per_epoch=5, loss=0.5))
    resumed(ev.RunFinished(10, 3.0, str(tmp_path / "mylora.safetensors"), 0.5))

    board = read_back(log_dir(tmp_path, "mylora"))
    assert len(list(log_dir(tmp_path, "mylora").iterdir())) == 2
    assert [(s.step, s.value) for s in board.Scalars("loss/train")] == [(i, 1.0) for i in range(1, 6)] + \
        [(i, 0.5) for i in range(6, 11)]
