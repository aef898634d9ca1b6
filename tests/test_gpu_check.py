"""bench/gpu_check.py without a GPU: --plan-only builds every run's plan (CI runs it), the script stops loudly
when torch sees no GPU, and its checks read a real (tiny, CPU) run's events and saved state correctly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import gpu_check

    return gpu_check


def test_plan_only_builds_every_runs_plan_and_lists_every_check(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--plan-only", "--workdir", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    for run in gpu_check.RUNS:
        assert f"run {run.name}: " in out
        for name in run.checks:
            assert f"would check: {name}" in out
    assert "fp16" in out and "bf16" in out and "AdamW8bit" in out and "Lion8bit" in out
    assert "1024x1024" in out and "stop at step 3 and resume" in out
    assert out.count("\nspeed ") == 5 and "PLAN 3 training runs, 5 speed cases" in out
    assert "speed sdxl-1024-b1-adamw: " in out
    assert not (tmp_path / "work").exists()          # removed afterwards without --keep


def test_plan_only_runs_as_a_script(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--plan-only", "--workdir",
                           str(tmp_path / "w")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "PLAN 3 training runs" in done.stdout


def test_without_a_gpu_it_stops_loudly(gpu_check, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--workdir", str(tmp_path / "w")]) == 2
    assert "GPU CHECK NOT RUN" in capsys.readouterr().err


def test_the_checks_read_a_stopped_and_resumed_runs_events_and_state(gpu_check, tmp_path):
    """The same code the GPU check runs, on the tiny model on the CPU: stop at step 1, resume, sample."""
    run = gpu_check.TrainRun(
        "tiny", "sd1", "tiny", dict(architecture="sd1", mixed_precision="no", optimizer="AdamW", resolution=64,
                                    batch_size=2, epochs=1, cache_latents="memory", train_parts="both",
                                    min_bucket_reso=64, gradient_checkpointing=False),
        images=4, image_size=64, stop_at=1, sample="a thing --w 64 --h 64 --s 2 --d 1",
        checks=("bf16", "sample-sd15"))
    plan = gpu_check.plan_for(run, tmp_path, "builtin:tiny")
    out = gpu_check.train(run, plan)
    state = gpu_check.state_tensors(out["state"])
    assert state == {"optimizer_dtypes": {"torch.float32"}, "scaler": False}
    from easytrain.train import events as ev

    assert [e.start_step for e in out["resumed"].of(ev.RunStarted)] == [1]
    results = gpu_check.Results()
    gpu_check.check_run(run, plan, out, results)
    assert results.rows == [("bf16", "PASS"), ("sample-sd15", "PASS")]
    assert results.summary("cpu").startswith("SUMMARY 2 passed, 0 failed, 0 skipped")


def test_black_and_non_finite_samples_fail(gpu_check, tmp_path):
    from PIL import Image

    black = tmp_path / "black.png"
    Image.new("RGB", (64, 64)).save(black)
    noisy = tmp_path / "noisy.png"
    Image.effect_noise((64, 64), 60).convert("RGB").save(noisy)
    assert gpu_check.sample_verdict([str(black)])[0] == "FAIL"
    assert gpu_check.sample_verdict([str(noisy)])[0] == "PASS"
    assert gpu_check.sample_verdict([])[0] == "FAIL"


def test_a_speed_case_runs_through_gpu_steps_step(gpu_check):
    """bench/gpu_step.py's tiny arch on the CPU: the same call the GPU check makes for each speed case."""
    line = gpu_check.speed_case("tiny", 64, 1, "AdamW", "bf16", torch.device("cpu"))
    assert "images/s" in line and "s/step" in line and "AdamW" in line
