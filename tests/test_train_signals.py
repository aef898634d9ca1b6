"""Stopping a real training process: Ctrl+C / SIGTERM save and exit, --resume continues; crashes lose nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from _robust_helpers import cli_env, run_cli, start_cli, wait_for, write_answers
from _train_helpers import Recorder
from easytrain import answers as answers_file
from easytrain.cli import main as cli_main
from easytrain.commands.train import EXIT_STOPPED
from easytrain.plan import TrainPlan
from easytrain.train import state as tr_state
from easytrain.train.loop import run_training


def first_state(out):
    return lambda: (out / "run-000001-state" / "state.json").is_file()


def stop_with(sig, root):
    """Start a 3-epoch run, send ``sig`` once the epoch-1 state is on disk; returns (process, out, err)."""
    process = start_cli(["train", "run.json", "--plain"], root)
    wait_for(first_state(root / "out"), process)
    process.send_signal(sig)
    out, err = process.communicate(timeout=180)
    return process, out, err


def assert_stopped_cleanly(process, out, err, root):
    assert process.returncode == EXIT_STOPPED, err[-3000:]
    assert "Traceback" not in out + err
    assert "To continue: easytrain train run.json --resume" in out
    saved = [i for i, line in enumerate(out.splitlines()) if line.startswith("saved at step ")]
    assert saved and "in progress)" in out.splitlines()[saved[-1]], out[-2000:]
    assert out.splitlines()[saved[-1] - 1].startswith("step ")     # the step it was saved at comes first
    state = tr_state.find_state(root / "out")
    step = state.global_step
    assert 4 <= step < 12                        # stopped after the epoch-1 save, before the end
    lora = root / "out" / f"run-step{step:08d}.safetensors"
    assert state.folder == root / "out" / f"run-step{step:08d}-state" and lora.is_file()
    assert state.info["lora_file"] == str(lora)
    assert not (root / "out" / "run.safetensors").exists()
    return state


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    path = write_answers(root, output_folder="whole")
    result = run_training(TrainPlan.from_answers(answers_file.load(path)), Recorder())
    return load_file(result.final_path)


def test_ctrl_c_saves_a_state_and_resume_ends_like_an_uninterrupted_run(tmp_path, uninterrupted):
    write_answers(tmp_path)
    process, out, err = stop_with(signal.SIGINT, tmp_path)
    assert "Ctrl+C: finishing this step, then saving" in err
    assert_stopped_cleanly(process, out, err, tmp_path)

    resumed = run_cli(["train", "run.json", "--resume", "--plain"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "Traceback" not in resumed.stderr
    final = load_file(tmp_path / "out" / "run.safetensors")
    assert set(final) == set(uninterrupted)
    for key, value in uninterrupted.items():
        torch.testing.assert_close(final[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_like_the_first_ctrl_c(tmp_path, sig):
    write_answers(tmp_path)
    process, out, err = stop_with(sig, tmp_path)
    assert signal.Signals(sig).name in err
    state = assert_stopped_cleanly(process, out, err, tmp_path)
    assert tr_state.load_training(state)["adapters"]


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    code = textwrap.dedent("""
        import os, signal, time
        from easytrain.commands.stop_signals import stop_on_signals
        from easytrain.train.control import TrainControl
        control = TrainControl()
        with stop_on_signals(control):
            os.kill(os.getpid(), signal.SIGINT)
            assert control.stop_requested and control.stop_reason == "Ctrl+C"
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        print("not reached")
    """)
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 130 and "not reached" not in result.stdout
    assert "second Ctrl+C" in result.stderr and "Traceback" not in result.stderr


# The second state write blocks in the middle of torch.save (a marker file says when) until killed.
BLOCK_SECOND_STATE = textwrap.dedent("""
    import pathlib, time
    import easytrain.train.state as st
    _real, _calls = st.write_state, []
    class _Block:
        def __reduce__(self):
            pathlib.Path("saving.marker").touch()
            time.sleep(120)
            return (int, ())
    def _write_state(folder, **kwargs):
        _calls.append(folder)
        if len(_calls) == 2:
            kwargs["training"] = {**kwargs["training"], "block": _Block()}
        return _real(folder, **kwargs)
    st.write_state = _write_state
