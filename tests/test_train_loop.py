"""run_training end to end on the embedded tiny model, on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from _train_helpers import Recorder, fast_plan, tiny_plan
from easytrain import answers as answers_file
from easytrain.train import events as ev
from easytrain.train.control import TrainControl
from easytrain.train.loop import RunResult, run_training


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The defaults a user gets (AdamW8bit, cosine with restarts, min-SNR 5, 225 tokens,
    fp16 asked for), two epochs of two steps, a file per epoch."""
    tmp = tmp_path_factory.mktemp("full")
    plan = tiny_plan(tmp, optimizer="AdamW8bit", scheduler="cosine_with_restarts", mixed_precision="fp16",
                     comment="trigger: colours")
    events = Recorder()
    result = run_training(plan, events)
    return plan, events, result


def test_writes_epoch_files_final_file_and_run_copies(full_run):
    plan, _, result = full_run
    out = plan.saving.output_dir
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tiny-000001-state", "tiny-000001.safetensors", "tiny.answers.json", "tiny.plan.json",
                     "tiny.safetensors", "tiny_tags.txt"]
    names.remove("tiny-000001-state")       # a folder (save_state is on by default), not in result.files
    assert isinstance(result, RunResult)
    assert result.final_path == out / "tiny.safetensors" and result.steps == plan.total_steps == 4
    assert set(result.files) == {out / n for n in names}
    assert answers_file.load(out / "tiny.answers.json") == plan.answers
    assert json.loads((out / "tiny.plan.json").read_text())["total_steps"] == 4
    assert (out / "tiny_tags.txt").read_text().splitlines()[0] == "4 colours"


def test_saved_files_carry_the_step_epoch_and_run_metadata(full_run):
    plan, _, _ = full_run
    with safe_open(plan.saving.output_dir / "tiny-000001.safetensors", "pt") as f:
        first = f.metadata()
    with safe_open(plan.saving.output_dir / "tiny.safetensors", "pt") as f:
        final = f.metadata()
        up_keys = [k for k in f.keys() if k.endswith("lora_up.weight")]
        ups = [f.get_tensor(k) for k in up_keys]
        alphas = [f.get_tensor(k) for k in f.keys() if k.endswith(".alpha")]
    assert (first["ss_steps"], first["ss_epoch"]) == ("2", "1")
    assert (final["ss_steps"], final["ss_epoch"]) == ("4", "2")
    assert final["ss_training_comment"] == "trigger: colours"
    assert final["ss_clip_skip"] == "2" and final["ss_base_model_version"] == "sd_v1"
    assert json.loads(final["ss_tag_frequency"])["1_colours"]["colours"] == 4
    assert json.loads(final["ss_dataset_dirs"]) == {"1_colours": {"n_repeats": 1, "img_count": 4}}
    assert final["ss_mixed_precision"] == "no"          # fp16 fell back on the CPU
    assert final["ss_optimizer"].startswith("AdamW8bit")
    assert ups[0].dtype == torch.float16
    assert any(u.abs().max() > 0 for u in ups)          # trained: the up weights left zero
    # with gradient checkpointing on (the default), the text encoder's adapters train too
    assert final["ss_gradient_checkpointing"] == "True"
    assert any(u.abs().max() > 0 for k, u in zip(up_keys, ups) if k.startswith("lora_te_"))
    assert all(float(a) == 4.0 for a in alphas)


def test_events_tell_the_run_in_order(full_run):
    _, events, result = full_run
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("PhaseStarted") < kinds.index("RunStarted") < kinds.index("StepEnded")
    assert kinds[-1] == "RunFinished" and events[-1] == result.outcome
    assert [e.step for e in events.of(ev.StepEnded)] == [1, 2, 3, 4]
    assert [(e.epoch, e.step) for e in events.of(ev.EpochEnded)] == [(1, 2), (2, 4)]
    assert [e.step for e in events.of(ev.CheckpointSaved)] == [2, 4]
    started = events.of(ev.RunStarted)[0]
    assert started.lr_groups == ("unet", "text_encoder") and started.device == "cpu"
    steps = events.of(ev.StepEnded)
    assert all(len(e.lrs) == 2 and e.images == 2 and e.loss == e.loss for e in steps)
    caching = [e for e in events.of(ev.PhaseProgress) if e.phase == "caching latents"]
    assert caching[-1].done == caching[-1].total == 4
    assert any("fp16" in m.text for m in events.of(ev.Message))
    assert not any("AdamW8bit is not available" in m.text for m in events.of(ev.Message))


