"""Saved training state and --resume: a stopped and resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from _train_helpers import Recorder, fast_plan
from easytrain.errors import UserError
from easytrain.train import events as ev
from easytrain.train import state as tr_state
from easytrain.train.control import TrainControl
from easytrain.train.loop import run_training

# Every source of randomness on: per-step VAE sampling (no latent cache), caption shuffling, flips,
# noise offset, a warmup schedule, both parts trained; saved in float so the comparison is exact.
RESUME_SETTINGS = dict(
    epochs=2, save_every_n_epochs=1, cache_latents="off", shuffle_captions=True, flip_aug=True,
    noise_offset=0.05, scheduler="cosine", warmup_ratio=0.2, text_encoder_lr=1e-3, unet_lr=5e-3,
    save_precision="float", min_snr_gamma=5.0, keep_states=5,
)


def stop_after(step: int, events: Recorder, control: TrainControl):
    def sink(event):
        events(event)
        if isinstance(event, ev.StepEnded) and event.step == step:
            control.request_stop("test stop")
    return sink


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    plan = fast_plan(tmp_path_factory.mktemp("whole"), **RESUME_SETTINGS)
    events = Recorder()
    result = run_training(plan, events)
    return plan, events, result


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """The same run stopped after step 5 (mid epoch 2 of 2, 4 steps an epoch)."""
    plan = fast_plan(tmp_path_factory.mktemp("stopped"), **RESUME_SETTINGS)
    control = TrainControl()
    events = Recorder()
    result = run_training(plan, stop_after(5, events, control), control)
    return plan, events, result


def test_a_stop_saves_the_lora_and_a_state_beside_it(stopped):
    plan, events, result = stopped
    assert isinstance(result.outcome, ev.RunStopped) and result.steps == 5
    out = plan.saving.output_dir
    assert result.final_path == out / "fast-step00000005.safetensors" and result.final_path.is_file()
    state_dir = out / "fast-step00000005-state"
    assert result.outcome.state_path == str(state_dir)
    info = json.loads((state_dir / "state.json").read_text())
    assert info["position"] == {"epoch": 2, "batch_index": 1, "global_step": 5,
                                "epoch_loss_sum": pytest.approx(info["position"]["epoch_loss_sum"]),
                                "epoch_loss_count": 1}
    assert info["fingerprint"]["batch_size"] == 4 and info["lora_file"] == str(result.final_path)
    training = torch.load(state_dir / "training.pt", weights_only=True)
    assert {"adapters", "optimizer", "scheduler", "processes"} <= set(training)
    assert training["adapters"][0].dtype == torch.float32
    rng = training["processes"][0]
    assert {"rng", "noise_rng", "latent_rng"} <= set(rng) and {"python", "numpy", "torch"} <= set(rng["rng"])
    # the epoch-1 save has its state too, pointing at the start of epoch 2
    epoch_info = json.loads((out / "fast-000001-state" / "state.json").read_text())
    assert epoch_info["position"]["epoch"] == 2 and epoch_info["position"]["batch_index"] == 0
    saved = events.of(ev.CheckpointSaved)
    assert [s.state_path for s in saved] == [str(out / "fast-000001-state"), str(state_dir)]


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(uninterrupted, stopped):
    whole_plan, whole_events, whole = uninterrupted
    plan, _, _ = stopped
    events = Recorder()
    result = run_training(plan, events, resume="latest")
    assert isinstance(result.outcome, ev.RunFinished) and result.steps == whole.steps == 8
    assert events.of(ev.RunStarted)[0].start_step == 5
    assert [e.step for e in events.of(ev.StepEnded)] == list(range(6, 9))
    # the epoch the stop cut in two still ends, saves and reports like the uninterrupted one
    assert [(e.epoch, e.step) for e in events.of(ev.EpochEnded)] == [(2, 8)]
    whole_epochs = {e.epoch: e.average_loss for e in whole_events.of(ev.EpochEnded)}
    for e in events.of(ev.EpochEnded):
        assert e.average_loss == pytest.approx(whole_epochs[e.epoch], rel=1e-5)
    whole_losses = {e.step: e.loss for e in whole_events.of(ev.StepEnded)}
    assert [e.loss for e in events.of(ev.StepEnded)] == pytest.approx([whole_losses[s] for s in range(6, 9)],
                                                                      rel=1e-5)
    expected = load_file(whole.final_path)
    got = load_file(result.final_path)
    assert set(got) == set(expected)
    moved = 0
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)
        moved += int(key.endswith("lora_up.weight") and value.abs().max() > 0)
    assert moved > 0
    # the file of the epoch before the stop is the uninterrupted run's too
    for key, value in load_file(whole_plan.saving.output_dir / "fast-000001.safetensors").items():
        torch.testing.assert_close(load_file(plan.saving.output_dir / "fast-000001.safetensors")[key], value,
                                   rtol=1e-5, atol=1e-6)


def test_resume_refuses_changed_settings_and_names_them(stopped):
    plan, _, _ = stopped
    changed = fast_plan(plan.saving.output_dir.parent / "changed", **{**RESUME_SETTINGS, "batch_size": 2,
                                                               "network_dim": 4, "seed": 7})
    changed = _with_output(changed, plan.saving.output_dir)
    with pytest.raises(UserError) as info:
        run_training(changed, Recorder(), resume="latest")
    text = str(info.value) + "\n".join(info.value.problems)
    for key in ("batch_size", "network_dim", "seed", "total_steps"):
        assert key in text
    assert "output_name" not in text


def test_harmless_changes_keep_the_fingerprint(stopped):
    plan, _, _ = stopped
    other = fast_plan(plan.saving.output_dir.parent / "cosmetic", **{**RESUME_SETTINGS, "output_name": "renamed",
                      "comment": "a new comment", "save_every_n_epochs": 2, "keep_states": 1,
                      "log_every_n_steps": 3})
    assert tr_state.fingerprint_differences(tr_state.fingerprint(plan), tr_state.fingerprint(other)) == []


def test_resume_without_a_state_says_where_it_looked(tmp_path):
    plan = fast_plan(tmp_path, epochs=1)
    with pytest.raises(UserError, match="no saved training state in"):
        run_training(plan, Recorder(), resume="latest")
    with pytest.raises(UserError, match="not a training state folder"):
        run_training(plan, Recorder(), resume=str(tmp_path / "images"))


def test_only_the_newest_states_are_kept(tmp_path):
    plan = fast_plan(tmp_path, epochs=4, batch_size=16, save_every_n_epochs=1, keep_states=2)  # a step an epoch
    run_training(plan, Recorder())
    states = sorted(p.name for p in plan.saving.output_dir.glob("*-state"))
    assert states == ["fast-000002-state", "fast-000003-state"]
    assert not list(plan.saving.output_dir.glob(".*"))          # no temporary folders left behind


def test_pruning_leaves_other_runs_alone_and_resume_takes_the_newest(tmp_path):
    def write(name, step, run_id):
        tr_state.write_state(tmp_path / f"{name}-state", position={"epoch": 1, "batch_index": 0, "global_step": step},
                             fingerprint={}, training={}, run_name="run", run_id=run_id)

    write("run-000009", 90, "earlier")
    for step in (1, 2, 3):
        write(f"run-00000{step}", step * 10, "later")
    (tmp_path / ".run-000004-state.x.tmp").mkdir()      # what a crash mid-save leaves
    tr_state.prune_states(tmp_path, "run", "later", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run-000002-state", "run-000003-state", "run-000009-state"]
    assert tr_state.find_state(tmp_path).folder.name == "run-000003-state"   # written last


def test_a_failed_state_write_keeps_the_previous_state(tmp_path):
    folder = tmp_path / "run-000001-state"
    tr_state.write_state(folder, position={"epoch": 2, "batch_index": 0, "global_step": 4}, fingerprint={},
                         training={"adapters": [torch.ones(2)]}, run_name="run", run_id="a")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        tr_state.write_state(folder, position={"epoch": 3, "batch_index": 0, "global_step": 8}, fingerprint={},
                             training={"adapters": [Unpicklable()]}, run_name="run", run_id="a")
    state = tr_state.read_state(folder)
    assert state.global_step == 4
    assert torch.equal(tr_state.load_training(state)["adapters"][0], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["run-000001-state"]


def _with_output(plan, output_dir):
    import dataclasses

    return dataclasses.replace(plan, saving=dataclasses.replace(plan.saving, output_dir=output_dir))


def test_a_failing_torch_compile_is_reported_and_the_run_trains_uncompiled(uninterrupted, tmp_path, monkeypatch):
    """Compilation happens at the first call; when it fails there, that step is redone on the eager UNet."""
    _, _, whole = uninterrupted

    class BrokenCompile(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            self.module(*args, **kwargs)          # draws nothing random, builds a graph that is thrown away
            raise RuntimeError("inductor: no C++ compiler found")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: BrokenCompile(module))
    events = Recorder()
    result = run_training(fast_plan(tmp_path, **RESUME_SETTINGS, torch_compile=True), events)
    warnings = [m.text for m in events.of(ev.Message) if m.level == "warning"]
    assert any("torch_compile failed (RuntimeError: inductor: no C++ compiler found)" in w for w in warnings)
    expected = load_file(whole.final_path)
    for key, value in load_file(result.final_path).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_resume_from_a_named_state_folder(uninterrupted, stopped, tmp_path):
    """`--resume PATH`: here the epoch-1 state (an epoch boundary), in a copy of the stopped run's folder."""
    import shutil

    _, _, whole = uninterrupted
    plan, _, _ = stopped
    out = tmp_path / "out"
    shutil.copytree(plan.saving.output_dir / "fast-000001-state", out / "fast-000001-state")
    events = Recorder()
    result = run_training(_with_output(plan, out), events, resume=str(out / "fast-000001-state"))
    assert [e.step for e in events.of(ev.StepEnded)] == [5, 6, 7, 8]
    expected = load_file(whole.final_path)
    for key, value in load_file(result.final_path).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6, msg=key)
