"""Saves and samples every N steps, the validation loss during a run, and resuming from a step save."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from _train_helpers import Recorder, fast_plan
from easytrain.data.dataset import TrainDataset
from easytrain.progress import MetricsWriter, fan_out
from easytrain.train import events as ev
from easytrain.train.loop import run_training

# 4 images x 4 repeats, one held out: 3 x 4 = 12 an epoch, batch 4: 3 steps an epoch, 6 in all.
SETTINGS = dict(epochs=2, batch_size=4, save_every_n_epochs=1, save_every_n_steps=2, validation_split=0.25,
                validation_seed=4, save_precision="float", keep_states=10, sample_images=True,
                sample_every_n_epochs=0, sample_every_n_steps=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("best")
    (tmp / "prompts.txt").write_text("a red square --s 1 --d 5\n", encoding="utf-8")
    plan = fast_plan(tmp, **SETTINGS, sample_prompts=str(tmp / "prompts.txt"))
    events = Recorder()
    with MetricsWriter(plan.saving.output_dir, plan.saving.output_name) as metrics:
        result = run_training(plan, fan_out(events, metrics))
    return plan, events, result


def metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata()


def test_step_saves_sit_between_the_epoch_saves_with_kohya_names(run):
    plan, events, result = run
    assert plan.total_steps == 6 and plan.validation.images == 1
    saved = [(e.step, plan.saving.output_dir / e.path) for e in events.of(ev.CheckpointSaved)]
    assert [(step, path.name) for step, path in saved] == [
        (2, "fast-step00000002.safetensors"), (3, "fast-000001.safetensors"),
        (4, "fast-step00000004.safetensors"), (6, "fast.safetensors")]
    assert (plan.saving.output_dir / "fast-step00000002-state").is_dir()       # save_state is on
    assert [metadata(path)["ss_steps"] for _, path in saved] == ["2", "3", "4", "6"]


def test_step_samples_are_named_by_step(run):
    plan, events, _ = run
    assert sorted(p.name for p in (plan.saving.output_dir / "sample").iterdir()) == [
        "fast_000002_00_5.png", "fast_000002_sheet.png", "fast_000004_00_5.png", "fast_000004_sheet.png"]
    assert [(s.step, s.epoch) for s in events.of(ev.SampleSaved)] == [(2, 1), (4, 2)]


def test_validation_at_every_save_in_the_metadata_and_it_changes_with_training(run):
    plan, events, _ = run
    measured = events.of(ev.ValidationDone)
    assert [v.step for v in measured] == [2, 3, 4, 6]                  # once per step, at each saved file
    assert len({v.loss for v in measured}) == 4                        # the weights changed between them
    for v in measured:
        name = {2: "fast-step00000002", 3: "fast-000001", 4: "fast-step00000004", 6: "fast"}[v.step]
        assert float(metadata(plan.saving.output_dir / f"{name}.safetensors")["ss_validation_loss"]) == v.loss
    started = events.of(ev.RunStarted)[0]
    assert started.validation_images == 1


def test_held_out_images_never_reach_a_training_batch(run):
    plan, _, _ = run
    held = {image.path for image in plan.validation_scan.all_images}
    assert len(held) == 1 and not held & {image.path for image in plan.train_scan.all_images}
    dataset = TrainDataset(plan.train_scan, plan.reg_scan, plan.bucket_settings, seed=plan.run.seed)
    trained = {dataset.samples[i].entry.path for epoch in (1, 2) for batch in dataset.epoch_batches(epoch, 4)
               for i in batch.samples}
    assert len(trained) == 3 and not trained & held


def test_metrics_csv_carries_the_validation_column(run):
    plan, events, _ = run
    with open(plan.saving.output_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][-1] == "validation_loss"
    assert [(int(r[0]), float(r[-1])) for r in rows[1:] if r[-1]] == [
        (v.step, pytest.approx(v.loss, rel=1e-5)) for v in events.of(ev.ValidationDone)]


def test_resume_from_a_step_save_ends_with_the_same_file(run, tmp_path):
    plan, events, _ = run
    out = plan.saving.output_dir
    whole = load_file(out / "fast.safetensors")
    (out / "fast.safetensors").unlink()
    resumed_events = Recorder()
    run_training(plan, resumed_events, resume=str(out / "fast-step00000004-state"))
    assert resumed_events.of(ev.RunStarted)[0].start_step == 4
    again = load_file(out / "fast.safetensors")
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)
    # the same weights measure the same validation loss
    assert resumed_events.of(ev.ValidationDone)[-1].loss == events.of(ev.ValidationDone)[-1].loss
