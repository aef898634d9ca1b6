"""Pictures of the wizard at 80x24: one per widget kind, the scan and the review.

Deterministic by construction: a fixed working folder (paths shown relative
to it), no GPU question (mixed precision's default is pinned), a steady cursor.
Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from easytrain import machine
from tests._tui_helpers import answer, fill, make_workdir, new_app, press, start_new, to_question


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(machine, "best_mixed_precision", lambda: "fp16")
    return make_workdir(tmp_path)


def at_question(key: str, text: str = ""):
    """A run_before that walks the new route to ``key`` keeping defaults, then fills ``text``."""
    async def run_before(pilot) -> None:
        await start_new(pilot)
        await to_question(pilot, key)
        if text:
            await fill(pilot, text)
    return run_before


def test_start_screen(snap_compare, workdir):
    assert snap_compare(new_app(workdir))


def test_model_path_question_shows_the_detection(snap_compare, workdir):
    async def run_before(pilot):
        await fill(pilot, "builtin:tiny")
    assert snap_compare(new_app(workdir, route="new"), run_before=run_before)


def test_folder_question_with_a_refused_value(snap_compare, workdir):
    async def run_before(pilot):
        await answer(pilot, "builtin:tiny")
        await answer(pilot, "no_such_folder")
    assert snap_compare(new_app(workdir, route="new"), run_before=run_before)


def test_file_question(snap_compare, workdir):
    assert snap_compare(new_app(workdir, route="train"))


def test_scan_screen(snap_compare, workdir):
    async def run_before(pilot):
        await answer(pilot, "builtin:tiny")
        await answer(pilot, "images")
    assert snap_compare(new_app(workdir, route="new"), run_before=run_before)


def test_text_question(snap_compare, workdir):
    assert snap_compare(new_app(workdir, route="new"), run_before=at_question("output_name"))


def test_yes_no_question(snap_compare, workdir):
    assert snap_compare(new_app(workdir, route="new"), run_before=at_question("realistic_model"))


def test_choice_question(snap_compare, workdir):
    assert snap_compare(new_app(workdir, route="new"), run_before=at_question("optimizer"))


def test_int_question_with_live_error(snap_compare, workdir):
    assert snap_compare(new_app(workdir, route="new"), run_before=at_question("network_dim", "2000"))


def test_float_question(snap_compare, workdir):
    assert snap_compare(new_app(workdir, route="new"), run_before=at_question("network_alpha"))


def test_review_screen(snap_compare, workdir):
    async def run_before(pilot):
        await start_new(pilot)
        await press(pilot, "ctrl+s")
    assert snap_compare(new_app(workdir, route="new"), run_before=run_before)
