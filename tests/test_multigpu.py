"""Two training processes (CPU, gloo) launched as on a multi-GPU machine: one set of files, steps per process."""

from __future__ import annotations

import csv
import subprocess
import sys

from safetensors import safe_open

from _robust_helpers import cli_env, write_answers


def test_two_processes_train_one_lora_with_kohyas_step_count(tmp_path):
    # 8 images an epoch, batch 2: 4 steps an epoch for one process, 2 for each of two
    write_answers(tmp_path, epochs=2, save_every_n_epochs=1, tensorboard=False)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "easytrain", "train", "run.json", "--plain"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "loss.png", "metrics.csv", "run-000001-state", "run-000001.safetensors", "run.answers.json",
        "run.plan.json", "run.safetensors"]
    assert not list(out.glob(".*"))
    # only the main process renders progress and the summary
    assert result.stdout.count("Training finished: 4 steps") == 1
    assert "training run on cpu:0: 4 steps (2 epochs x 2 steps" in result.stdout
    with safe_open(out / "run.safetensors", "pt") as f:
        meta = f.metadata()
    assert (meta["ss_steps"], meta["ss_epoch"], meta["ss_num_batches_per_epoch"]) == ("4", "2", "2")
    with open(out / "metrics.csv", newline="") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh)]
    assert steps == [1, 2, 3, 4]
    # the state holds each process's own random generators
    import torch

    training = torch.load(out / "run-000001-state" / "training.pt", weights_only=True)
    noise = [p["noise_rng"] for p in training["processes"]]
    assert len(noise) == 2 and not torch.equal(noise[0], noise[1])


def test_two_processes_train_sdxl_with_both_text_encoders(tmp_path):
    """CLIP-L's last layer feeds nothing (SDXL conditions on the penultimate one): DDP must accept adapters
    without gradients there, and the processes must still agree on every step."""
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    write_answers(tmp_path, epochs=1, tensorboard=False, base_model=str(tiny_sdxl_paths().single_file),
                  architecture="sdxl", train_parts="both", text_encoder_lr=1e-4)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "easytrain", "train", "run.json", "--plain"]
    result = subprocess.run(command, cwd=tmp_path, env=cli_env(), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("Training finished: 2 steps") == 1
    with safe_open(tmp_path / "out" / "run.safetensors", "pt") as f:
        modules = {key.split(".")[0] for key in f.keys()}
    assert {m.split("_")[1] for m in modules} == {"unet", "te1", "te2"}
