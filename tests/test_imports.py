"""Light modules stay light: the wizard and --help never pay for torch, diffusers or peft."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "peft", "transformers", "accelerate")
LIGHT_MODULES = (
    "easytrain.cli", "easytrain.questions", "easytrain.answers", "easytrain.legacy", "easytrain.plan",
    "easytrain.commands.check", "easytrain.commands.listing", "easytrain.commands.wizard",
    "easytrain.commands.train", "easytrain.commands.prep", "easytrain.train.events", "easytrain.train.control",
    "easytrain.data.scan", "easytrain.data.buckets", "easytrain.commands.compare", "easytrain.progress.tensorboard",
)
NO_UI_PACKAGES = ("easytrain.data", "easytrain.model", "easytrain.network", "easytrain.train")


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, importlib; importlib.import_module({module!r}); print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_module_imports_no_heavy_library(module):
    loaded = modules_after_import(module)
    assert not [m for m in HEAVY if m in loaded], f"{module} pulls in heavy libraries"


def test_tui_imports_no_heavy_library():
    pytest.importorskip("easytrain.tui.app")
    loaded = modules_after_import("easytrain.tui.app")
    assert not [m for m in HEAVY if m in loaded]


def test_trainer_side_never_imports_ui_libraries():
    import pkgutil

    import easytrain

    names = []
    for info in pkgutil.walk_packages(easytrain.__path__, "easytrain."):
        if info.name.startswith(NO_UI_PACKAGES) and not info.name.endswith("build_tokenizer_files"):
            names.append(info.name)
    code = ("import sys, importlib\n"
            f"for name in {names!r}: importlib.import_module(name)\n"
            "print(' '.join(m for m in ('textual', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"trainer-side modules import {out.stdout.strip()}"


def test_progress_never_imports_torch():
    loaded = modules_after_import("easytrain.progress")
    assert "torch" not in loaded and "textual" not in loaded
