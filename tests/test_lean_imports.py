"""A run imports bitsandbytes only when its optimizer needs it (model/lean_imports.py).

diffusers and peft import bitsandbytes whenever it is installed, and its import pulls in torch's
inductor (about 1 s of start-up). Each test runs in a fresh interpreter, since what a process has
imported cannot be undone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _train_helpers import make_colour_dataset

REPO = Path(__file__).resolve().parents[1]
WATCHED = ("bitsandbytes", "torch._inductor.compile_fx")
REPORT = f"import sys; print('LOADED', ' '.join(m for m in {WATCHED!r} if m in sys.modules))"


def python(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def loaded(stdout: str) -> set[str]:
    line = [line for line in stdout.splitlines() if line.startswith("LOADED")][-1]
    return set(line.split()[1:])


def train_and_report(root: Path, **overrides) -> tuple[str, set[str]]:
    make_colour_dataset(root / "images", size=64)
    answers = {
        "schema_version": 1, "base_model": "builtin:tiny", "architecture": "sd1", "image_folder": "images",
        "output_folder": "out", "output_name": "lean", "optimizer": "AdamW", "network_dim": 4,
        "network_alpha": 2.0, "unet_lr": 1e-3, "text_encoder_lr": 1e-4, "scheduler": "constant",
        "resolution": 64, "batch_size": 2, "max_steps": 1, "length_by": "steps", "mixed_precision": "no",
        "cache_latents": "memory", "bucket_no_upscale": True, "sample_images": False, "tensorboard": False,
        **overrides,
    }
    (root / "run.json").write_text(json.dumps(answers))
    stdout = python("from easytrain.cli import main\n"
                    "code = main(['train', 'run.json', '--plain'])\n"
                    "assert code == 0, code\n" + REPORT, cwd=root)
    assert (root / "out" / "lean.safetensors").is_file()
    return stdout, loaded(stdout)


@pytest.mark.parametrize("network_type", ["LoRA", "LoHa"])
def test_a_run_without_an_8bit_optimizer_never_imports_bitsandbytes(tmp_path, network_type):
    pytest.importorskip("bitsandbytes")   # installed: diffusers and peft would import it
    _, modules = train_and_report(tmp_path, network_type=network_type)
    assert modules == set(), f"a {network_type} run with AdamW imported {sorted(modules)}"


def test_an_8bit_optimizer_still_gets_bitsandbytes(tmp_path):
    pytest.importorskip("bitsandbytes")
    stdout, modules = train_and_report(tmp_path, optimizer="AdamW8bit")
    assert "bitsandbytes" in modules


def test_diffusers_is_told_too_late_once_its_model_code_is_imported(tmp_path):
    stdout = python(
        "import diffusers.models.modeling_utils\n"
        "from easytrain.model.lean_imports import diffusers_without_bitsandbytes\n"
        "print('SAID', diffusers_without_bitsandbytes())\n"
        "import diffusers.utils.import_utils as flags\n"
        "print('FLAG', flags.is_bitsandbytes_available())\n", cwd=tmp_path)
    installed = "FLAG True" in stdout
    assert ("SAID False" in stdout) == installed   # imported already where installed: reported, not hidden
    assert ("SAID True" in stdout) == (not installed)


def test_peft_still_wraps_plain_layers_after_being_told(tmp_path):
    stdout = python(
        "import torch\n"
        "from peft import LoraConfig, inject_adapter_in_model\n"
        "from easytrain.model.lean_imports import peft_without_bitsandbytes\n"
        "print('SAID', peft_without_bitsandbytes())\n"
        "model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Conv2d(4, 4, 3))\n"
        "inject_adapter_in_model(LoraConfig(r=2, target_modules=['0', '1']), model)\n"
        "print('WRAPPED', type(model[0]).__name__, type(model[1]).__name__)\n" + REPORT, cwd=tmp_path)
    assert "SAID True" in stdout
    assert "WRAPPED Linear Conv2d" in stdout
    assert "bitsandbytes" not in loaded(stdout)


def test_releases_without_the_flags_are_left_as_they_are(tmp_path, monkeypatch):
    """Another diffusers or peft may read other flags: then nothing is changed and the run goes on."""
    stdout = python(
        "import diffusers.utils.import_utils as flags\n"
        "del flags._bitsandbytes_available\n"
        "from easytrain.model.lean_imports import diffusers_without_bitsandbytes\n"
        "print('SAID', diffusers_without_bitsandbytes(), hasattr(flags, '_bitsandbytes_available'))\n", cwd=tmp_path)
    assert "SAID False False" in stdout
    from easytrain.model.lean_imports import peft_without_bitsandbytes

    monkeypatch.setitem(sys.modules, "peft.tuners.lora.model", None)  # a peft without that module
    assert peft_without_bitsandbytes() is False
