"""The command a person types to run easytrain, the way this easytrain was started.

A user who followed the README runs `python3 wizard.py ...` and has no
`easytrain` on PATH, so every command easytrain prints ("To continue: ...",
check's "ready to train with ...", the wizard's "train it later") comes from
`command()` here. The launcher (wizard.py) sets LAUNCHER_VARIABLE to the
interpreter and its own path; without it, `easytrain` when that is on PATH,
else `python -m easytrain`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

LAUNCHER_VARIABLE = "EASYTRAIN_LAUNCHER"  # JSON ["python3", "/abs/path/wizard.py"], set by wizard.py


def quote(word: str) -> str:
    """One shell word, quoted only when it needs to be."""
    if os.name == "nt":
        return f'"{word}"' if any(c in word for c in ' &()^;,') else word
    return shlex.quote(word)


def prefix() -> list[str]:
    """The words that start easytrain: the launcher, `easytrain`, or the interpreter with -m."""
    launcher = _launcher()
    if launcher is not None:
        python, script = launcher
        return [_interpreter(python), _short_path(script)]
    if shutil.which("easytrain"):
        return ["easytrain"]
    return [_interpreter(sys.executable), "-m", "easytrain"]


def command(*args: str) -> str:
    """`easytrain ARGS` as a line that runs as typed in the user's shell."""
    return " ".join(quote(str(word)) for word in (*prefix(), *args))


def _launcher() -> tuple[str, str] | None:
    raw = os.environ.get(LAUNCHER_VARIABLE, "")
    try:
        python, script = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not (isinstance(python, str) and isinstance(script, str) and python and script):
        return None
    return python, script


def _short_path(path: str) -> str:
    """``path`` relative to the working folder when it lies inside it, else as given."""
    try:
        relative = Path(path).resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return path
    return str(relative)


def _interpreter(executable: str) -> str:
    """The interpreter's bare name when that name on PATH is the same program, else its full path."""
    name = Path(executable).name
    found = shutil.which(name)
    try:
        if found and Path(found).resolve() == Path(executable).resolve():
            return name
    except OSError:
        pass
    return executable
