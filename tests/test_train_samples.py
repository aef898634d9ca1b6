"""Sample images during training: before training, every N epochs, as events, without changing training."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from _train_helpers import Recorder, fast_plan
from easytrain.errors import UserError
from easytrain.train import events as ev
from easytrain.train.loop import run_training

PROMPTS = "# two quick prompts\na red square --s 2 --d 5\na blue square --n green --s 2 --w 128 --h 64\n"
SETTINGS = dict(epochs=3, batch_size=8, save_precision="float")   # 2 steps an epoch


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("samples")
    prompts = tmp / "prompts.txt"
    prompts.write_text(PROMPTS, encoding="utf-8")
    plan = fast_plan(tmp, **SETTINGS, sample_images=True, sample_prompts=str(prompts), sample_every_n_epochs=2,
                     sample_before_training=True)
    events = Recorder()
    result = run_training(plan, events)
    return plan, events, result


def test_samples_are_written_before_training_and_every_n_epochs(sampled):
    plan, _, _ = sampled
    folder = plan.saving.output_dir / "sample"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fast_e000000_00_5.png", "fast_e000000_01_1.png", "fast_e000000_sheet.png",
        "fast_e000002_00_5.png", "fast_e000002_01_1.png", "fast_e000002_sheet.png",
    ]
    with Image.open(folder / "fast_e000002_01_1.png") as image:
        assert image.size == (128, 64)
    with Image.open(folder / "fast_e000002_00_5.png") as image:
        assert image.size == (64, 64)              # the run's resolution when the prompt gives none


def test_sampling_is_told_as_events(sampled):
    plan, events, _ = sampled
    saved = events.of(ev.SampleSaved)
    assert [(s.epoch, s.prompt) for s in saved] == [
        (0, "a red square"), (0, "a blue square"), (2, "a red square"), (2, "a blue square")]
    assert all(s.path.startswith(str(plan.saving.output_dir / "sample")) for s in saved)
    kinds = [(type(e).__name__, getattr(e, "phase", None)) for e in events]
    sampling = [k for k in kinds if k[1] == "sampling"]
    assert sampling == [("PhaseStarted", "sampling"), ("PhaseProgress", "sampling"), ("PhaseProgress", "sampling"),
                        ("PhaseEnded", "sampling")] * 2
    assert events.of(ev.PhaseStarted)[-1].total == 2
    names = [type(e).__name__ for e in events]
    assert names.index("SampleSaved") < names.index("StepEnded")          # the before-training samples


def test_a_run_with_samples_trains_like_one_without(sampled, tmp_path):
    _, _, with_samples = sampled
    without = run_training(fast_plan(tmp_path, **SETTINGS), Recorder())
    expected = load_file(without.final_path)
    for key, value in load_file(with_samples.final_path).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7, msg=key)


def test_a_bad_prompts_file_is_reported_before_training(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat --s many\n", encoding="utf-8")
    plan = fast_plan(tmp_path, sample_images=True, sample_prompts=str(prompts), sample_every_n_epochs=1)
    events = Recorder()
    with pytest.raises(UserError, match="prompts.txt"):
        run_training(plan, events)
    assert not events.of(ev.StepEnded)
