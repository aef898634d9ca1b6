"""The wizard's preset route, driven by Pilot at 80x24: a preset fills the answers and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easytrain import machine
from easytrain import questions as Q
from tests._tui_helpers import (SIZE, answer, make_workdir, new_app, press, question_key, screen_name, shown_text,
                                to_question)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(machine, "best_mixed_precision", lambda: "fp16")
    return make_workdir(tmp_path)


async def test_the_prodigy_preset_fills_the_answers_and_the_file(workdir):
    app = new_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await press(pilot, "down", "enter")  # the second route: from a preset
        assert screen_name(app) == "PresetScreen"
        options = app.screen.query_one("#field")
        assert [options.get_option_at_index(i).id for i in range(options.option_count)] == \
            ["character", "flux_character", "outfit", "prodigy", "style"]
        await press(pilot, "down", "down", "down", "enter")
        assert question_key(app) == "base_model"
        await answer(pilot, "builtin:tiny")
        await answer(pilot, "images")
        await press(pilot, "enter", "enter", "enter")  # the scan, the repeats kept, no caption edits
        await to_question(pilot, "optimizer")
        assert app.screen.query_one("#field").highlighted == Q.OPTIMIZERS.index("Prodigy")
        assert shown_text(app, "#note") == "From the prodigy preset."
        await to_question(pilot, "unet_lr")
        assert "Enter keeps 1" in shown_text(app, "#hint")
        await press(pilot, "ctrl+s")
        assert screen_name(app) == "ReviewScreen"
        origins = {row.key: row.origin for row in app.screen.view.rows}
        assert origins["optimizer"] == "preset prodigy" and origins["network_alpha"] == "default"
        await press(pilot, "s")
        await answer(pilot, "answers/p.json")
        await press(pilot, "e")
    data = json.loads((workdir / "answers" / "p.json").read_text())
    assert data["optimizer"] == "Prodigy" and data["network_alpha"] == data["network_dim"] == 16
    assert data["optimizer_args"] == Q.PRODIGY_ARGS and data["scheduler"] == "constant_with_warmup"


async def test_esc_on_the_preset_list_goes_back_to_the_start(workdir):
    app = new_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await press(pilot, "down", "enter")
        assert screen_name(app) == "PresetScreen"
        await press(pilot, "escape")
        assert screen_name(app) == "StartScreen"


def test_preset_screen_snapshot(snap_compare, workdir):
    async def run_before(pilot):
        await pilot.pause()
        await press(pilot, "down", "enter")
    assert snap_compare(new_app(workdir), run_before=run_before)


async def test_a_preset_edited_into_nonsense_is_named_and_nothing_changes(workdir, monkeypatch):
    from easytrain import presets

    folder = workdir / "presets"
    folder.mkdir()
    broken = folder / "mine.json"
    broken.write_text('{"schema_version": 1, "network_dim": "huge"}')
    monkeypatch.setattr(presets, "PRESET_DIR", folder)
    app = new_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await press(pilot, "down", "enter")
        assert screen_name(app) == "StartScreen"  # no preset list with a broken file in it
        messages = [n.message for n in app._notifications]
        assert any(str(broken) in m and "network_dim: must be an integer from 1 to 1024, got 'huge'" in m
                   for m in messages), messages
    assert broken.read_text() == '{"schema_version": 1, "network_dim": "huge"}'
