"""The CLI as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def easytrain(*args: str, cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "easytrain", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)


def test_help_lists_the_commands():
    out = easytrain("--help")
    assert out.returncode == 0
    for command in ("check", "train", "queue", "demo", "questions", "schema"):
        assert command in out.stdout


def test_check_demo_prints_the_plan():
    out = easytrain("check", "answers/demo.json")
    assert out.returncode == 0, out.stderr
    assert "16 images x repeats = 80 / batch 4 = 20 steps x 2 epochs = 40 steps" in out.stdout
    assert "5_shapes: 16 images x 5 repeats" in out.stdout
    assert "demo_shapes-000001.safetensors" in out.stdout and "demo_shapes.safetensors" in out.stdout


def test_check_bad_file_gives_named_problems_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "nope",
                               "network_dim": "abc", "colour": "red"}))
    out = easytrain("check", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith(f"easytrain: {bad}: 3 problems in the answers file")
    for key in ("image_folder: folder not found", "network_dim: must be an integer from 1 to 1024, got 'abc'",
                "colour: unknown key"):
        assert key in out.stderr


def test_check_popup_era_fixture_in_place_gives_clear_errors():
    out = easytrain("check", str(FIXTURES / "popup_era.json"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "base_model: file not found" in out.stderr and "image_folder: folder not found" in out.stderr


def test_check_popup_era_fixture_with_its_data_prints_a_plan(tmp_path, demo_images):
    from easytrain.families.sd.tiny import tiny_model_paths

    shutil.copy(FIXTURES / "popup_era.json", tmp_path)
    shutil.copy(tiny_model_paths().single_file, tmp_path / "model.safetensors")
    out = easytrain("check", str(tmp_path / "popup_era.json"))
    assert out.returncode == 0, out.stderr
    assert "read as a popup-era answers file" in out.stdout
    assert "/ batch 3 =" in out.stdout and "x 12 epochs" in out.stdout


def test_check_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "a.json").write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny",
                                                  "image_folder": "images"}))
    out = easytrain("check", str(tmp_path / "a.json"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "no usable training images" in out.stderr


def test_check_on_a_folder_says_it_is_a_folder_and_points_to_queue(tmp_path):
    out = easytrain("check", str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"easytrain: {tmp_path}: is a folder, not an answers file; give a .json file "
                                  f"in it, or train every answers file in it with `easytrain queue {tmp_path}`")


def test_check_warns_about_low_resolution_and_fp16_without_a_gpu(tmp_path, demo_images):
    from easytrain.families.sd.tiny import tiny_model_paths

    shutil.copy(tiny_model_paths().single_file, tmp_path / "model.safetensors")
    (tmp_path / "a.json").write_text(json.dumps({"schema_version": 1, "base_model": "model.safetensors",
                                                  "image_folder": "images", "resolution": 128,
                                                  "mixed_precision": "fp16"}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-m", "easytrain", "check", str(tmp_path / "a.json")], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "! resolution: 128 is below the 512x512 this architecture's models are made for" in out.stdout
    assert "! mixed_precision: fp16 needs an NVIDIA GPU and this machine has none" in out.stdout
    assert "at 128x128" in out.stdout


def test_questions_lists_the_flow():
    out = easytrain("questions")
    assert out.returncode == 0
    assert "network_dim: Network dim (rank)?" in out.stdout and "default: 16 (LoHa 8)" in out.stdout
    assert "asked when: network type is not LoRA" in out.stdout


def test_wizard_without_a_terminal_exits_at_once_with_advice():
    out = easytrain(timeout=30)
    assert out.returncode == 2
    assert "interactive terminal" in out.stderr and "easytrain train FILE" in out.stderr


def test_readme_key_table_is_generated_from_the_spec():
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- questions:start -->\n", 1)[1].split("<!-- questions:end -->", 1)[0]
    assert block == easytrain("questions", "--markdown").stdout, "regenerate with `easytrain questions --markdown`"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 wizard.py test" in readme and "python3 wizard.py test" in ci


def test_check_refuses_a_lora_given_as_the_base_model(tmp_path, demo_images):
    from safetensors.torch import save_file
    import torch

    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32, 1, 1)},
              str(tmp_path / "my_lora.safetensors"))
    (tmp_path / "a.json").write_text(json.dumps({"schema_version": 1, "base_model": "my_lora.safetensors",
                                                  "image_folder": "images"}))
    out = easytrain("check", str(tmp_path / "a.json"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "LoRA" in out.stderr and "my_lora.safetensors" in out.stderr


def test_demo_says_what_it_will_do_before_the_slow_imports(tmp_path):
    """The estimate and the plan come first; only then PyTorch and diffusers load (seconds of silence before).

    The demo writes into tmp_path (EASYTRAIN_DEMO_OUTPUT): a test never moves the user's output/demo aside.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "EASYTRAIN_DEMO_OUTPUT": str(tmp_path / "demo_out")}
    process = subprocess.Popen([sys.executable, "-m", "easytrain", "demo", "--plain"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("starting: loading PyTorch"):
                break
    finally:
        process.kill()
        process.wait(timeout=60)
    assert lines[0] == ("The demo trains 40 steps at 128x128 on the embedded tiny model: about half a minute "
                        "on two CPU cores (longer while other programs keep them busy).")
    assert lines[1] == f"Plan for {tmp_path / 'demo_out' / 'demo.json'}"
    assert lines[-1] == "starting: loading PyTorch and diffusers..."
