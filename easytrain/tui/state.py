"""What the wizard knows so far: typed answers, defaults, and which questions apply.

No Textual here: the screens read this state and the flow changes it, so the
rules (conditions re-evaluated on every move, typed answers kept, defaulted
answers following their default function) are plain code that tests can call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from easytrain import questions as Q
from easytrain.catalog import TINY_MODEL_ARCH, architecture_label
from easytrain.answers import Answers
from easytrain.errors import UserError



@dataclass(frozen=True)
class ModelInfo:
    """What detection said about the base model."""
    arch: Optional[str]
    sure: bool
    description: str
    tiny: bool = False  # one of easytrain's tiny test models (they fit any GPU)

    @property
    def label(self) -> str:
        return architecture_label(self.arch)


def inspect_model(value: str, base_dir: Path) -> ModelInfo:
    """Detect the architecture of a base-model answer; raises UserError for a file that is not one."""
    if value == Q.BUILTIN_TINY:
        return ModelInfo(TINY_MODEL_ARCH, True, "easytrain's tiny demo model (SD1-shaped)", tiny=True)
    from easytrain.families.detect import detect_architecture

    path = Q.resolve(value, base_dir)
    detection = detect_architecture(path)
    sure = detection.sure and path.suffix.lower() != ".ckpt"
    return ModelInfo(detection.arch, sure, detection.description, tiny=detection.is_tiny)


def vae_problem(value: str, base_model: str, base_dir: Path) -> Optional[str]:
    """Why the VAE answer does not fit the base model (None when it does, or only loading can tell)."""
    from easytrain.model.vae_check import check_vae_fits

    def spec(answer: str):
        return answer if answer == Q.BUILTIN_TINY else Q.resolve(answer, base_dir)

    try:
        check_vae_fits(spec(value), str(spec(base_model)))
    except UserError as exc:
        return str(exc).removeprefix("vae: ")
    return None


@dataclass
class WizardState:
    """The answers of one wizard run.

    ``typed`` holds what the person chose; every other applying question takes
    its default, computed from the answers before it each time, so changing
    the optimizer to Prodigy moves an untouched learning rate to 1.0 but leaves
    a typed one alone.
    """
    base_dir: Path = field(default_factory=Path.cwd)
    typed: dict[str, Any] = field(default_factory=dict)
    model: Optional[ModelInfo] = None
    advanced: bool = False
    source: Optional[Path] = None  # the answers file this run started from, if any
    preset: Optional[Any] = None  # the presets.Preset this run started from, if any

    # ---------------------------------------------------------------- values
    def values(self) -> dict[str, Any]:
        """Every applying answer: typed ones, the detected architecture, and defaults."""
        merged = dict(self.typed)
        if "architecture" not in merged and self.model is not None and self.model.arch:
            merged["architecture"] = self.model.arch
        merged["_base_dir"] = str(self.base_dir)
        return Q.applicable_values(merged)

    def value(self, key: str) -> Any:
        return self.values().get(key)

    def default_for(self, q: Q.Question) -> Any:
        """The default of ``q`` given the answers before it (the detected one for the architecture)."""
        values = self.values()
        if q.id == "architecture" and self.model is not None and self.model.arch:
            return self.model.arch
        return q.default_for({**values, "_base_dir": str(self.base_dir)})

    def is_typed(self, key: str) -> bool:
        return key in self.typed

    def origin(self, key: str) -> str:
        """Where an answer comes from: "" (the person), "detected" or "default"."""
        if key in self.typed:
            if self.preset is not None and self.preset.values.get(key, ...) == self.typed[key]:
                return f"preset {self.preset.name}"
            return ""
        if key == "architecture" and self.model is not None and self.model.arch:
            return "detected"
        return "default"

    def set_answer(self, q: Q.Question, value: Any, *, typed: bool) -> None:
        """Record an answer; ``typed=False`` means "follow the default from now on"."""
        if q is Q.ADVANCED_GATE:
            self.advanced = bool(value)
            return
        if isinstance(value, str) and q.kind in ("folder", "file", "model") and len(value) > 1:
            value = value.rstrip("/\\") or value
        if typed:
            self.typed[q.id] = value
        else:
            self.typed.pop(q.id, None)
        if q.id == "base_model":
            self.model = inspect_model(value, self.base_dir) if value else None
            if self.model is not None and self.model.sure:
                self.typed.pop("architecture", None)
        self.drop_inapplicable()

    def drop_inapplicable(self) -> None:
        """Forget typed answers whose question no longer applies."""
        values = self.values()
        for key in list(self.typed):
            if key not in values:
                del self.typed[key]

    # ---------------------------------------------------------------- the flow
    def asks(self, q: Q.Question, values: Optional[dict] = None) -> bool:
        """Whether the wizard asks ``q`` now (applies, and is not answered by detection)."""
        if q is Q.ADVANCED_GATE:
            return True
        if q.advanced and not self.advanced:
            return False
        if q.id == "architecture":
            return self.model is None or not self.model.sure
        return q.applies(self.values() if values is None else values)

    def flow(self) -> list[Q.Question]:
        """The questions in the order they are asked, for the answers given so far."""
        values = self.values()
        return [q for q in _ORDERED if self.asks(q, values)]

    def next_after(self, key: Optional[str]) -> Optional[Q.Question]:
        """The first asked question after ``key`` (None: the flow is done)."""
        flow = self.flow()
        if key is None:
            return flow[0] if flow else None
        order = _order()
        position = order[key]
        for q in flow:
            if order[q.id] > position:
                return q
        return None

    def previous_before(self, key: str) -> Optional[Q.Question]:
        """The last asked question before ``key`` (None: ``key`` is the first)."""
        order = _order()
        position = order[key]
        earlier = [q for q in self.flow() if order[q.id] < position]
        return earlier[-1] if earlier else None

    def position(self, key: str) -> tuple[int, int]:
        """(1-based index of ``key``, number of questions) in the current flow."""
        ids = [q.id for q in self.flow()]
        return (ids.index(key) + 1 if key in ids else len(ids), len(ids))

    # ---------------------------------------------------------------- checks
    def check(self, q: Q.Question, value: Any) -> Optional[str]:
        """Why ``value`` cannot be the answer to ``q`` (None when it can)."""
        values = {**self.values(), q.id: value}
        problem = Q.check_value(q, value, values, self.base_dir)
        if problem is None and q.id == "base_model" and value:
            try:
                inspect_model(value, self.base_dir)
            except UserError as exc:
                problem = str(exc)
        if problem is None and q.id == "vae" and value and values.get("base_model"):
            problem = vae_problem(value, values["base_model"], self.base_dir)
        return self.shorten_paths(problem) if problem else None

    def shorten_paths(self, text: str) -> str:
        """Paths inside the working folder read as typed (relative), not as long absolute paths."""
        return text.replace(str(self.base_dir) + os.sep, "")

    def answers(self) -> Answers:
        """The answers as the file will hold them; relative paths are relative to ``base_dir``."""
        return Answers(self.values(), source=self.base_dir / "wizard.json")

    def missing(self) -> list[str]:
        """Keys that are required and still unanswered."""
        values = self.values()
        return [q.id for q in Q.QUESTIONS if q.required and q.applies(values) and not values.get(q.id)]

    # ---------------------------------------------------------------- from a file
    @classmethod
    def from_answers(cls, answers: Answers, base_dir: Optional[Path] = None) -> "WizardState":
        """Pre-fill from a loaded file: values that equal their default stay defaults (they follow)."""
        base = base_dir or Path.cwd()
        loaded = answers.absolute().values()
        state = cls(base_dir=base, source=answers.source)
        if loaded.get("base_model"):
            try:
                state.model = inspect_model(loaded["base_model"], base)
            except UserError:
                state.model = None
        for q in Q.QUESTIONS:
            if q.id not in loaded:
                continue
            if loaded[q.id] != state.default_for(q) or q.required:
                state.typed[q.id] = loaded[q.id]
        state.advanced = any(state.is_typed(q.id) for q in Q.ADVANCED)
        state.drop_inapplicable()
        return state


    @classmethod
    def from_preset(cls, preset, base_dir: Optional[Path] = None) -> "WizardState":
        """A new run with the preset's values filled in; those equal to their default stay defaults (they follow)."""
        state = cls(base_dir=base_dir or Path.cwd(), preset=preset)
        for q in Q.QUESTIONS:
            if q.id in preset.values and preset.values[q.id] != state.default_for(q):
                state.typed[q.id] = preset.values[q.id]
        state.advanced = any(q.id in preset.values for q in Q.ADVANCED)
        state.drop_inapplicable()
        return state


_ORDERED: tuple[Q.Question, ...] = (*Q.BASIC, Q.ADVANCED_GATE, *Q.ADVANCED)


def _order() -> dict[str, int]:
    return {q.id: index for index, q in enumerate(_ORDERED)}
