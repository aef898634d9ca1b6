"""Issue 26 in the wizard, driven by Pilot at 80x24: the review, the scan, Ctrl+Q, Ctrl+O and the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from easytrain import machine
from easytrain.tui.flow import Outcome
from tests._tui_helpers import SIZE, answer, make_workdir, new_app, press, question_key, screen_name, shown_text, \
    start_new, to_question, to_review


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return make_workdir(tmp_path)


def review_rows(app) -> dict[str, str]:
    """The review's rows as shown: key -> the whole row's text."""
    rows = app.screen.query_one("#rows")
    found = {}
    for index in range(rows.option_count):
        option = rows.get_option_at_index(index)
        if option.id:
            found[option.id] = str(option.prompt.plain if hasattr(option.prompt, "plain") else option.prompt)
    return found


# ---- 6. the review screen ------------------------------------------------------------------------------


async def test_ctrl_s_before_answering_lists_the_rows_that_need_an_answer(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "ctrl+s")
        assert screen_name(app) == "ReviewScreen"
        summary = shown_text(app, "#summary")
        assert "! base_model: still needs an answer (Enter on its row)" in summary
        rows = review_rows(app)
        assert "base_model" in rows and "image_folder" in rows
        assert "(needs an answer: Enter)" in rows["base_model"]
        assert app.screen.query_one("#rows").highlighted_option.id == "base_model"
        await press(pilot, "enter")
        assert question_key(app) == "base_model"   # Enter on its row asks it


async def test_the_header_does_not_claim_a_detection_without_a_model(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "ctrl+s")
        summary = shown_text(app, "#summary")
        assert summary.splitlines()[0] == "Architecture: read from the base model once you give one"
        assert "detection was not sure" not in summary


async def test_long_keys_keep_a_space_before_their_values_at_80_columns(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_question(pilot, "advanced_settings")
        await press(pilot, "up", "enter")  # yes: the advanced keys become rows
        await to_review(pilot)
        rows = review_rows(app)
        for key in ("gradient_accumulation_steps", "scale_v_pred_loss_like_noise_pred", "caption_dropout_every_n_epochs"):
            text = rows[key]
            assert f"{key} " in text and len(text.rstrip()) <= SIZE[0] - 4, text
        assert "gradient_accumulation_steps1" not in "".join(rows.values())
        assert rows["gradient_accumulation_steps"].split()[:2] == ["gradient_accumulation_steps", "1"]


# ---- 7. the steps line says why odd-sized buckets round up ------------------------------------------------


def test_the_steps_bar_explains_a_rounded_up_epoch(workdir):
    from easytrain.tui.preview import StepsPreview

    values = {"base_model": "builtin:tiny", "image_folder": "images", "resolution": 512, "batch_size": 3,
              "epochs": 100}
    line = StepsPreview().line(values, workdir)
    assert line.text == "16 images x repeats = 80 / batch 3 = 28 steps x 100 epochs = 2800 steps"
    assert line.warning == ("28 steps per epoch, not 27: each batch holds pictures of one shape (bucket), so a "
                            "bucket that does not fill its last batch still takes a step")
    even = StepsPreview().line({**values, "batch_size": 4}, workdir)
    assert even.warning is None


# ---- 11. the tiny model on a CPU -------------------------------------------------------------------------


async def test_the_tiny_model_gets_no_full_size_figures(workdir):
    assert machine.gpu_info() is None   # EASYTRAIN_GPU_MEMORY=none in the tests: a CPU machine
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_question(pilot, "network_dim")
        assert shown_text(app, "#note").startswith("The 18 MB above is for a full-size SD1.5 model; easytrain's "
                                                   "tiny test model makes a file of well under 1 MB")
        await to_review(pilot)
        summary = shown_text(app, "#summary")
        assert "multi-GPU" not in summary and "GPU memory" not in summary
        assert "Effective batch: 2 images per step" in summary
        assert "steps is well below the usual" not in summary
        assert "well below" not in str(app.screen.query_one("#steps-warning").content)


# ---- 12. the wizard's small stumbles ---------------------------------------------------------------------


async def test_ctrl_q_on_an_untouched_start_screen_quits_at_once(workdir):
    app = new_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        assert screen_name(app) == "StartScreen"
        await press(pilot, "ctrl+q")
    assert app.return_value == Outcome("quit")


async def test_ctrl_q_after_an_answer_still_asks(workdir):
    app = new_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "enter")
        await answer(pilot, "builtin:tiny")
        await press(pilot, "ctrl+q")
        assert screen_name(app) == "ConfirmScreen"
        assert "Answers that are not saved are lost" in str(app.screen.query_one("#confirm-question").content)


async def test_ctrl_o_opens_beside_the_chosen_dataset(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    data = make_workdir(tmp_path / "project")            # project/images/5_shapes, outside the working folder
    app = new_app(checkout, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "builtin:tiny")
        await answer(pilot, str(data / "images"))
        await press(pilot, "enter", "enter", "enter")     # scan, repeats, captions
        await to_question(pilot, "sample_images")
        await press(pilot, "up", "enter")  # yes
        assert question_key(app) == "sample_prompts"
        await press(pilot, "ctrl+o")
        assert screen_name(app) == "PathBrowser"
        assert app.screen.root == data


def test_one_is_singular_in_the_reports(tmp_path):
    from PIL import Image

    from easytrain.tools.caption_report import caption_report, format_report as caption_lines
    from easytrain.tools.image_report import format_report, image_report

    folder = tmp_path / "data" / "1_solo"
    folder.mkdir(parents=True)
    Image.new("RGB", (96, 96), (200, 10, 10)).save(folder / "a.png")
    Image.new("RGB", (96, 96), (200, 10, 10)).save(folder / "b.png")
    (folder / "a.txt").write_text("solo\n")
    images = "\n".join(format_report(image_report(tmp_path / "data", resolution=512, workers=1)))
    assert "Exact duplicates (1 group):" in images and "1 groups" not in images
    captions = "\n".join(caption_lines(caption_report(tmp_path / "data", ".txt")))
    assert "2 images, 1 caption file, 1 image without a caption, 1 different tag" in captions
    assert "1 captions" not in captions and "1 images" not in captions


def test_the_step_count_and_plan_say_1_step(tmp_path, demo_images):
    import json

    from easytrain import answers as answers_file
    from easytrain.commands.check import plan_lines
    from easytrain.progress.lines import event_line
    from easytrain.progress.state import RunState
    from easytrain.train import events as ev

    (tmp_path / "a.json").write_text(json.dumps({
        "schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images", "resolution": 128,
        "batch_size": 4, "length_by": "steps", "max_steps": 1, "warmup_ratio": 0.0}))
    from easytrain.plan import TrainPlan

    text = "\n".join(plan_lines(TrainPlan.from_answers(answers_file.load(tmp_path / "a.json"))))
    assert "warmup: 0 steps" in text and "max 1 step," in text
    line = event_line(ev.RunStarted("x", 1, 1, 1, 1, 1, "cpu", "/o"), RunState())
    assert line == "training x on cpu: 1 step (1 epoch x 1 step, batch 1, 1 image per epoch)"


def test_a_group_of_near_copies_wraps_one_name_a_line():
    from easytrain.tools.image_report import group_text

    names = [f"10_character_with_a_long_name/picture_number_{i:03d}_final_version.png" for i in range(3)]
    lines = group_text(names)
    assert lines == ["    " + names[0]] + [f"      = {name}" for name in names[1:]]
    assert all(len(line) <= 80 for line in lines)
    assert group_text(["1_a/a.png", "1_a/b.png"]) == ["    1_a/a.png  =  1_a/b.png"]


def test_sighup_does_not_offer_a_second_ctrl_c():
    import signal

    from easytrain.commands.stop_signals import stop_on_signals
    from easytrain.train.control import TrainControl

    for signum, again in ((signal.SIGHUP, False), (signal.SIGTERM, False), (signal.SIGINT, True)):
        said: list[str] = []
        with stop_on_signals(TrainControl(), say=said.append):
            signal.raise_signal(signum)
        assert said and ("Ctrl+C again" in said[0]) == again, said


def test_the_plan_wraps_to_the_terminal(tmp_path, demo_images, monkeypatch, capsys):
    import io
    import json
    import sys

    from easytrain.commands.check import run_check

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    (tmp_path / "a.json").write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny",
                                                 "image_folder": "images", "comment": "x"}))
    monkeypatch.setenv("COLUMNS", "60")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    run_check(str(tmp_path / "a.json"))
    lines = terminal.getvalue().splitlines()
    too_long = [line for line in lines[:-1] if len(line) > 60 and " " in line.strip()]  # a long path is one word
    assert lines and not too_long, too_long
    steps = next(i for i, line in enumerate(lines) if line.startswith("  steps: "))
    assert lines[steps + 1].startswith("      ")           # the steps line goes on, indented under itself
