"""The answers file: the one hand-off from the wizard to the trainer.

``load`` is the only gate: it checks every key against the question table,
collects every problem (key, value, what is allowed) before reporting, maps
popup-era and kohya_ss GUI files, and resolves nothing silently. ``save``
writes our format, keys in question order, atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from easytrain import questions as Q
from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.fsutil import atomic_write_text

SCHEMA_VERSION = 1
PATH_KINDS = ("file", "folder", "model")
MAX_DEPTH = 8  # our files are 3 deep (object -> optimizer_args -> list); anything deeper is not an answers file
UNKNOWN_KEYS_SHOWN = 20  # unknown keys listed (each with a "did you mean"); the rest are counted


class AnswersError(UserError):
    """An answers file with problems; ``problems`` lists each one with its key."""

    def __init__(self, source: str, problems: list[str]):
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun} in the answers file", problems=problems)


class Answers:
    """Validated answers, read-only. ``answers.network_dim`` or ``answers.get("network_dim")``.

    Keys whose question does not apply read as None. Path values are kept as
    written; ``path(key)`` resolves them against the answers file's folder.
    """

    __slots__ = ("_values", "source", "warnings")

    def __init__(self, values: Mapping[str, Any], *, source: Optional[Path] = None,
                 warnings: Iterable[str] = ()):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "source", Path(source) if source else None)
        object.__setattr__(self, "warnings", tuple(warnings))

    def __getattr__(self, key: str) -> Any:
        if key in Q.BY_ID:
            return self._values.get(key)
        raise AttributeError(f"no answers key {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Answers are read-only; use replace()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Answers) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Answers({self.to_dict()!r})"

    def get(self, key: str, default: Any = None) -> Any:
        value = self._values.get(key)
        return default if value is None else value

    def __contains__(self, key: str) -> bool:
        return key in self._values

    @property
    def base_dir(self) -> Optional[Path]:
        return self.source.parent if self.source else None

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def to_dict(self) -> dict[str, Any]:
        """Our file format: schema_version first, then the applying keys in question order."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for key in Q.KEYS:
            if key in self._values:
                out[key] = self._values[key]
        return out

    def path(self, key: str) -> Optional[Path]:
        """A path answer resolved against the answers file's folder (None if unset)."""
        value = self._values.get(key)
        if value is None or not str(value).strip() or value == Q.BUILTIN_TINY:  # "  " is no path either
            return None
        return Q.resolve(str(value), self.base_dir).resolve()

    def replace(self, **changes: Any) -> "Answers":
        """New answers with some values changed; defaults and conditions re-applied."""
        merged = dict(self._values)
        merged.update(changes)
        if self.base_dir:
            merged["_base_dir"] = str(self.base_dir)
        return Answers(Q.applicable_values(merged), source=self.source, warnings=self.warnings)

    def absolute(self) -> "Answers":
        """The same answers with every path made absolute (for copies stored elsewhere)."""
        changed = {}
        for key in Q.KEYS:
            if Q.BY_ID[key].kind in PATH_KINDS and self._values.get(key) not in (None, ""):
                resolved = self.path(key)
                if resolved is not None:
                    changed[key] = str(resolved)
        return Answers({**self._values, **changed}, source=None, warnings=self.warnings)


def _is_ours(data: Mapping[str, Any]) -> bool:
    return "schema_version" in data


