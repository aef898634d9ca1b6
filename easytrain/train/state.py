"""Training state for `--resume`: everything a stopped run needs to continue exactly.

A state is a folder next to the LoRA file it belongs to
(``name-000001-state/`` or ``name-step00000005-state/``) holding:

- ``state.json``: position (epoch, batch index, global step), the answers
  fingerprint and a note of what the folder is; written last, so a folder
  without it is not a state;
- ``training.pt``: the adapters' fp32 weights, optimizer, scheduler and
  grad-scaler states, the loop's own generators and the global RNGs (python,
  numpy, torch CPU and CUDA) of every process.

The folder is written under a hidden temporary name and renamed into place,
so a crash mid-save leaves the previous states as they were. Only the newest
``keep`` states of a run are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from easytrain.errors import UserError
from easytrain.fsutil import note_target
from easytrain.train.saving import STATE_JSON, STATE_SUFFIX

TRAINING_FILE = "training.pt"
FORMAT_VERSION = 1

def state_folder_for(lora_path: str | os.PathLike) -> Path:
    """``out/name-000001.safetensors`` -> ``out/name-000001-state``."""
    path = Path(lora_path)
    return path.with_name(path.stem + STATE_SUFFIX)


# ---- fingerprint ----------------------------------------------------------------------------------


def _dataset_fingerprint(scan) -> Optional[dict]:
    if scan is None:
        return None
    subsets = {}
    for subset in scan.subsets:
        names = hashlib.sha256("\n".join(sorted(
            f"{Path(i.path).name}:{i.width}x{i.height}" for i in subset.images)).encode()).hexdigest()[:16]
        subsets[subset.name] = {"repeats": subset.repeats, "images": len(subset.images), "files": names}
    return subsets


def fingerprint(plan, num_processes: int = 1) -> dict[str, Any]:
    """What must be equal for a state to continue under ``plan`` (JSON-plain values)."""
    values = plan.resume_answers()
    values.update(
        total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch, epochs=plan.epochs,
        images_per_epoch=plan.images_per_epoch, warmup_steps=plan.schedule.warmup_steps,
        dataset=_dataset_fingerprint(plan.train_scan), reg_dataset=_dataset_fingerprint(plan.reg_scan),
        processes=num_processes,
    )
    return json.loads(json.dumps(values, default=str))


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """One line per setting that differs: ``batch_size: the state has 2, the answers now 4``."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        before, now = saved.get(key), current.get(key)
        if before != now:
            if key in ("dataset", "reg_dataset"):
                lines.append(f"{key}: the images (folders, repeats or files) differ from the saved run")
            else:
                lines.append(f"{key}: the state has {before!r}, the answers now {now!r}")
    return lines


# ---- RNG --------------------------------------------------------------------------------------------


def global_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch CPU and CUDA generator states (torch-saveable, weights-only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---- writing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedState:
    folder: Path
    info: dict                      # the state.json content
    training: Optional[dict] = None  # training.pt, loaded on demand

    @property
    def global_step(self) -> int:
        return int(self.info["position"]["global_step"])

    @property
    def position(self) -> dict:
        return self.info["position"]


def write_state(folder: str | os.PathLike, *, position: dict, fingerprint: dict, training: dict,
                run_name: str, run_id: str, lora_file: Optional[str] = None) -> Path:
    """Write a state folder atomically: a hidden temporary folder, renamed into place when complete."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        with open(tmp / TRAINING_FILE, "wb") as fh:
            torch.save(training, fh)
            fh.flush()
            os.fsync(fh.fileno())
        info = {
            "format": FORMAT_VERSION,
            "what": "easytrain training state: continue with `easytrain train ANSWERS --resume`",
            "run_name": run_name,
            "run_id": run_id,
            "saved_at": time.time(),
            "lora_file": lora_file,
            "position": position,
            "fingerprint": fingerprint,
        }
        (tmp / STATE_JSON).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~_umask())
        _replace_folder(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        note_target(exc, folder)
        raise
    return folder


def _replace_folder(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / "state")
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- finding and pruning ----------------------------------------------------------------------------


def read_state(folder: str | os.PathLike) -> SavedState:
    folder = Path(folder).expanduser()
    info_path = folder / STATE_JSON
    if not info_path.is_file() or not (folder / TRAINING_FILE).is_file():
        raise UserError(f"{folder}: not a training state folder (expected {STATE_JSON} and {TRAINING_FILE} "
                        f"in a folder named like name-000001{STATE_SUFFIX})")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        int(info["position"]["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{info_path}: unreadable training state ({exc})") from None
    return SavedState(folder, info)


def load_training(state: SavedState, device: torch.device | str = "cpu") -> dict:
    try:
        with open(state.folder / TRAINING_FILE, "rb") as fh:
            return torch.load(fh, map_location=device, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise UserError(f"{state.folder / TRAINING_FILE}: cannot read the training state "
                        f"({type(exc).__name__}: {str(exc)[:200]})") from None


def list_states(output_dir: str | os.PathLike, run_id: Optional[str] = None) -> list[SavedState]:
    """Complete states in ``output_dir`` (of the run ``run_id`` if given), oldest first.

    States of one run are ordered by step; across runs (an earlier run with the
    same name) by the time they were written.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.name.endswith(STATE_SUFFIX) or not folder.is_dir():
            continue
        try:
            state = read_state(folder)
        except UserError:
            continue
        if run_id is None or state.info.get("run_id") == run_id:
            found.append(state)
    found.sort(key=lambda s: (float(s.info.get("saved_at", 0.0)), s.global_step))
    return found


def find_state(output_dir: str | os.PathLike, which: str = "latest") -> SavedState:
    """The state ``--resume`` means: the newest in the output folder, or the folder ``which``."""
    if which and which != "latest":
        return read_state(which)
    states = list_states(output_dir)
    if not states:
        raise UserError(f"--resume: no saved training state in {output_dir} (states are folders named "
                        f"name-000001{STATE_SUFFIX}, written at each saved epoch when save_state is on, "
                        "and when a run is stopped)")
    return states[-1]


def prune_states(output_dir: str | os.PathLike, run_name: str, run_id: str, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` states of the run ``run_id`` and leftover temporary folders.

    States of other runs (an earlier run into the same folder) are left alone.
    """
    root = Path(output_dir)
    removed = []
    states = sorted(list_states(root, run_id), key=lambda s: s.global_step)
    for state in states[: max(0, len(states) - max(1, keep))]:
        shutil.rmtree(state.folder, ignore_errors=True)
        removed.append(state.folder)
    for leftover in root.glob(f".{run_name}*{STATE_SUFFIX}.*"):
        if leftover.is_dir() and leftover.suffix in (".tmp", ".old"):
            shutil.rmtree(leftover, ignore_errors=True)
    return removed