def test_loss_goes_down_on_a_fixed_dataset(tmp_path):
    # 4 steps an epoch; a length in steps ends inside the fourth epoch
    plan = fast_plan(tmp_path, length_by="steps", max_steps=14)
    assert (plan.epochs, plan.total_steps) == (4, 14)
    events = Recorder()
    result = run_training(plan, events)
    losses = [e.loss for e in events.of(ev.StepEnded)]
    assert len(losses) == 14 and result.steps == 14
    assert [(e.epoch, e.step) for e in events.of(ev.EpochEnded)][-1] == (4, 14)
    assert result.final_path.is_file()
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)


def test_stop_request_saves_and_ends_between_steps(tmp_path):
    plan = fast_plan(tmp_path, epochs=3, mixed_precision="bf16", save_every_n_epochs=1)
    control = TrainControl()
    events = Recorder()

    def sink(event):
        events(event)
        if isinstance(event, ev.StepEnded) and event.step == 2:
            control.request_save()
        if isinstance(event, ev.StepEnded) and event.step == 5:
            control.request_stop("test stop")

    result = run_training(plan, sink, control)
    assert result.steps == 5 and isinstance(result.outcome, ev.RunStopped)
    assert result.outcome.reason == "test stop"
    out = plan.saving.output_dir
    assert result.final_path == out / "fast-step00000005.safetensors"
    assert {e.path for e in events.of(ev.CheckpointSaved)} == {
        str(out / "fast-step00000002.safetensors"), str(out / "fast-000001.safetensors"), str(result.final_path)}
    assert not (out / "fast.safetensors").exists()
    assert not any(isinstance(e, ev.RunFinished) for e in events)
    assert not any("fp16" in m.text for m in events.of(ev.Message))   # bf16 stays bf16 on the CPU
    with safe_open(result.final_path, "pt") as f:
        assert f.metadata()["ss_mixed_precision"] == "bf16"


def test_a_diverging_run_stops_with_advice_and_keeps_the_last_good_file(tmp_path):
    from easytrain.train.loop import TrainingFailed

    plan = fast_plan(tmp_path, epochs=3, unet_lr=1e12, max_grad_norm=0.0, save_every_n_epochs=1)
    events = Recorder()
    with pytest.raises(TrainingFailed) as info:
        run_training(plan, events)
    failed = events.of(ev.RunFailed)
    assert len(failed) == 1 and failed[0].reason in ("loss became NaN", "loss became infinite")
    assert "learning rate" in failed[0].advice and "learning rate" in str(info.value)
    assert not (plan.saving.output_dir / "fast.safetensors").exists()
    saved = events.of(ev.CheckpointSaved)
    assert failed[0].last_good_path == (saved[-1].path if saved else None)


def test_processes_share_an_epoch_evenly():
    from easytrain.train.setup import process_share as _process_share

    batches = list(range(7))
    shares = [_process_share(batches, rank, 3) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4, 0], [2, 5, 1]]
    assert _process_share(batches, 0, 1) == batches


def test_continues_from_an_earlier_lora(full_run, tmp_path):
    earlier_plan, _, earlier = full_run
    plan = fast_plan(tmp_path, network_dim=4, network_alpha=4.0, unet_lr=1e-12, text_encoder_lr=1e-12,
                     network_weights=str(earlier.final_path))
    control = TrainControl()
    events = Recorder()

    def sink(event):
        events(event)
        if isinstance(event, ev.StepEnded):
            control.request_stop()

    result = run_training(plan, sink, control)
    assert any("continuing from" in m.text for m in events.of(ev.Message))
    with safe_open(earlier.final_path, "pt") as before, safe_open(result.final_path, "pt") as after:
        assert set(before.keys()) == set(after.keys())
        for key in before.keys():
            assert torch.allclose(before.get_tensor(key).float(), after.get_tensor(key).float(), atol=1e-3), key
