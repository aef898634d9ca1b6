"""Helpers for the wizard tests: a working folder with the demo dataset, and Pilot steps."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from easytrain.demo import make_demo_dataset
from easytrain.tui.app import WizardApp, create_app
from easytrain.tui.question_screen import QuestionScreen

SIZE = (80, 24)


def make_workdir(root: Path) -> Path:
    """``root`` holding images/5_shapes (16 captioned demo images); returns ``root``."""
    make_demo_dataset(root / "images")
    return root


def new_app(workdir: Path, **kwargs) -> WizardApp:
    return create_app(base_dir=workdir, **kwargs)


def screen_name(app: WizardApp) -> str:
    return type(app.screen).__name__


def question_key(app: WizardApp) -> Optional[str]:
    screen = app.screen
    return screen.view.question.id if isinstance(screen, QuestionScreen) else None


async def settle(pilot) -> None:
    await pilot.pause()


async def press(pilot, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


async def type_text(pilot, text: str) -> None:
    await pilot.press(*text)
    await settle(pilot)


async def fill(pilot, text: str) -> None:
    """Put ``text`` into the field at once (as a paste would); ``type_text`` types key by key."""
    await settle(pilot)
    field = pilot.app.screen.query_one("#field")
    field.value = text
    field.cursor_position = len(text)
    await settle(pilot)


async def answer(pilot, text: str = "") -> None:
    """Fill in ``text`` (nothing: keep the default) and press Enter."""
    if text:
        await fill(pilot, text)
    await press(pilot, "enter")


async def to_question(pilot, key: str, limit: int = 80) -> None:
    """Press Enter (keep defaults) until the question ``key`` is on screen."""
    for _ in range(limit):
        if question_key(pilot.app) == key:
            return
        assert screen_name(pilot.app) in ("QuestionScreen", "ScanScreen", "RepeatsScreen", "CaptionsScreen"), \
            screen_name(pilot.app)
        await press(pilot, "enter")
    raise AssertionError(f"never reached {key}; at {question_key(pilot.app)}")


async def to_review(pilot, limit: int = 80) -> None:
    for _ in range(limit):
        if screen_name(pilot.app) == "ReviewScreen":
            return
        await press(pilot, "enter")
    raise AssertionError(f"never reached the review; at {question_key(pilot.app)}")


async def start_new(pilot, base_model: str = "builtin:tiny", image_folder: str = "images") -> None:
    """From the start screen: the new route, the base model, the image folder, past the scan and captions."""
    await settle(pilot)
    if screen_name(pilot.app) == "StartScreen":
        await press(pilot, "enter")
    assert question_key(pilot.app) == "base_model"
    await answer(pilot, base_model)
    assert question_key(pilot.app) == "image_folder", question_key(pilot.app)
    await answer(pilot, image_folder)
    assert screen_name(pilot.app) == "ScanScreen"
    await press(pilot, "enter")
    assert screen_name(pilot.app) == "RepeatsScreen"
    await press(pilot, "enter")  # keep the repeats in the folder names
    assert screen_name(pilot.app) == "CaptionsScreen"
    await press(pilot, "enter")  # skip the optional captions step


def field_text(app: WizardApp) -> str:
    return app.screen.query_one("#field").value


def shown_text(app: WizardApp, selector: str) -> str:
    return str(app.screen.query_one(selector).content)
