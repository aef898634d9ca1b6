"""The wizard's optional captions step, driven by Pilot at 80x24 on a copy of the demo dataset."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from easytrain import machine
from easytrain.errors import UserError
from easytrain.tools import caption_edits
from easytrain.tools.tag_ops import TagEdits
from easytrain.tui.captions import CaptionStep, chosen_edits, count_tags
from tests._tui_helpers import (SIZE, answer, make_workdir, new_app, press, question_key, screen_name, shown_text,
                                type_text)

FOLDER = Path("images") / "5_shapes"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(machine, "best_mixed_precision", lambda: "fp16")
    return make_workdir(tmp_path)


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (the undo folder included) by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def dataset_hashes(root: Path) -> dict[str, str]:
    """The dataset's own files: the tools' undo folder left out."""
    return {k: v for k, v in tree_hashes(root).items() if ".easytrain" not in Path(k).parts}


def first_lines(folder: Path) -> list[str]:
    return [p.read_text(encoding="utf-8").splitlines()[0] for p in sorted(folder.glob("*.txt"))]


async def to_captions(pilot) -> None:
    await answer(pilot, "builtin:tiny")
    await answer(pilot, "images")
    assert screen_name(pilot.app) == "ScanScreen"
    await press(pilot, "enter", "enter")  # the scan, the suggested repeats (kept)
    assert screen_name(pilot.app) == "CaptionsScreen"


def tag_rows(app) -> list[str]:
    tags = app.screen.query_one("#tags")
    return [str(tags.get_option_at_index(i).prompt) for i in range(tags.option_count)]


async def test_top_tags_show_the_most_frequent_tag_with_its_count(workdir):
    captions = first_lines(workdir / FOLDER)
    trigger_count = sum("shapes" in line.split(", ") for line in captions)
    assert trigger_count == len(captions) == 16
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_captions(pilot)
        rows = tag_rows(app)
        assert rows[0] == f"{trigger_count:>5}  shapes"  # ties sort by name: shapes before simple background
        assert rows[1] == "   16  simple background"
        assert len(rows) == 14  # every distinct tag of the demo (fewer than the 15 shown at most)
        assert "16 caption files, 14 different tags" in shown_text(app, "#prompt")
        assert "Nothing chosen yet" in shown_text(app, "#preview")


async def test_skipping_changes_nothing_on_disk(workdir):
    before = tree_hashes(workdir)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_captions(pilot)
        await press(pilot, "tab")  # from the tag list to the trigger field
        await type_text(pilot, "mychar")  # a previewed edit, never applied
        assert "16 of 16 caption files would change" in shown_text(app, "#preview")
        await press(pilot, "enter")
        assert screen_name(app) == "ConfirmScreen"  # an unapplied edit: asked before going on
        await press(pilot, "n")
        assert screen_name(app) == "CaptionsScreen"
        await press(pilot, "enter", "y")
        assert question_key(app) == "output_folder"
        await press(pilot, "escape")  # Esc goes back to the previous question
        assert question_key(app) == "image_folder"
    assert tree_hashes(workdir) == before  # byte for byte, and no new file (no undo folder either)
    assert not (workdir / "images" / ".easytrain").exists()


async def test_trigger_apply_writes_it_first_and_undo_restores_every_byte(workdir):
    before = dataset_hashes(workdir)
    original = first_lines(workdir / FOLDER)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_captions(pilot)
        assert app.focused is app.screen.query_one("#tags")  # Space acts where the header says it does
        await press(pilot, "tab")
        await type_text(pilot, "mychar")
        preview = shown_text(app, "#preview")
        assert "before: shapes, red circle, simple background" in preview
        assert "after:  mychar, shapes, red circle, simple background" in preview
        await press(pilot, "ctrl+a")
        assert "Applied to 16 caption files" in shown_text(app, "#outcome")
        lines = first_lines(workdir / FOLDER)
        assert len(lines) == 16 and all(line.split(", ")[0] == "mychar" for line in lines)
        assert lines == [f"mychar, {line}" for line in original]
        assert tag_rows(app)[0] == "   16  mychar"  # the list shows the captions as they are now
        assert app.screen.query_one("#trigger").value == ""  # the fields start over
        await press(pilot, "ctrl+z")
        assert "Undone: 16 caption files put back" in shown_text(app, "#outcome")
        assert dataset_hashes(workdir) == before
        await press(pilot, "ctrl+z")  # nothing more of ours to undo
        assert "nothing to undo" in shown_text(app, "#outcome")
        await press(pilot, "enter")
        assert question_key(app) == "output_folder"  # nothing pending: no question asked
    assert dataset_hashes(workdir) == before


async def test_marked_tags_and_underscores_then_undo_after_coming_back(workdir):
    folder = workdir / FOLDER
    (folder / "shape_00.txt").write_text("shapes, red circle, simple background, long_hair\n", encoding="utf-8")
    before = dataset_hashes(workdir)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_captions(pilot)
        tags, underscores = app.screen.query_one("#tags"), app.screen.query_one("#underscores")
        assert {line.text[:3] for line in map(tags.render_line, range(3))} == {"▐ ▌"}  # nothing ticked
        assert underscores.render().plain.startswith("▐ ▌")
        await press(pilot, "tab", "tab", "tab", "space")  # list -> trigger -> remove -> underscores: ticked
        assert underscores.render().plain.startswith("▐X▌")  # ticked differs from unticked without colour
        await press(pilot, "shift+tab")
        await type_text(pilot, "red circle")  # typed removal
        await press(pilot, "tab", "tab", "down", "space")  # the list: mark "simple background"
        assert tags.selected == ["simple background"]
        assert [tags.render_line(y).text[:3] for y in range(3)] == ["▐ ▌", "▐X▌", "▐ ▌"]
        assert "16 of 16 caption files would change" in shown_text(app, "#preview")
        await press(pilot, "ctrl+a")
        lines = first_lines(folder)
        assert lines[0] == "shapes, long hair"
        assert all(line in ("shapes, long hair", "shapes") or line.startswith("shapes, ") for line in lines)
        assert not any("simple background" in line or "red circle" in line for line in lines)
        await press(pilot, "enter")
        assert question_key(app) == "output_folder"
        await press(pilot, "escape", "enter")  # back to the folder; Enter keeps it: the scan again
        assert screen_name(app) == "ScanScreen"
        await press(pilot, "enter", "enter")  # the scan, the suggested repeats (kept)
        assert screen_name(app) == "CaptionsScreen"
        await press(pilot, "ctrl+z")  # what this run applied can still be taken back
        assert dataset_hashes(workdir) == before
        await press(pilot, "escape")
        assert screen_name(app) == "ScanScreen"  # Esc goes back one screen
        await press(pilot, "escape")
        assert question_key(app) == "image_folder"


def test_undo_leaves_a_change_made_elsewhere_alone(tmp_path):
    root = make_workdir(tmp_path) / "images"
    step = CaptionStep(root.resolve())
    step.apply(step.plan(chosen_edits("mine", (), "", False)))
    caption_edits.apply(caption_edits.plan_edits(root, TagEdits(remove=("shapes",))))  # e.g. from the CLI
    with pytest.raises(UserError, match="not made here"):
        step.undo()
    assert first_lines(root / "5_shapes")[0] == "mine, red circle, simple background"
    with pytest.raises(UserError, match="without commas"):
        chosen_edits("a, b", (), "", False)
    assert step.plan(chosen_edits(" ", (), " , ", False)) is None  # nothing chosen
    assert count_tags(root).top[0] == ("mine", 16)


def test_captions_screen_snapshot(snap_compare, workdir):
    async def run_before(pilot):
        await to_captions(pilot)
        await press(pilot, "tab")
        await type_text(pilot, "mychar")
    assert snap_compare(new_app(workdir, route="new"), run_before=run_before)


async def test_the_trigger_check_follows_what_is_typed(workdir):
    before = tree_hashes(workdir)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await to_captions(pilot)
        assert shown_text(app, "#preview").startswith(  # nothing typed: the trigger the captions start with
            "trigger 'shapes': 1 CLIP token (shapes)\n  first tag of every caption (16)\nNothing chosen yet")
        await press(pilot, "tab")  # from the tag list to the trigger field
        await type_text(pilot, "cat")
        preview = shown_text(app, "#preview")
        assert "trigger 'cat': 1 CLIP token (cat)" in preview
        assert "a common word CLIP already knows" in preview and "rarer spellings: c4t" in preview
        assert "in none of the 16 captions yet" in preview
        await press(pilot, "backspace", "backspace", "backspace")
        await type_text(pilot, "!!")
        assert shown_text(app, "#preview") == ("trigger tag '!!': only punctuation; a trigger needs letters or "
                                               "digits (e.g. mychar)")
        await press(pilot, "ctrl+a")  # nothing to apply
        await press(pilot, "backspace", "backspace")
        await type_text(pilot, "shapes")
        assert "first tag of every caption (16)" in shown_text(app, "#preview")
    assert tree_hashes(workdir) == before
