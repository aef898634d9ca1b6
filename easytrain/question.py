"""One question of the wizard, as data (the table is questions.py; a family adds its own from its folder).

No textual, no torch, nothing of easytrain's: families' light modules import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

Values = Mapping[str, Any]


@dataclass(frozen=True)
class Question:
    id: str
    prompt: str
    help: str
    kind: str  # yesno | choice | int | float | text | file | folder | model | mapping
    group: str
    default: Any = None  # a value, or a callable taking the earlier answers
    default_text: str = ""  # how the default reads in listings ("dim / 2")
    required: bool = False
    choices: tuple[tuple[Any, str], ...] = ()  # (value, label)
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    above: Optional[float] = None  # strictly greater than
    multiple_of: Optional[int] = None
    optional: bool = False  # an empty answer is a real answer (None)
    must_exist: bool = True  # folders: False means it is created when missing
    component_folder: bool = False  # model kind: a diffusers component folder (config.json) is fine too
    extensions: tuple[str, ...] = ()
    condition: Optional[Callable[[Values], bool]] = None
    condition_text: str = ""
    advanced: bool = False
    stored: bool = True  # False: asked, but not a key of the answers file
    check: Optional[Callable[[Any, Values], Optional[str]]] = None
    warn: Optional[Callable[[Any, Values], Optional[str]]] = None  # an allowed value worth a second look
    depends_on: tuple[str, ...] = ()  # earlier answers the default or condition reads

    def applies(self, values: Values) -> bool:
        return self.condition is None or bool(self.condition(values))

    def default_for(self, values: Values) -> Any:
        return self.default(values) if callable(self.default) else self.default

    @property
    def choice_values(self) -> tuple[Any, ...]:
        return tuple(value for value, _ in self.choices)
