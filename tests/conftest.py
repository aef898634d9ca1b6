"""Shared test set-up: offline, a private model cache, a clean accelerate state."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("EASYTRAIN_CACHE", tempfile.mkdtemp(prefix="easytrain-test-cache-"))
# Printed commands depend on how easytrain was started (easytrain/invocation.py): the tests run it
# as an installed `easytrain` on PATH, whether the suite was started by `python3 wizard.py test` or not.
os.environ.pop("EASYTRAIN_LAUNCHER", None)
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _reset_accelerate_state():
    """Accelerate keeps per-process singletons; a test must not inherit another's."""
    yield
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState, PartialState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        PartialState._reset_state()


@pytest.fixture
def demo_images(tmp_path: Path) -> Path:
    """A fresh copy of the demo dataset: tmp/images/5_shapes with 16 captioned images."""
    from easytrain.demo import make_demo_dataset

    return make_demo_dataset(tmp_path / "images")

# Defaults that follow the GPU (batch size, checkpointing) must not depend on the machine running the tests.
os.environ.setdefault("EASYTRAIN_GPU_MEMORY", "none")


def _user_folders_snapshot() -> dict[str, tuple[int, int]]:
    """Every file under the checkout's output/ and answers/ with its size and modification time."""
    found: dict[str, tuple[int, int]] = {}
    for top in ("output", "answers"):
        root = REPO / top
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            try:
                stat = path.lstat()
            except OSError:
                continue
            found[str(path.relative_to(REPO))] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else (-1, 0)
    return found


@pytest.fixture(scope="session", autouse=True)
def _user_folders_untouched():
    """Tests never write into the checkout's output/ or answers/ (a user's demo run lives there)."""
    before = _user_folders_snapshot()
    yield
    after = _user_folders_snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the tests changed the checkout's own files: {changed[:10]}"
