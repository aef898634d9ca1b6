"""The sample prompts file: one prompt per line, kohya's inline options.

    # comments and blank lines are skipped
    a red circle --n blurry, lowres --w 512 --h 768 --d 42 --l 7.5 --s 28

The prompt is the text before the first option. An option is `--` plus a
letter right after whitespace; its value runs to the next option, so a
negative prompt (`--n`) may hold spaces and commas. Options, as in kohya's
sd-scripts: n (negative prompt), w / h (size, rounded down to a multiple of
8), d (seed), l (CFG scale), s (steps). Stdlib only: the wizard checks files
with it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from easytrain.errors import UserError

MIN_SIZE, MAX_SIZE = 64, 4096
MIN_STEPS, MAX_STEPS = 1, 1000
MAX_CFG = 100.0
MAX_SEED = 2**64 - 1          # torch.Generator.manual_seed's upper bound
OPTIONS_HELP = "--n negative, --w width, --h height, --d seed, --l CFG scale, --s steps"

# An option starts at whitespace + "--" + a letter; the prompt itself may contain "--" inside words.
_OPTION_START = re.compile(r"\s--(?=[A-Za-z])")


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: Optional[int] = None
    height: Optional[int] = None
    seed: Optional[int] = None
    cfg: float = 7.0
    steps: int = 20


def parse_prompts_file(path: str | os.PathLike, *, default_size: tuple[int, int] = (512, 512),
                       default_seed: Optional[int] = None) -> list[SamplePrompt]:
    """Every prompt of the file, with size and seed always filled in.

    A prompt without ``--d`` gets ``default_seed + i`` (``i`` = its position
    among the prompts, ``default_seed`` 0 when None): fixed, so the samples of
    every epoch are comparable.
    """
    path = Path(path)
    text = _read_text(path)
    width, height = (_round_size(v) for v in default_size)
    base_seed = 0 if default_seed is None else int(default_seed)
    prompts: list[SamplePrompt] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parsed = parse_prompt_line(line, where=f"{path}, line {number}")
        index = len(prompts)
        prompts.append(replace(
            parsed,
            width=parsed.width if parsed.width is not None else width,
            height=parsed.height if parsed.height is not None else height,
            seed=parsed.seed if parsed.seed is not None else (base_seed + index) % (MAX_SEED + 1),
        ))
    if not prompts:
        raise UserError(f"{path}: the sample prompts file has no prompts (one prompt per line; "
                        "lines starting with # are comments)")
    return prompts


def parse_prompt_line(line: str, *, where: str = "prompt") -> SamplePrompt:
    """One prompt line; values not given on the line stay None / default."""
    pieces = _OPTION_START.split(" " + line.strip())
    prompt = pieces[0].strip()
    if not prompt:
        raise UserError(f"{where}: the line has options but no prompt text before them")
    values: dict[str, object] = {}
    for piece in pieces[1:]:
        name, _, raw = piece.partition(" ")
        name, raw = name.lower(), raw.strip()
        field = _FIELDS.get(name)
        if field is None:
            raise UserError(f"{where}: unknown option --{name}; allowed: {OPTIONS_HELP}")
        if field in values:
            raise UserError(f"{where}: option --{name} is given twice")
        values[field] = _CONVERTERS[name](raw, f"{where}: option --{name}")
    return SamplePrompt(prompt=prompt, **values)


_FIELDS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "l": "cfg", "s": "steps"}


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: the sample prompts file does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; the sample prompts must be a text file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the sample prompts file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: not UTF-8 text; save the prompts file as UTF-8") from None


def _round_size(value: int) -> int:
    return value - value % 8


def _integer(raw: str, where: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        shown = repr(raw) if raw else "nothing"
        raise UserError(f"{where} must be an integer from {low} to {high}, got {shown}")
    return value


def _size(raw: str, where: str) -> int:
    return _round_size(_integer(raw, where, MIN_SIZE, MAX_SIZE))


def _seed(raw: str, where: str) -> int:
    return _integer(raw, where, 0, MAX_SEED)


def _steps(raw: str, where: str) -> int:
    return _integer(raw, where, MIN_STEPS, MAX_STEPS)


def _cfg(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= MAX_CFG:      # also false for NaN
        shown = repr(raw) if raw else "nothing"
        raise UserError(f"{where} must be a number from 0 to {MAX_CFG:g}, got {shown}")
    return value


def _negative(raw: str, where: str) -> str:
    return raw


_CONVERTERS = {"n": _negative, "w": _size, "h": _size, "d": _seed, "l": _cfg, "s": _steps}
