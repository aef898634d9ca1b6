"""`easytrain previous OUTPUT_FOLDER`: the earlier runs that `train` moved aside, listed, and the oldest removed.

Every new run in a used output folder moves the earlier run's files into
``previous-N/`` (nothing is overwritten), so they pile up. This lists them,
newest first, with their size and files; ``--keep N --apply`` removes all but
the newest N. Without --apply nothing changes.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.progress import format as fmt
from easytrain.textsafe import safe_line
from easytrain.wording import plural

BACKUP_PATTERN = re.compile(r"^previous-(\d+)$")  # commands/preflight.py's BACKUP_PREFIX + a number
PILE_UP = 3  # `train` mentions this command once a folder holds more previous-N folders than this


@dataclass(frozen=True)
class Backup:
    folder: Path
    number: int
    size: int
    files: int
    loras: tuple[str, ...]
    modified: float


def find_backups(output_dir: Path) -> list[Backup]:
    """The previous-N folders of ``output_dir``, newest (highest N) first."""
    found = []
    try:
        entries = list(Path(output_dir).iterdir())
    except OSError:
        return []
    for entry in entries:
        match = BACKUP_PATTERN.match(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        size = files = 0
        newest = 0.0
        for path in entry.rglob("*"):
            try:
                stat = path.lstat()
            except OSError:
                continue
            newest = max(newest, stat.st_mtime)
            if path.is_file():
                size += stat.st_size
                files += 1
        loras = tuple(sorted(p.name for p in entry.glob("*.safetensors")))
        found.append(Backup(entry, int(match.group(1)), size, files, loras, newest))
    return sorted(found, key=lambda b: b.number, reverse=True)


def backup_lines(backups: list[Backup]) -> list[str]:
    lines = []
    for b in backups:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b.modified)) if b.modified else "-"
        shown = ", ".join(b.loras[:3]) + (f" and {len(b.loras) - 3} more" if len(b.loras) > 3 else "")
        lines.append(f"  {b.folder.name}  {when}  {fmt.memory(b.size)}  {plural(b.files, 'file')}"
                     + (f"  ({shown})" if shown else ""))
    return [safe_line(line) for line in lines]


def run_previous(folder: str, *, keep: Optional[int] = None, apply: bool = False) -> int:
    output_dir = Path(folder).expanduser()
    if not output_dir.is_dir():
        raise UserError(f"{folder}: output folder not found")
    if keep is not None and keep < 0:
        raise UserError(f"--keep: must be 0 or more, got {keep}")
    backups = find_backups(output_dir)
    if not backups:
        print(f"{output_dir}: no previous-N folders (earlier runs moved aside by `train`)")
        return 0
    total = sum(b.size for b in backups)
    print(f"{output_dir}: {plural(len(backups), 'earlier run')} moved aside, {fmt.memory(total)} in all "
          "(newest first):")
    print("\n".join(backup_lines(backups)))
    if keep is None:
        print(f"To remove all but the newest 2: {command('previous', str(folder), '--keep', '2', '--apply')}")
        return 0
    going = backups[keep:]
    if not going:
        print(f"nothing to remove: {plural(len(backups), 'folder')}, --keep {keep}")
        return 0
    freed = fmt.memory(sum(b.size for b in going))
    names = ", ".join(b.folder.name for b in going)
    if not apply:
        print(f"would remove {names} ({freed}); add --apply to remove them")
        return 0
    for backup in going:
        try:
            shutil.rmtree(backup.folder)
        except OSError as exc:
            raise UserError(f"{backup.folder}: could not be removed ({exc.strerror or exc}); "
                            "the folders listed before it are gone") from None
    print(f"removed {names} ({freed} freed)")
    return 0


def pile_up_line(output_dir: Path) -> Optional[str]:
    """A hint once previous-N folders pile up in ``output_dir`` (None while there are few)."""
    backups = find_backups(output_dir)
    if len(backups) <= PILE_UP:
        return None
    size = fmt.memory(sum(b.size for b in backups))
    return (f"{output_dir} holds {plural(len(backups), 'previous-N folder')} ({size}); to list them and "
            f"remove the oldest: {command('previous', str(output_dir))}")