def validate(data: Mapping[str, Any], *, base_dir: Optional[Path], check_paths: bool = True) -> tuple[dict, list[str]]:
    """Check a dict in our format. Returns (values with defaults filled, problems)."""
    problems: list[str] = []
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or version != SCHEMA_VERSION:
        problems.append(f"schema_version: this easytrain reads version {SCHEMA_VERSION} (the number), "
                        f"got {Q.shown(version)}")
    unknown = [key for key in data if key not in ("schema_version", "$schema", "$comment") and key not in Q.BY_ID]
    for key in unknown[:UNKNOWN_KEYS_SHOWN]:
        hint = _closest(key)
        problems.append(f"{Q.shown(key, quote=False)}: unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                        + f"; see `{command('questions')}` for the keys")
    if len(unknown) > UNKNOWN_KEYS_SHOWN:
        problems.append(f"... and {len(unknown) - UNKNOWN_KEYS_SHOWN} more unknown keys")
    known = {k: whole_numbers_as_int(Q.BY_ID[k], v) for k, v in data.items() if k in Q.BY_ID}
    for key, value in list(known.items()):
        if _has_nul(value):
            problems.append(f"{key}: contains a NUL character (\\u0000), which no file name or setting may hold")
            del known[key]
    context = {"_base_dir": str(base_dir)} if base_dir else {}
    values = Q.applicable_values({**known, **context})
    for q in Q.QUESTIONS:
        if q.id == "image_folder" and known.get("dataset_config") and not known.get("image_folder"):
            values.pop("image_folder", None)  # a dataset TOML names the folders instead
            continue
        if q.id not in values:
            if q.required and q.applies(values) and q.id not in known:
                problems.append(f"{q.id}: missing; it is required ({Q.allowed_text(q)})")
            continue
        problem = Q.check_value(q, values[q.id], values, base_dir if check_paths else None)
        if problem:
            problems.append(f"{q.id}: {problem}")
    return values, problems


def whole_numbers_as_int(q: Q.Question, value: Any) -> Any:
    """16.0 for an integer setting is 16: stored, planned and trained as the integer."""
    if q.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _has_nul(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\0" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _closest(key: str) -> Optional[str]:
    import difflib

    if len(key) > 100:  # no key is that long; comparing would only cost time
        return None
    matches = difflib.get_close_matches(key, Q.KEYS, n=1, cutoff=0.75)
    return matches[0] if matches else None


def from_dict(data: Mapping[str, Any], *, source: Optional[Path] = None, check_paths: bool = True) -> Answers:
    """Answers from a parsed file (ours or a legacy format); raises AnswersError listing every problem."""
    label = str(source) if source else "answers"
    if not isinstance(data, Mapping):
        raise UserError(f"{label}: an answers file must hold a JSON object, got {type(data).__name__}")
    warnings: list[str] = []
    if not _is_ours(data):
        from easytrain.legacy import import_legacy

        data, warnings = import_legacy(data)
    base_dir = source.parent if source else None
    values, problems = validate(data, base_dir=base_dir, check_paths=check_paths)
    if problems:
        raise AnswersError(label, problems)
    return Answers(values, source=source,
                   warnings=[*warnings, *Q.unused_answers(data, values), *Q.value_warnings(values)])


def load(path: str | Path, *, check_paths: bool = True) -> Answers:
    """Read and validate an answers file. Every problem is reported at once."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an answers file; give a .json file in it, "
                        f"or train every answers file in it with `{command('queue', str(path))}`")
    if not path.is_file():
        raise UserError(f"{path}: answers file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; an answers file is JSON") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    if path.suffix.lower() == ".toml":
        from easytrain.legacy import flatten_kohya_toml

        data = flatten_kohya_toml(parse_toml(text, str(path)))
    else:
        data = parse_json(text, str(path))
    return from_dict(data, source=path.absolute(), check_paths=check_paths)


def parse_toml(text: str, label: str) -> dict:
    """A kohya sd-scripts --config_file TOML (read as a legacy answers file)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import toml as tomllib
    try:
        return tomllib.loads(text)
    except Exception as exc:  # the parser's message carries the line and column
        raise UserError(f"{label}: not valid TOML ({exc})") from None


class _Refused(ValueError):
    """Raised from inside the JSON parser for what an answers file may never hold."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {Q.shown(key)} is given twice; keep one (a later copy would silently "
                               "win and hide the other)")
            seen.add(key)
    return result


def _depth(data: Any) -> int:
    deepest, pending = 0, [(data, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
            pending.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(text: str, label: str) -> Any:
    """The JSON of an answers file, refusing duplicate keys, absurd numbers and deep nesting."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise UserError(f"{label}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except _Refused as exc:
        raise UserError(f"{label}: {exc}") from None
    except ValueError as exc:  # Python refuses to convert integers of thousands of digits
        raise UserError(f"{label}: a number with thousands of digits is far outside every allowed range "
                        f"({str(exc).split(';')[0]})") from None
    except RecursionError:
        raise UserError(f"{label}: nested too deeply to be an answers file (at most {MAX_DEPTH} levels)") from None
    if _depth(data) > MAX_DEPTH:
        raise UserError(f"{label}: nested too deeply to be an answers file (at most {MAX_DEPTH} levels)")
    return data


def dumps(answers: Answers) -> str:
    return json.dumps(answers.to_dict(), indent=2, ensure_ascii=False) + "\n"


def save(answers: Answers, path: str | Path) -> Path:
    """Write our format atomically. Relative paths stay relative to the new file's folder."""
    path = Path(path).expanduser()
    target_dir = path.absolute().parent
    if answers.base_dir and answers.base_dir.resolve() != target_dir.resolve():
        answers = answers.absolute()
    atomic_write_text(path, dumps(answers))
    return path


def defaults(**overrides: Any) -> Answers:
    """Answers with every default filled (required keys from ``overrides``); not path-checked."""
    return Answers(Q.applicable_values(overrides))


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of our answers file, generated from the question table."""
    props: dict[str, Any] = {
        "schema_version": {"const": SCHEMA_VERSION, "description": "Format version of this file."}
    }
    for q in Q.QUESTIONS:
        props[q.id] = _schema_for(q)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://easytrain.local/answers.schema.json",
        "title": "easytrain answers file",
        "description": "Answers to the easytrain wizard; `easytrain train FILE` trains from it.",
        "type": "object",
        "properties": props,
        "required": ["schema_version"] + [q.id for q in Q.QUESTIONS if q.required and q.condition is None],
        "additionalProperties": False,
    }


def _schema_for(q: Q.Question) -> dict[str, Any]:
    description = f"{q.prompt} {q.help}"
    if q.condition_text:
        description += f" (Only when {q.condition_text}.)"
    schema: dict[str, Any]
    if q.kind == "yesno":
        schema = {"type": "boolean"}
    elif q.kind == "choice":
        schema = {"enum": list(q.choice_values)}
    elif q.kind in ("int", "float"):
        schema = {"type": "integer" if q.kind == "int" else "number"}
        if q.minimum is not None:
            schema["minimum"] = q.minimum
        if q.maximum is not None:
            schema["maximum"] = q.maximum
        if q.above is not None:
            schema["exclusiveMinimum"] = q.above
        if q.multiple_of:
            schema["multipleOf"] = q.multiple_of
    elif q.kind == "mapping":
        schema = {"type": "object"}
    else:
        schema = {"type": "string"}
        if q.id == "output_name":
            schema["pattern"] = Q.NAME_PATTERN.pattern
    if q.optional:
        schema = {"anyOf": [schema, {"type": "null"}]}
    default = q.default if not callable(q.default) else None
    if default is not None:
        schema["default"] = default
    schema["description"] = description
    return schema
