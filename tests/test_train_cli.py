"""`easytrain train FILE` as a user runs it over SSH: a subprocess with stdout piped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _train_helpers import make_colour_dataset

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "easytrain", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_train")
    make_colour_dataset(root / "images", size=64, repeats=2)
    answers = {
        "schema_version": 1, "base_model": "builtin:tiny", "architecture": "sd1", "image_folder": "images",
        "output_folder": "out", "output_name": "cli_lora", "optimizer": "AdamW", "network_dim": 4,
        "network_alpha": 2.0, "unet_lr": 5e-3, "text_encoder_lr": 1e-3, "scheduler": "constant",
        "resolution": 256, "batch_size": 2, "epochs": 2, "save_every_n_epochs": 1, "mixed_precision": "no",
        "cache_latents": "memory", "bucket_no_upscale": True, "min_bucket_reso": 64, "log_every_n_steps": 2,
        "sample_images": True, "sample_prompts": "prompts.txt", "sample_every_n_epochs": 2,
    }
    (root / "prompts.txt").write_text("a red square --w 64 --h 64 --s 2\n")
    (root / "run.json").write_text(json.dumps(answers))
    result = run_cli("train", "run.json", cwd=root)
    return root, result


def test_train_exits_zero_and_writes_the_files(trained):
    root, result = trained
    assert result.returncode == 0, result.stderr[-3000:]
    out = root / "out"
    for name in ("cli_lora-000001.safetensors", "cli_lora.safetensors", "cli_lora.answers.json",
                 "cli_lora.plan.json", "cli_lora_tags.txt", "metrics.csv", "loss.png"):
        assert (out / name).is_file(), name
    assert not (out / "cli_lora-000002.safetensors").exists()  # the last epoch is the final file
    assert "<lora:cli_lora:1>" in result.stdout


def test_piped_output_is_plain_lines(trained):
    _, result = trained
    assert "\x1b" not in result.stdout and "\x1b" not in result.stderr
    assert "step 8/8" in result.stdout
    assert "Traceback" not in result.stderr
    assert "kernels-community" not in result.stdout + result.stderr  # no third-party start-up noise


def test_library_noise_goes_to_the_log_file_not_the_screen(trained):
    root, result = trained
    shown = result.stdout + result.stderr
    assert (root / "out" / "sample").is_dir()                             # sampling ran
    for noise in ("FutureWarning", "UserWarning", "warnings.warn", "_class_name"):
        assert noise not in shown, shown[-3000:]
    log = root / "out" / "cli_lora.log"
    listed = str(Path("out") / "cli_lora.log") in result.stdout or str(log) in result.stdout
    assert listed == log.is_file()  # the summary names the log exactly when something was said


def test_library_warnings_and_log_records_land_in_the_log_file(tmp_path, capsys):
    import logging
    import warnings

    from easytrain.commands.library_log import library_log

    quiet = tmp_path / "quiet.log"
    with library_log(quiet):
        pass
    assert not quiet.exists()  # nothing said, no file
    log = tmp_path / "run.log"
    with library_log(log):
        warnings.warn("steps_offset!=1 in the scheduler's config", FutureWarning)
        logging.getLogger("diffusers.pipelines").warning("a pipeline component was not found")
        logging.getLogger("transformers").info("below warning level: dropped")
    captured = capsys.readouterr()
    assert "steps_offset" not in captured.out + captured.err and "pipeline component" not in captured.err
    text = log.read_text()
    assert "FutureWarning: steps_offset!=1" in text and "diffusers.pipelines WARNING: a pipeline component" in text
    assert "dropped" not in text


def test_metrics_csv_has_every_step(trained):
    root, _ = trained
    rows = (root / "out" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss,lr_unet,lr_text_encoder")
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, 9))


def test_lora_loads_into_diffusers_and_changes_the_output(trained):
    import torch
    from diffusers import StableDiffusionPipeline

    from easytrain.families.sd.tiny import tiny_model_paths

    root, _ = trained
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_paths().diffusers_dir), local_files_only=True,
                                                   safety_checker=None)
    pipe.set_progress_bar_config(disable=True)

    def render():
        generator = torch.Generator().manual_seed(0)
        return pipe("colours, red square", num_inference_steps=2, height=64, width=64, generator=generator,
                    output_type="np").images

    before = render()
    pipe.load_lora_weights(str(root / "out" / "cli_lora.safetensors"))
    after = render()
    assert abs(after - before).max() > 1e-4


def test_a_bad_answers_file_gives_the_same_error_as_check(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny",
                                                    "image_folder": "missing", "network_dim": 0}))
    train = run_cli("train", "bad.json", cwd=tmp_path)
    check = run_cli("check", "bad.json", cwd=tmp_path)
    assert train.returncode == check.returncode == 2
    assert train.stderr == check.stderr and "network_dim: must be an integer" in train.stderr
    assert "Traceback" not in train.stderr
