"""The wizard's routes, read top to bottom: each pushes a screen, waits for its answer, moves on.

Runs inside the app's worker (push_screen_wait). The screens only show and
return values; every decision about what comes next is made here, from the
WizardState.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from easytrain import answers as answers_file
from easytrain import questions as Q
from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.plan import TrainPlan, steps_warning
from easytrain.tui.captions import CaptionStep
from easytrain.tui.captions_screen import CaptionsScreen
from easytrain.tui.confirm_screen import ConfirmScreen
from easytrain.tui.done_screen import DoneScreen
from easytrain.tui.preview import StepsPreview
from easytrain.tui.preset_screen import PresetScreen
from easytrain.tui.question_screen import Move, QuestionScreen, QuestionView
from easytrain.tui.queue_screen import QueueScreen, check_queue
from easytrain.tui.repeats import RenameStep, suggestion_for
from easytrain.tui.repeats_screen import RepeatsScreen
from easytrain.tui.review_screen import ReviewRow, ReviewScreen, ReviewView
from easytrain.tui.scan_screen import ScanScreen
from easytrain.tui.start_screen import ROUTES, StartScreen
from easytrain.tui.state import WizardState, inspect_model
from easytrain.wording import plural

ROUTE_LABELS = {key: label for key, label, _ in ROUTES}

# The route questions: data for the generic screen, not part of the answers file.
ANSWERS_FILE = Q.Question(
    "answers_file", "Which answers file?",
    "An answers .json saved by this wizard; files from the old popup scripts and kohya_ss GUI "
    "configs work too.",
    "file", "output", required=True, extensions=(".json",), stored=False,
)
QUEUE_FOLDER = Q.Question(
    "queue_folder", "Which queue folder?",
    "A folder of answers files. They run in name order; an invalid or failing file is reported "
    "and skipped, and finished files move to complete/ inside the folder.",
    "folder", "output", required=True, stored=False,
)
STEPS_FROM = "image_folder"  # the steps preview shows from this question on


@dataclass(frozen=True)
class Outcome:
    """What the app returns: what run_app does after the Textual app has exited."""
    action: str  # "train" | "exit" | "queue" | "quit"
    path: Optional[str] = None  # absolute path of the answers file or queue folder
    shown: Optional[str] = None  # the same path as the person typed it

    @property
    def command(self) -> str:
        verb = "queue" if self.action == "queue" else "train"
        return command(verb, self.shown or self.path or "")


@dataclass
class Wizard:
    app: Any  # the WizardApp (push_screen_wait, notify)
    base_dir: Path
    state: WizardState = None  # type: ignore[assignment]
    route: str = "new"
    preview: StepsPreview = field(default_factory=StepsPreview)
    changed: bool = False  # for the train route: answers differ from the file
    caption_steps: dict[str, CaptionStep] = field(default_factory=dict)  # per image folder: what it applied
    rename_steps: dict[str, RenameStep] = field(default_factory=dict)  # per image folder: folders it renamed
    opened_name: Optional[str] = None  # the edit route: the output name in the file as it was opened

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = WizardState(base_dir=self.base_dir)

    # ---------------------------------------------------------------- routes
    async def run(self, route: Optional[str] = None, path: Optional[str] = None) -> Outcome:
        """From the start screen (or straight into ``route``) to an outcome."""
        while True:
            chosen = route or await self.app.push_screen_wait(StartScreen())
            self.route = chosen
            self.state = WizardState(base_dir=self.base_dir)
            outcome = await getattr(self, f"route_{chosen}")(path)
            if outcome is not None:
                return outcome
            route, path = None, None  # back to the start screen

    async def route_new(self, _path: Optional[str] = None) -> Optional[Outcome]:
        if await self.questions(None) == "back":
            return None
        return await self.review_and_save()

    async def route_preset(self, _path: Optional[str] = None) -> Optional[Outcome]:
        from easytrain.presets import shipped_presets

        try:
            presets = shipped_presets()
        except UserError as exc:
            self.app.notify(str(exc), severity="error")
            return None
        while True:
            chosen = await self.app.push_screen_wait(PresetScreen(self.where("preset"), presets))
            if chosen is None:
                return None
            self.state = WizardState.from_preset(next(p for p in presets if p.name == chosen), self.base_dir)
            if await self.questions(None) != "back":
                return await self.review_and_save()

    async def route_edit(self, path: Optional[str] = None) -> Optional[Outcome]:
        loaded = await self.pick_answers_file(path, check_paths=False)
        if loaded is None:
            return None
        self.state = WizardState.from_answers(loaded, self.base_dir)
        self.opened_name = loaded.get("output_name")
        while await self.questions(None) == "back":
            loaded = await self.pick_answers_file(None, check_paths=False)
            if loaded is None:
                return None
            self.state = WizardState.from_answers(loaded, self.base_dir)
            self.opened_name = loaded.get("output_name")
        return await self.review_and_save()

    async def route_train(self, path: Optional[str] = None) -> Optional[Outcome]:
        loaded = await self.pick_answers_file(path, check_paths=True)
        if loaded is None:
            return None
        self.state = WizardState.from_answers(loaded, self.base_dir)
        self.changed = False
        return await self.review_and_save()

    async def route_queue(self, path: Optional[str] = None) -> Optional[Outcome]:
        shown = path
        while True:
            if shown is None:
                move = await self.ask_route_question(QUEUE_FOLDER)
                if move.kind != "accept":
                    return None
                shown = move.value
            folder = Q.resolve(shown, self.base_dir).resolve()
            entries = check_queue(folder)
            choice = await self.app.push_screen_wait(QueueScreen(self.where("queue folder"), shown, entries))
            if choice == "run":
                return Outcome("queue", str(folder), shown)
            shown = None

    # ---------------------------------------------------------------- questions
    async def questions(self, start: Optional[str]) -> str:
        """Ask from ``start`` (None: the first question) to the end of the flow.

        Returns "review" when the flow is done or Ctrl+S was pressed, "back"
        when Esc was pressed on the first question.
        """
        q = self.state.next_after(None) if start is None else _question(start)
        while q is not None:
            move = await self.ask(q)
            if move.kind == "review":
                return "review"
            if move.kind == "back":
                previous = self.state.previous_before(q.id)
                if previous is None:
                    return "back"
                q = previous
                continue
            before = self.state.values()
            self.record(q, move)
            if q.id == "image_folder" and not await self.after_image_folder():
                continue  # back to the folder question
            if q.id == "batch_size":
                await self.offer_scaled_rates(before)
            q = self.state.next_after(q.id)
        return "review"

    def record(self, q: Q.Question, move: Move) -> None:
        before = self.state.values()
        self.state.set_answer(q, move.value, typed=move.typed)
        if self.state.values() != before:
            self.changed = True

    async def ask(self, q: Q.Question) -> Move:
        state = self.state
        if q is Q.ADVANCED_GATE:
            value, typed, default = state.advanced, state.advanced, False
        else:
            value, typed, default = state.value(q.id), state.is_typed(q.id), state.default_for(q)
        index, total = state.position(q.id)
        view = QuestionView(
            question=q, value=value, typed=typed, default=default,
            where=self.where(f"{q.group} - question {index} of {total}"),
            steps=self.steps_line() if _at_or_after(q.id, STEPS_FROM) else None,
            check=lambda question, v: state.check(question, v) if question.stored else None,
            base_dir=self.base_dir, note=self.note, browse_from=self.beside_dataset(),
        )
        return await self.app.push_screen_wait(QuestionScreen(view))

    def beside_dataset(self) -> Optional[Path]:
        """The folder holding the chosen image folder (where its prompts and reg images usually are)."""
        folder = self.state.values().get("image_folder")
        if not folder:
            return None
        return Q.resolve(str(folder), self.base_dir).resolve().parent

    async def ask_one(self, key: str) -> None:
        """Ask one question (a jump from the review); Esc comes back unchanged."""
        q = _question(key)
        move = await self.ask(q)
        if move.kind != "accept":
            return
        before = self.state.values()
        self.record(q, move)
        if q.id == "image_folder" and not await self.after_image_folder():
            await self.ask_one(key)
        if q.id == "batch_size":
            await self.offer_scaled_rates(before)

    async def offer_scaled_rates(self, before: dict) -> None:
        """After a batch size change: offer the learning rates scaled to the new batch."""
        old, new = before.get("batch_size") or 1, self.state.value("batch_size") or 1
        scaled = Q.scaled_learning_rates(before, old, new)
        if not scaled:
            return
        listing = " and ".join(f"{key} {before[key]:g} -> {value:g}" for key, value in scaled.items())
        question = (f"Batch {old} -> {new}: learning rates usually grow with the batch, about x"
                    f"{(new / old) ** 0.5:.2f} (the square root; x{new / old:g} at most). Use {listing}?")
        if await self.app.push_screen_wait(ConfirmScreen(question, yes="Scale them", no="Keep mine")):
            for key, value in scaled.items():
                self.record(Q.BY_ID[key], Move("accept", value, True))

    async def after_image_folder(self) -> bool:
        """The scan, the suggested repeats, then the optional captions step; False: back to the folder."""
        while await self.show_scan():
            if await self.show_repeats() == "back":
                continue
            if await self.show_captions() == "continue":
                return True
        return False

    async def show_repeats(self) -> str:
        """The suggested repeats and epochs; "back" returns to the scan."""
        while True:
            values = self.state.values()
            folder = Q.resolve(values["image_folder"], self.base_dir).resolve()
            extension = values.get("caption_extension") or ".txt"
            try:
                train = self.preview.scan(values["image_folder"], self.base_dir, extension)
                suggestion = suggestion_for(values, train, None)
            except (UserError, ValueError):
                return "continue"  # an override naming a folder that is gone shows in the review
            step = self.rename_steps.setdefault(str(folder), RenameStep(folder))
            if not suggestion.changes_anything and not step.can_undo:
                return "continue"  # nothing to suggest: no screen
            screen = RepeatsScreen(suggestion, step, self.where("data - suggested repeats"), self.steps_line())
            choice = await self.app.push_screen_wait(screen)
            if choice == "accept":
                self.record(Q.BY_ID["folder_repeats"], Move("accept", suggestion.overrides, True))
                if values.get("length_by") != "steps":
                    self.record(Q.BY_ID["epochs"], Move("accept", suggestion.epochs, True))
                return "continue"
            if choice in ("renamed", "undone"):
                self.preview.forget()  # the folder names changed: scan again
                self.state.set_answer(Q.BY_ID["folder_repeats"], None, typed=False)
                continue
            return "continue" if choice == "keep" else choice

    async def show_scan(self) -> bool:
        """The scan of the chosen image folder; False when the person goes back."""
        values = self.state.values()
        folder = values.get("image_folder")
        try:
            scan = self.preview.scan(folder, self.base_dir, values.get("caption_extension") or ".txt")
        except UserError as exc:
            self.app.notify(str(exc), severity="error")
            return False
        screen = ScanScreen(scan, folder, self.where("data - what is in the image folder"), self.steps_line(),
                            shorten=self.state.shorten_paths)
        return await self.app.push_screen_wait(screen) == "continue"

    async def show_captions(self) -> str:
        """The captions step (not an answer: nothing of it goes into the answers file)."""
        values = self.state.values()
        folder = Q.resolve(values["image_folder"], self.base_dir).resolve()
        extension = values.get("caption_extension") or ".txt"
        keep_tokens = values.get("keep_tokens")
        step = self.caption_steps.setdefault(f"{folder}|{extension}", CaptionStep(folder, extension))
        screen = CaptionsScreen(step, values["image_folder"], self.where("data - captions (optional)"),
                                self.steps_line(), keep_tokens=1 if keep_tokens is None else keep_tokens)
        return await self.app.push_screen_wait(screen)

    async def ask_route_question(self, q: Q.Question, check=None) -> Move:
        view = QuestionView(question=q, value=None, typed=False, default=None, where=self.where(q.group),
                            steps=None, check=check or (lambda question, v: Q.check_value(
                                question, v, {}, self.base_dir)),
                            base_dir=self.base_dir)
        return await self.app.push_screen_wait(QuestionScreen(view))

    async def pick_answers_file(self, path: Optional[str], *, check_paths: bool):
        """Ask for an answers file until one loads; None when the person goes back."""
        def check(question, value):
            problem = Q.check_value(question, value, {}, self.base_dir)
            if problem:
                return problem
            try:
                answers_file.load(Q.resolve(value, self.base_dir), check_paths=check_paths)
            except UserError as exc:
                return str(exc)
            return None

        if path is not None and check(ANSWERS_FILE, path) is None:
            return answers_file.load(Q.resolve(path, self.base_dir), check_paths=check_paths)
        move = await self.ask_route_question(ANSWERS_FILE, check)
        if move.kind != "accept":
            return None
        return answers_file.load(Q.resolve(move.value, self.base_dir), check_paths=check_paths)

    # ---------------------------------------------------------------- review and save
    async def review_and_save(self) -> Optional[Outcome]:
        while True:
            choice = await self.app.push_screen_wait(ReviewScreen(self.review_view()))
            if choice[0] == "jump":
                await self.ask_one(choice[1])
            elif choice[0] == "back":
                flow = self.state.flow()
                if await self.questions(flow[-1].id) == "back":
                    return None
            elif choice[0] == "save":
                missing = self.state.missing()
                if missing:
                    await self.ask_one(missing[0])
                    continue
                outcome = await self.save()
                if outcome is not None:
                    return outcome

    async def save(self) -> Optional[Outcome]:
        """Save the answers (asking where), then ask: train now or exit. None: back to the review."""
        source = self.state.source
        if self.route == "train" and not self.changed and source is not None:
            shown = _shown_path(source, self.base_dir)
            message = f"{shown} is valid and ready to train."
        else:
            default = Q.SAVE_AS.default_for(self.state.values())
            if self.route == "train" and source is not None:
                default = _shown_path(source, self.base_dir)  # changed in the review: save it back
            elif self.route == "edit" and source is not None:
                default = _shown_path(self.edited_file(source), self.base_dir)
            while True:
                view = QuestionView(
                    question=Q.SAVE_AS, value=default, typed=False, default=default,
                    where=self.where("output - save"), steps=self.steps_line(),
                    check=lambda q, v: Q.check_value(q, v, {}, None), base_dir=self.base_dir,
                    note=lambda q, v: f"{v} exists and will be replaced" if Q.resolve(
                        str(v), self.base_dir).exists() else None)
                move = await self.app.push_screen_wait(QuestionScreen(view))
                if move.kind != "accept":
                    return None
                shown = move.value
                target = Q.resolve(shown, self.base_dir)
                try:
                    answers_file.save(self.state.answers(), target)
                except OSError as exc:
                    self.app.notify(f"cannot save {target}: {exc.strerror or exc}", severity="error")
                    continue
                break
            message = f"Saved the answers to {shown}."
        outcome = Outcome("train", str(Q.resolve(shown, self.base_dir).resolve()), shown)
        choice = await self.app.push_screen_wait(DoneScreen(self.where("done"), message, outcome.command))
        return outcome if choice == "train" else Outcome("exit", outcome.path, outcome.shown)

    def edited_file(self, source: Path) -> Path:
        """Where an edited file is saved: back over the opened file, or beside it under a new output name."""
        name = self.state.values().get("output_name")
        if not name or name == self.opened_name:
            return source
        return source.with_name(f"{name}.json")

    def review_view(self) -> ReviewView:
        state = self.state
        values = state.values()
        missing = state.missing()
        rows = [ReviewRow(q.id, values.get(q.id), "missing" if q.id in missing else state.origin(q.id))
                for q in Q.QUESTIONS if q.id in values or q.id in missing]
        summary, warnings = self.plan_summary()
        for key in state.missing():
            warnings.insert(0, f"{key}: still needs an answer (Enter on its row)")
        return ReviewView(where=self.where("review"), rows=rows, summary=summary, warnings=warnings,
                          steps=self.steps_line(),
                          save_label="continue" if self.route == "train" and not self.changed else "save")

    def plan_summary(self) -> tuple[list[str], list[str]]:
        """Lines about the model and planned files, and the plan's warnings."""
        state = self.state
        model = state.model
        arch = state.value("architecture")
        if model is not None and model.sure:
            summary = [f"Architecture: {model.label} (detected)"]
        elif not state.values().get("base_model"):
            summary = ["Architecture: read from the base model once you give one"]
        elif model is None or arch in (None, "auto"):
            summary = [f"Architecture: {arch or 'auto'} (detection could not tell; set it on its row)"]
        else:
            summary = [f"Architecture: {arch} (chosen; detection was not sure)"]
        if state.missing():
            return summary, []
        try:
            plan = TrainPlan.from_answers(state.answers())
        except UserError as exc:
            return summary, [str(exc).splitlines()[0]] + list(getattr(exc, "problems", []))
        files = [_shown_path(Path(p), self.base_dir) for p in plan.output_files]
        more = f" and {plural(len(files) - 1, 'epoch file')}" if len(files) > 1 else ""
        summary.append(f"Output: {files[-1]}{more}")
        accumulation = plan.optimizer.gradient_accumulation_steps
        per_step = plan.data.batch_size * accumulation
        how = f" ({plan.data.batch_size} x {accumulation} accumulated)" if accumulation > 1 else ""
        from easytrain import machine

        several = " (times the GPUs of a multi-GPU launch)" if machine.gpu_info() is not None else ""
        summary.append(f"Effective batch: {per_step} images per step{how}{several}")
        memory, memory_warnings = self.gpu_memory(plan, arch)
        summary += memory
        shown_in_bar = steps_warning(plan.total_steps)
        return summary, [w for w in plan.warnings if w != shown_in_bar] + memory_warnings

    def gpu_memory(self, plan: TrainPlan, arch) -> tuple[list[str], list[str]]:
        """With a known GPU (or EASYTRAIN_GPU_MEMORY): `check`'s estimate, and its warning when it will not fit."""
        from easytrain import machine
        from easytrain.catalog import ARCHITECTURES
        from easytrain.commands.check import BaseModelInfo, memory_lines

        model = self.state.model
        if machine.gpu_info() is None or model is None or arch not in ARCHITECTURES:
            return [], []
        lines, warnings = memory_lines(plan, BaseModelInfo("", arch, model.tiny), extra=False)
        return [lines[0] + " (not yet confirmed on a GPU)"], warnings

    # ---------------------------------------------------------------- small helpers
    def where(self, detail: str) -> str:
        return f"easytrain - {ROUTE_LABELS.get(self.route, self.route)} - {detail}"

    def steps_line(self):
        model = self.state.model
        return self.preview.line(self.state.values(), self.base_dir, tiny=model is not None and model.tiny)

    def note(self, q: Q.Question, value: Any) -> Optional[str]:
        if q.id == "base_model":
            model = inspect_model(value, self.base_dir)
            if model.sure:
                return f"Detected: {model.label}. The file: {model.description}"
            return f"Not sure which architecture this is ({model.description}); you will be asked next."
        if q.id == "architecture" and self.state.model is not None:
            return f"Detection said: {self.state.model.description}"
        if q.warn is not None and value is not None:
            warning = q.warn(value, self.state.values())
            if warning:
                return warning
        if q.id == "network_dim" and self.state.model is not None and self.state.model.tiny:
            return ("The 18 MB above is for a full-size SD1.5 model; easytrain's tiny test model makes a file "
                    "of well under 1 MB at any of these dims.")
        preset = self.state.preset
        if preset is not None and preset.values.get(q.id, ...) == value:
            return f"From the {preset.name} preset."
        return Q.vram_reason(q.id, self.state.values())


def _question(key: str) -> Q.Question:
    if key == Q.ADVANCED_GATE.id:
        return Q.ADVANCED_GATE
    return Q.BY_ID[key]


def _at_or_after(key: str, start: str) -> bool:
    order = [q.id for q in Q.BASIC] + [Q.ADVANCED_GATE.id] + [q.id for q in Q.ADVANCED]
    return key in order and order.index(key) >= order.index(start)


def _shown_path(path: Path, base_dir: Path) -> str:
    """A path relative to the working folder when it is inside it."""
    try:
        return os.path.relpath(path, base_dir) if Path(path).resolve().is_relative_to(base_dir.resolve()) \
            else str(path)
    except ValueError:
        return str(path)
