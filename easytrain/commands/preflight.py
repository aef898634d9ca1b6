"""What `check` and `train` both verify before any model is loaded: check is the promise.

- The output folder: not inside the image folder (the next run would train on
  ``loss.png``), not a system folder, writable (or creatable), and able to
  hold the longest file name the run writes.
- Earlier outputs of this name: listed, with the newest resumable state and
  the command that continues it. `train` (without ``--resume``) moves them
  into ``OUTPUT/previous-N/`` before it starts, so a finished LoRA is never
  overwritten; ``--resume`` continues in place.
- Leftover ``.tmp`` files of an interrupted save are removed at the start of `train`.

Light: no torch (`check` must stay fast).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.sampling.paths import SAMPLE_FOLDER
from easytrain.textsafe import safe_line
from easytrain.train.saving import STATE_JSON, STATE_SUFFIX

BACKUP_PREFIX = "previous-"
SHARED_FILES = ("metrics.csv", "loss.png")  # written by every run into its output folder
# The longest name a run writes beside NAME: a step file's state folder while it is saved under a temp name.
LONGEST_SUFFIX = "-step00000000-state.XXXXXXXX.tmp"
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
                  "/usr", "/var/lib", "/var/log", "/System", "/Library")
WINDOWS_SYSTEM_FOLDERS = ("windows", "program files", "program files (x86)", "programdata")


# ---- the output place ---------------------------------------------------------------------------


def output_place_problem(output_dir: Path, name: str, data_folders: list[Path]) -> Optional[str]:
    """Why the run cannot write into ``output_dir`` (None when it can). Creates nothing."""
    out = _absolute(output_dir)
    for folder in data_folders:
        folder = _absolute(folder)
        if out == folder or folder in out.parents:
            return (f"output_folder: {out} is inside the image folder {folder}; the next run would train on "
                    "its files (loss.png, samples). Put the outputs beside the image folder, e.g. "
                    f"{folder.parent / 'output'}")
    if _is_system_folder(out):
        return f"output_folder: {out} is a system folder; put the outputs in a folder of your own"
    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == out else f"cannot be created: {existing} is a file"
        return f"output_folder: {out} {what}, not a folder"
    writable = _can_write(existing) if existing == out else os.access(existing, os.W_OK | os.X_OK)
    if not writable:
        verb = "is not writable" if existing == out else f"cannot be created: {existing} is not writable"
        return f"output_folder: {out} {verb} (permission denied or a read-only disk)"
    longest = name + LONGEST_SUFFIX
    limit = _name_limit(existing)
    if len(longest.encode("utf-8")) > limit:
        return (f"output_name: too long for this file system: files such as {longest!r} would be "
                f"{len(longest.encode())} bytes, the limit here is {limit}")
    full = out / SAMPLE_FOLDER / longest
    if len(str(full)) > _path_limit(existing):
        return f"output_folder: the path is too long for this system ({len(str(full))} characters with the file names)"
    return None


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _is_system_folder(out: Path) -> bool:
    if sys.platform == "win32":
        parts = [p.lower() for p in out.parts]
        return len(parts) == 1 or (len(parts) >= 2 and parts[1] in WINDOWS_SYSTEM_FOLDERS)
    if out == Path(out.anchor):
        return True
    text = str(out)
    return any(text == root or text.startswith(root + "/") for root in SYSTEM_FOLDERS)


def _can_write(folder: Path) -> bool:
    """Really try: access() says yes on some read-only mounts and network shares."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".easytrain-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def _name_limit(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


def _path_limit(folder: Path) -> int:
    if sys.platform == "win32":
        return 32767
    try:
        return int(os.pathconf(folder, "PC_PATH_MAX"))
    except (AttributeError, OSError, ValueError):
        return 4096


# ---- earlier outputs of this name ---------------------------------------------------------------


@dataclass(frozen=True)
class EarlierState:
    folder: Path
    step: int
    saved_at: float


@dataclass(frozen=True)
class EarlierOutputs:
    """Files of an earlier run of this name in the output folder (none when the folder is fresh)."""
    folder: Path
    files: tuple[Path, ...]     # everything of this name that a new run would overwrite
    lora_files: tuple[Path, ...]
    state: Optional[EarlierState]  # the newest state that can still continue
    names: tuple[str, ...] = ()  # the top-level names as listed (folders end in /)

    @property
    def worth_keeping(self) -> bool:
        return bool(self.lora_files) or self.state is not None


def _run_file_pattern(name: str) -> re.Pattern:
    n = re.escape(name)
    return re.compile(rf"^{n}(?:(?:-\d{{6}}|-step\d{{8}})?(?:\.safetensors|{re.escape(STATE_SUFFIX)})"
                      rf"|\.answers\.json|\.plan\.json|_tags\.txt|\.log)$")  # .log: library_log.py


def find_earlier_outputs(output_dir: Path, name: str, total_steps: Optional[int] = None) -> EarlierOutputs:
    out = _absolute(output_dir)
    pattern = _run_file_pattern(name)
    files: list[Path] = []
    if out.is_dir():
        files = sorted(p for p in out.iterdir() if pattern.match(p.name))
        files += [out / shared for shared in SHARED_FILES if (out / shared).is_file()]
        from easytrain.progress.tensorboard import log_dir

        if log_dir(out, name).is_dir():
            files.append(log_dir(out, name))
        samples = out / SAMPLE_FOLDER
        if samples.is_dir():
            files += sorted(p for p in samples.iterdir() if p.name.startswith(name + "_e") and p.suffix == ".png")
    lora = tuple(p for p in files if p.suffix == ".safetensors" and p.parent == out)
    names = tuple(p.name + ("/" if p.is_dir() else "") for p in files if p.parent == out)
    state = _newest_state(files, total_steps)
    final = out / f"{name}.safetensors"
    if state is not None and final.is_file() and final.stat().st_mtime >= state.saved_at:
        state = None  # the run went on to its end after that state: nothing to continue
    return EarlierOutputs(out, tuple(files), lora, state, names)


def _newest_state(files: list[Path], total_steps: Optional[int]) -> Optional[EarlierState]:
    """The newest complete state folder (state.json written last) that has steps left, read as JSON only."""
    best: Optional[tuple[float, EarlierState]] = None
    for folder in files:
        if not folder.name.endswith(STATE_SUFFIX) or not (folder / STATE_JSON).is_file():
            continue
        try:
            info = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
            step, saved_at = int(info["position"]["global_step"]), float(info.get("saved_at", 0.0))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if total_steps is not None and step >= total_steps:
            continue
        if best is None or saved_at > best[0]:
            best = (saved_at, EarlierState(folder, step, saved_at))
    return best[1] if best else None


def earlier_outputs_lines(earlier: EarlierOutputs, answers_path: str, *, moving: Optional[Path] = None,
                          resuming: bool = False) -> list[str]:
    """What check and the start of train say about a used output folder ([] when it is fresh)."""
    from easytrain.invocation import command

    if not earlier.worth_keeping:
        return []
    names = earlier.names
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    lines = [f"already in {earlier.folder}: {shown}"]
    state = earlier.state
    if resuming:
        return [safe_line(line) for line in lines + ["  --resume continues in place; nothing is moved"]]
    if state is not None:
        lines.append(f"  a resumable state is there: {state.folder.name} (step {state.step}); "
                     f"to continue that run: {command('train', answers_path, '--resume')}")
    if moving:
        lines.append(f"  kept: moved to {moving}/ before this run starts (nothing is overwritten)")
        if state is not None:
            again = command("train", answers_path, "--resume", str(moving / state.folder.name))
            lines.append(f"  to continue the earlier run instead: {again}")
    else:
        lines.append(f"  `train` moves them to {next_backup_folder(earlier.folder)}/ first: nothing is overwritten")
    return [safe_line(line) for line in lines]


def next_backup_folder(output_dir: Path) -> Path:
    n = 1
    while (output_dir / f"{BACKUP_PREFIX}{n}").exists():
        n += 1
    return output_dir / f"{BACKUP_PREFIX}{n}"


def back_up_earlier_outputs(earlier: EarlierOutputs) -> Path:
    """Move the earlier run's files into a new ``previous-N`` folder; returns that folder."""
    target = next_backup_folder(earlier.folder)
    target.mkdir()
    try:
        for path in earlier.files:
            destination = target / path.relative_to(earlier.folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)
    except OSError as exc:
        raise UserError(f"{earlier.folder}: could not move the earlier files into {target} "
                        f"({exc.strerror}); the files moved so far are there, the rest are where they were") from None
    return target


# ---- leftovers of an interrupted save -----------------------------------------------------------


def clean_leftovers(output_dir: Path, name: str) -> list[Path]:
    """Remove the temporary files and folders an interrupted save of this run (or its shared files) left."""
    out = _absolute(output_dir)
    prefixes = tuple(f".{n}" for n in (name, *SHARED_FILES))
    removed = []
    for folder in (out, out / SAMPLE_FOLDER):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not (path.name.startswith(prefixes) and path.suffix in (".tmp", ".old")):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ---- both together ------------------------------------------------------------------------------


def data_folders(plan) -> list[Path]:
    """The image folders of the run (the scanned roots and every subset folder)."""
    folders = []
    for scan in (plan.train_scan, plan.reg_scan):
        if scan is None:
            continue
        folders.append(Path(scan.root))
        folders += [Path(s.folder) for s in scan.subsets]
    return folders


def run_preflight(plan) -> None:
    """Every check of the run's files that needs no model: UserError naming the first problem."""
    problem = output_place_problem(plan.saving.output_dir, plan.saving.output_name, data_folders(plan))
    if problem:
        raise UserError(safe_line(problem))
    if plan.sampling.prompts_file is not None:
        from easytrain.sampling.prompts import parse_prompts_file

        parse_prompts_file(plan.sampling.prompts_file, default_size=tuple(plan.resolution))
    if plan.network.initial_weights is not None:
        from easytrain.model.detect import read_safetensors_header

        read_safetensors_header(plan.network.initial_weights)
