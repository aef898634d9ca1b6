"""The wizard's suggested-repeats step, driven by Pilot at 80x24 on a copy of the demo dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easytrain import machine
from easytrain.errors import UserError
from easytrain.tools.repeats_rename import apply_renames, plan_renames, undo_renames
from tests._tui_helpers import SIZE, answer, make_workdir, new_app, press, question_key, screen_name, shown_text
from tests.test_tui_captions import tree_hashes


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(machine, "best_mixed_precision", lambda: "fp16")
    return make_workdir(tmp_path)


async def to_repeats(pilot) -> None:
    await answer(pilot, "builtin:tiny")
    await answer(pilot, "images")
    assert screen_name(pilot.app) == "ScanScreen"
    await press(pilot, "enter")
    assert screen_name(pilot.app) == "RepeatsScreen"


def table_rows(app) -> list[list[str]]:
    table = app.screen.query_one("#subsets")
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_accepting_writes_the_repeats_into_the_answers_and_renames_nothing(workdir):
    before = tree_hashes(workdir)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_repeats(pilot)
        assert table_rows(app) == [["5_shapes", "16", "5", "12"]]
        steps = shown_text(app, "#repeats-steps")
        assert "= 40 steps x 10 epochs = 400 steps" in steps
        assert "192" in steps and "batch 2 = 96 steps x 11 epochs = 1056 steps" in steps
        await press(pilot, "a")
        assert screen_name(app) == "CaptionsScreen"
        state = app.wizard.state
        assert state.value("folder_repeats") == {"5_shapes": 12} and state.value("epochs") == 11
        assert "1056 steps" in app.wizard.steps_line().text  # the steps bar counts the override
        await press(pilot, "enter")
        await press(pilot, "ctrl+s", "s")
        await answer(pilot, "answers/mine.json")
        await press(pilot, "e")
    data = json.loads((workdir / "answers" / "mine.json").read_text())
    assert data["folder_repeats"] == {"5_shapes": 12} and data["epochs"] == 11
    after = tree_hashes(workdir)
    assert {k: v for k, v in after.items() if k != "answers/mine.json"} == before  # nothing else on disk


async def test_rename_is_asked_first_then_undone_byte_for_byte(workdir):
    images = workdir / "images"
    before = tree_hashes(images)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_repeats(pilot)
        await press(pilot, "r")
        assert screen_name(app) == "ConfirmScreen"
        assert "5_shapes -> 12_shapes" in str(app.screen.query_one("#confirm-question").content)
        await press(pilot, "n")  # not now: nothing changes
        assert screen_name(app) == "RepeatsScreen" and (images / "5_shapes").is_dir()
        await press(pilot, "r", "y")
        assert (images / "12_shapes").is_dir() and not (images / "5_shapes").exists()
        assert screen_name(app) == "RepeatsScreen"  # shown again for the renamed folder
        assert table_rows(app) == [["12_shapes", "16", "12", "12"]]
        assert "Ctrl+Z" in shown_text(app, "#hint")
        await press(pilot, "ctrl+z")
        assert (images / "5_shapes").is_dir() and not (images / "12_shapes").exists()
        assert table_rows(app) == [["5_shapes", "16", "5", "12"]]
        await press(pilot, "enter")  # keep mine
        assert screen_name(app) == "CaptionsScreen"
        assert app.wizard.state.value("folder_repeats") == {}
    assert {k: v for k, v in tree_hashes(images).items() if not k.startswith(".easytrain")} == before


async def test_esc_goes_back_to_the_scan(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_repeats(pilot)
        await press(pilot, "escape")
        assert screen_name(app) == "ScanScreen"
        await press(pilot, "escape")
        assert question_key(app) == "image_folder"


def test_a_rename_onto_an_existing_folder_changes_nothing(tmp_path):
    root = make_workdir(tmp_path) / "images"
    (root / "12_shapes").mkdir()
    before = tree_hashes(root)
    with pytest.raises(UserError, match="12_shapes: already exists"):
        plan_renames(root, {"5_shapes": 12})
    with pytest.raises(UserError, match="not an N_name folder"):
        plan_renames(root, {"7_gone": 2})
    assert tree_hashes(root) == before and not (root / ".easytrain").exists()


def test_rename_and_undo_with_the_dataset_tools_record(tmp_path):
    root = make_workdir(tmp_path) / "images"
    before = tree_hashes(root)
    renames = plan_renames(root, {"5_shapes": 3})
    assert [r.line() for r in renames] == ["5_shapes -> 3_shapes"]
    assert apply_renames(root, renames) is not None
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["3_shapes"]
    result = undo_renames(root)
    assert result.restored == (root / "5_shapes",)
    assert {k: v for k, v in tree_hashes(root).items() if not k.startswith(".easytrain")} == before


def test_repeats_screen_snapshot(snap_compare, workdir):
    from tests._data_helpers import make_subset

    make_subset(workdir / "images", "1_outfit", 40, size=(64, 64))

    async def run_before(pilot):
        await to_repeats(pilot)
    assert snap_compare(new_app(workdir, route="new"), run_before=run_before)