""")


def test_kill_9_during_a_save_leaves_the_earlier_files_loadable(tmp_path):
    write_answers(tmp_path)
    process = start_cli(["train", "run.json", "--plain"], tmp_path, prelude=BLOCK_SECOND_STATE)
    wait_for(lambda: (tmp_path / "saving.marker").exists(), process)
    process.kill()
    process.communicate(timeout=60)
    out = tmp_path / "out"
    assert list(out.glob(".run-000002-state.*.tmp"))            # the interrupted write, under its temporary name
    assert not (out / "run-000002-state").exists()
    state = tr_state.find_state(out)
    assert state.folder == out / "run-000001-state" and state.global_step == 4
    assert len(tr_state.load_training(state)["adapters"]) > 0
    for lora in out.glob("*.safetensors"):
        assert load_file(lora)                                  # every LoRA file is whole
    # --resume picks the last whole state (and clears the leftover when it saves again)
    resumed = run_cli(["train", "run.json", "--resume", "--plain"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step 4" in resumed.stdout and (out / "run.safetensors").is_file()
    assert not list(out.glob(".run-*"))


def _inject(monkeypatch, *, after_steps: int, make):
    """From step ``after_steps + 1`` on, the loss function returns make(loss)."""
    import easytrain.families.ddpm.objective as step

    real, calls = step.diffusion_loss, []

    def diffusion_loss(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return make(loss) if len(calls) > after_steps else loss

    monkeypatch.setattr(step, "diffusion_loss", diffusion_loss)


def test_nan_loss_through_the_cli_stops_with_advice_and_keeps_the_last_good_file(tmp_path, monkeypatch, capsys):
    write_answers(tmp_path)
    monkeypatch.chdir(tmp_path)
    _inject(monkeypatch, after_steps=5, make=lambda loss: loss * float("nan"))
    code = cli_main(["train", "run.json", "--plain"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert "training stopped at step 6: loss became NaN" in err
    for advice in ("bf16 instead of fp16", "lower the learning rate", "VAE in fp32"):
        assert advice in err
    good = tmp_path / "out" / "run-000001.safetensors"
    assert f"the last good file is {good}" in err
    weights = load_file(good)
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert sorted(p.name for p in (tmp_path / "out").glob("*.safetensors")) == ["run-000001.safetensors"]
    assert tr_state.find_state(tmp_path / "out").global_step == 4


def test_out_of_memory_is_explained_and_nothing_is_half_written(tmp_path, monkeypatch, capsys):
    write_answers(tmp_path)
    monkeypatch.chdir(tmp_path)

    def out_of_memory(loss):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    _inject(monkeypatch, after_steps=5, make=out_of_memory)
    code = cli_main(["train", "run.json", "--plain"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert "out of GPU memory" in err
    for advice in ("batch size", "resolution", "gradient checkpointing", "cache latents", "8-bit optimizer"):
        assert advice in err
    # run.log: the libraries' warnings (pytest turns DeprecationWarnings on), kept off the screen
    files = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name not in ("run.plan.json", "logs", "run.log"))
    assert files == ["loss.png", "metrics.csv", "run-000001-state", "run-000001.safetensors", "run.answers.json"]
    assert json.loads((tmp_path / "out" / "run-000001-state" / "state.json").read_text())["position"]["epoch"] == 2


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="SIGUSR1 does not exist on this platform")
def test_sigusr1_asks_for_a_save_and_training_goes_on():
    """`kill -USR1 PID` reaches the control object as a save request, once, and never as a stop."""
    import os

    from easytrain.commands.stop_signals import stop_on_signals
    from easytrain.train.control import TrainControl

    control, said = TrainControl(), []
    with stop_on_signals(control, say=said.append):
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_for(lambda: said, timeout=5)
    assert control.take_save_request() and not control.take_save_request()
    assert not control.stop_requested
    assert said == ["easytrain: SIGUSR1: saving a file after this step; training goes on"]
