"""Presets: answers files in answers/presets/ holding the guides' recipes, without the data.

A preset is an ordinary answers file that leaves out what belongs to one run
(base model, image folder, output name...) and says what it is in its
"$comment". The wizard offers them on its start screen; copying one and adding
`base_model` and `image_folder` makes a file `easytrain train` runs. Loading
one checks every key as the answers file does, so an edited preset that no
longer makes sense is refused with its key and file named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from easytrain import answers as answers_file
from easytrain import questions as Q
from easytrain.errors import UserError

PRESET_DIR = Path(__file__).resolve().parents[1] / "answers" / "presets"
COMMENT_KEY = "$comment"
# What a preset may leave out: the keys that belong to one run, not to a recipe.
RUN_KEYS = ("base_model", "image_folder", "reg_image_folder", "sample_prompts")


@dataclass(frozen=True)
class Preset:
    name: str  # the file's stem: character, style, ...
    description: str
    values: dict[str, Any]  # the keys the file sets (validated), nothing filled in
    path: Path


def load_preset(path: str | Path) -> Preset:
    """Read and check one preset; raises UserError naming the file and every bad key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read this preset ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; a preset is JSON") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a preset must hold a JSON object, got {type(data).__name__}")
    description = data.get(COMMENT_KEY, "")
    problems = [] if isinstance(description, str) else [f"{COMMENT_KEY}: must be text, got {description!r}"]
    _values, found = answers_file.validate(data, base_dir=path.parent, check_paths=False)
    problems += [p for p in found if not any(p.startswith(f"{key}: missing") for key in RUN_KEYS)]
    if problems:
        raise answers_file.AnswersError(str(path), problems)
    values = {k: v for k, v in data.items() if k in Q.BY_ID}
    return Preset(path.stem, description or f"the settings in {path.name}", values, path)


def shipped_presets(folder: Optional[Path] = None) -> list[Preset]:
    """Every preset in ``folder`` (answers/presets/) in name order; a broken one raises UserError naming it."""
    return [load_preset(path) for path in sorted((folder or PRESET_DIR).glob("*.json"))]
