"""The wizard driven by Pilot at 80x24: the whole flow, going back, bad values, edit, review jumps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easytrain import answers as answers_file
from easytrain import questions as Q
from easytrain.tui.flow import Outcome
from tests._tui_helpers import (SIZE, answer, field_text, make_workdir, new_app, press, question_key, screen_name,
                                shown_text, start_new, to_question, to_review, type_text)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return make_workdir(tmp_path)


def expected_defaults(workdir: Path) -> dict:
    """The answers file the wizard must write when every default is kept (paths made absolute)."""
    values = Q.applicable_values({"base_model": "builtin:tiny", "architecture": "sd1",
                                  "image_folder": str(workdir / "images")})
    return {"schema_version": 1, **values}


async def test_whole_flow_with_defaults_saves_the_expected_file(workdir):
    app = new_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_review(pilot)
        await press(pilot, "s")
        assert question_key(app) == "save_answers_as"
        assert "Enter keeps answers/shapes.json" in shown_text(app, "#hint")
        await press(pilot, "enter")
        assert screen_name(app) == "DoneScreen"
        await press(pilot, "e")
    saved = workdir / "answers" / "shapes.json"
    assert app.return_value == Outcome("exit", str(saved), "answers/shapes.json")
    data = json.loads(saved.read_text())
    assert data == expected_defaults(workdir)
    assert list(data) == ["schema_version"] + [k for k in Q.KEYS if k in data]  # question order
    assert data["output_folder"] == str(workdir / "output") and data["output_name"] == "shapes"
    answers_file.load(saved)  # the trainer's gate accepts it, paths included


async def test_architecture_is_not_asked_when_detection_is_sure(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, "builtin:tiny")
        assert "Detected: SD1.x" in shown_text(app, "#note")
        await press(pilot, "enter")
        assert question_key(app) == "image_folder"
        assert app.wizard.state.value("architecture") == "sd1"


async def test_going_back_and_changing_the_network_type_drops_the_conv_questions(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_question(pilot, "network_type")
        await press(pilot, "down", "enter")  # LoCon
        assert app.wizard.state.value("network_type") == "LoCon"
        await answer(pilot)  # dim
        await answer(pilot)  # alpha
        assert question_key(app) == "conv_dim"
        assert field_text(app) == "" and "Enter keeps 8" in shown_text(app, "#hint")
        await answer(pilot, "12")
        assert question_key(app) == "conv_alpha"
        assert "Enter keeps 6" in shown_text(app, "#hint")  # follows the typed conv dim
        await press(pilot, "escape")
        assert question_key(app) == "conv_dim" and field_text(app) == "12"  # typed answers come back
        await press(pilot, "escape", "escape", "escape")
        assert question_key(app) == "network_type"
        await press(pilot, "up", "enter")  # LoRA
        await answer(pilot)  # dim
        await answer(pilot)  # alpha
        assert question_key(app) == "unet_lr"
        values = app.wizard.state.values()
        assert "conv_dim" not in values and "conv_alpha" not in values
        assert "conv_dim" not in app.wizard.state.typed
        await press(pilot, "escape")
        assert question_key(app) == "network_alpha"
        await press(pilot, "escape", "escape", "down", "enter")  # LoCon again: the conv questions return
        await to_question(pilot, "conv_dim")
        assert "Enter keeps 8" in shown_text(app, "#hint")


async def test_prodigy_moves_defaults_but_keeps_typed_values(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await to_question(pilot, "unet_lr")
        await answer(pilot, "2e-4")
        assert question_key(app) == "text_encoder_lr"
        for _ in range(5):  # text_encoder_lr -> unet_lr -> alpha -> dim -> network_type -> optimizer
            await press(pilot, "escape")
        assert question_key(app) == "optimizer"
        await press(pilot, "down", "down", "down", "down", "enter")  # Prodigy
        state = app.wizard.state
        assert state.value("optimizer") == "Prodigy"
        assert state.value("unet_lr") == pytest.approx(2e-4)  # typed: kept
        assert state.value("text_encoder_lr") == 1.0  # default: follows
        assert state.value("scheduler") == "constant_with_warmup"
        assert state.value("network_alpha") == 16.0
        await to_question(pilot, "unet_lr")
        assert field_text(app) == "0.0002"


async def test_bad_values_are_refused_with_their_reason(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "x.ckpt")
        assert question_key(app) == "base_model"
        assert "file not found" in shown_text(app, "#error")
        await answer(pilot, "builtin:tiny")
        await answer(pilot, "nowhere")
        assert question_key(app) == "image_folder"
        assert "folder not found" in shown_text(app, "#error")
        await answer(pilot, "images")
        await press(pilot, "enter")  # the scan
        await to_question(pilot, "network_dim")
        await type_text(pilot, "abc")
        assert shown_text(app, "#error") == "must be an integer from 1 to 1024, got 'abc'"  # live, before Enter
        await press(pilot, "enter")
        assert question_key(app) == "network_dim"
        await press(pilot, "backspace", "backspace", "backspace")
        await answer(pilot, "0")
        assert question_key(app) == "network_dim"
        assert "from 1 to 1024" in shown_text(app, "#error")
        await press(pilot, "backspace")
        await answer(pilot, "32")
        assert app.wizard.state.value("network_dim") == 32
        await to_question(pilot, "unet_lr")
        await answer(pilot, "1e-4")
        assert app.wizard.state.value("unet_lr") == pytest.approx(0.0001)
        await answer(pilot, "0.0001")
        assert app.wizard.state.value("text_encoder_lr") == pytest.approx(0.0001)
        await press(pilot, "ctrl+s", "escape")  # Esc on the review: the last question, the advanced gate
        assert question_key(app) == "advanced_settings"
        await press(pilot, "up", "enter")  # yes: the advanced keys become questions
        assert question_key(app) == Q.ADVANCED[0].id
        await answer(pilot, "-1")
        assert "from 0 to 1" in shown_text(app, "#error")
        await answer(pilot, "0.05")
        assert question_key(app) == Q.ADVANCED[1].id
        await press(pilot, "ctrl+s")
        assert app.wizard.state.value("noise_offset") == 0.05
        assert "noise_offset" in [row.key for row in app.screen.view.rows]


async def test_backspace_on_an_empty_field_goes_back(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        assert question_key(app) == "output_folder"
        await press(pilot, "backspace")
        assert question_key(app) == "image_folder" and field_text(app) == "images"


async def test_edit_route_prefills_every_answer(workdir):
    answers = answers_file.defaults(base_model="builtin:tiny", architecture="sd1", image_folder="images",
                                    network_dim=32, output_name="custom", optimizer="Lion",
                                    comment="trigger: shapes")
    path = answers_file.save(answers.replace(), workdir / "answers" / "custom.json")
    path.write_text(path.read_text().replace('"images"', '"../images"'))  # relative to the file
    app = new_app(workdir, route="edit", path=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert question_key(app) == "base_model" and field_text(app) == "builtin:tiny"
        await press(pilot, "enter")
        assert field_text(app) == str(workdir / "images")
        await press(pilot, "enter", "enter")  # folder, scan
        await to_question(pilot, "output_name")
        assert field_text(app) == "custom"
        await to_question(pilot, "optimizer")
        assert app.screen.query_one("#field").highlighted == Q.OPTIMIZERS.index("Lion")
        await to_question(pilot, "network_dim")
        assert field_text(app) == "32"
        await press(pilot, "enter")
        assert field_text(app) == "" and "Enter keeps 16" in shown_text(app, "#hint")  # alpha follows dim
        await to_question(pilot, "comment")
        assert field_text(app) == "trigger: shapes"
        await press(pilot, "ctrl+s", "s")
        assert "answers/custom.json" in shown_text(app, "#hint")
        await press(pilot, "enter", "e")
    data = json.loads(path.read_text())
    assert data["network_dim"] == 32 and data["optimizer"] == "Lion" and data["image_folder"] == str(workdir / "images")


async def test_edit_route_keeps_the_opened_file_in_view(workdir):
    answers = answers_file.defaults(base_model="builtin:tiny", architecture="sd1", image_folder="../images",
                                    output_name="custom")
    path = answers_file.save(answers.replace(), workdir / "saved" / "mine.json")
    for new_name, proposed in (("", "saved/mine.json"), ("custom2", "saved/custom2.json")):
        app = new_app(workdir, route="edit", path=str(path))
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert question_key(app) == "base_model" and field_text(app) == "builtin:tiny"
            assert shown_text(app, "#hint").startswith("Enter keeps the answer shown")
            if new_name:
                await to_question(pilot, "output_name")
                await answer(pilot, new_name)
            await press(pilot, "ctrl+s", "s")
            assert question_key(app) == Q.SAVE_AS.id and f"Enter keeps {proposed}" in shown_text(app, "#hint")


async def test_steps_bar_fits_two_lines_at_80_columns(workdir):
    from _model_helpers import write_fake_checkpoint

    model = write_fake_checkpoint(workdir / "sd15.safetensors", "sd1")  # the tiny model hears no steps warning
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot, base_model=str(model))
        bar = app.screen.query_one("#steps")
        count, warning = str(bar.query_one("#steps-count").content), str(bar.query_one("#steps-warning").content)
        assert count == "16 images x repeats = 80 / batch 2 = 40 steps x 10 epochs = 400 steps"
        assert warning == "! 400 steps is well below the usual 1000-3500: more repeats or epochs"
        assert bar.region.height == 2 and len(warning) <= bar.content_region.width


async def test_review_row_jumps_to_its_question_and_comes_back(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await start_new(pilot)
        await press(pilot, "ctrl+s")
        assert screen_name(app) == "ReviewScreen"
        app.screen.select_key("network_dim")
        await press(pilot, "enter")
        assert question_key(app) == "network_dim"
        await answer(pilot, "8")
        assert screen_name(app) == "ReviewScreen"
        rows = app.screen.query_one("#rows")
        assert "8" in str(rows.get_option("network_dim").prompt)
        assert "4" in str(rows.get_option("network_alpha").prompt)  # the default followed the new dim
        assert app.wizard.state.value("network_alpha") == 4.0
        app.screen.select_key("network_type")
        await press(pilot, "enter", "escape")  # Esc on a jumped-to question returns unchanged
        assert screen_name(app) == "ReviewScreen"
        assert app.wizard.state.value("network_type") == "LoRA"


async def test_review_names_missing_answers_and_save_asks_for_them(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await press(pilot, "ctrl+s")
        assert screen_name(app) == "ReviewScreen"
        assert "base_model: still needs an answer" in shown_text(app, "#summary")
        await press(pilot, "s")
        assert question_key(app) == "base_model"


async def test_ctrl_q_asks_before_quitting(workdir):
    app = new_app(workdir)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "enter", "ctrl+q")
        assert screen_name(app) == "ConfirmScreen"
        await press(pilot, "n")
        assert question_key(app) == "base_model"
        await press(pilot, "escape")  # back from the first question: the start screen
        assert screen_name(app) == "StartScreen"
        await press(pilot, "ctrl+q")  # nothing answered: nothing to lose, no question
    assert app.return_value == Outcome("quit")


async def test_train_route_validates_reviews_and_starts(workdir):
    path = answers_file.save(answers_file.defaults(base_model="builtin:tiny", image_folder=str(workdir / "images"),
                                                   output_name="ready"), workdir / "ready.json")
    app = new_app(workdir, route="train")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await answer(pilot, "nothing.json")
        assert "file not found" in shown_text(app, "#error")
        await answer(pilot, "ready.json")
        assert screen_name(app) == "ReviewScreen"
        await press(pilot, "s")
        assert screen_name(app) == "DoneScreen"  # unchanged: the file is the hand-off already
        await press(pilot, "t")
    assert app.return_value == Outcome("train", str(path), "ready.json")


async def test_train_route_refuses_an_invalid_file_with_its_problems(workdir):
    (workdir / "bad.json").write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny",
                                                  "image_folder": "images", "network_dim": "abc"}))
    app = new_app(workdir, route="train")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "bad.json")
        assert question_key(app) == "answers_file"
        assert "network_dim: must be an integer" in shown_text(app, "#error")


async def test_queue_route_lists_files_and_whether_they_validate(workdir):
    queue = workdir / "queue"
    answers_file.save(answers_file.defaults(base_model="builtin:tiny", image_folder=str(workdir / "images")),
                      queue / "a_good.json")
    (queue / "b_bad.json").write_text("{not json")
    app = new_app(workdir, route="queue")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "queue")
        assert screen_name(app) == "QueueScreen"
        files = [str(w.content) for w in app.screen.query(".queue-file")]
        assert files[0] == "a_good.json: ok"
        assert files[1].startswith("b_bad.json: invalid\n  - ")
        await press(pilot, "enter")
    assert app.return_value == Outcome("queue", str(queue), "queue")


async def test_queue_screen_shows_every_problem_of_an_invalid_file(workdir):
    queue = workdir / "queue"
    queue.mkdir()
    (queue / "bad.json").write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny",
                                                "image_folder": "nowhere/at/all/" + "deep/" * 12,
                                                "network_dim": "abc", "netwrok_alpha": 3}))
    app = new_app(workdir, route="queue")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "queue")
        entry = app.screen.query_one(".queue-file")
        text = str(entry.content)
        assert text.count("\n  - ") == 3 and "network_dim" in text and "netwrok_alpha" in text
        assert "more)" not in text and text.endswith("got 'abc'")   # nothing left out
        assert entry.region.height > 4                               # long lines wrap instead of being cut


async def test_browser_picks_a_folder_without_typing(workdir):
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "builtin:tiny")
        await press(pilot, "f2")
        assert screen_name(app) == "PathBrowser"
        tree = app.screen.query_one("#tree")
        await pilot.pause(0.3)
        labels = [str(node.label) for node in tree.root.children]
        assert labels == ["images"]
        tree.move_cursor(tree.root.children[0])
        await press(pilot, "enter")
        assert question_key(app) == "image_folder" and field_text(app) == "images"


async def test_train_route_saves_again_after_a_change(workdir):
    path = answers_file.save(answers_file.defaults(base_model="builtin:tiny", image_folder=str(workdir / "images"),
                                                   output_name="ready"), workdir / "ready.json")
    app = new_app(workdir, route="train", path="ready.json")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert screen_name(app) == "ReviewScreen"
        app.screen.select_key("epochs")
        await press(pilot, "enter")
        await answer(pilot, "3")
        await press(pilot, "s")
        assert question_key(app) == "save_answers_as" and "Enter keeps ready.json" in shown_text(app, "#hint")
        await press(pilot, "enter", "t")
    assert app.return_value == Outcome("train", str(path), "ready.json")
    assert json.loads(path.read_text())["epochs"] == 3


async def test_scan_screen_names_problems_and_refuses_an_empty_dataset(workdir):
    (workdir / "images" / "no_prefix").mkdir()
    (workdir / "empty").mkdir()
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "builtin:tiny")
        await answer(pilot, "images")
        assert screen_name(app) == "ScanScreen"
        problems = shown_text(app, "#scan-problems")
        assert problems.startswith("! images/no_prefix:")  # relative to the working folder
        await press(pilot, "escape")
        assert question_key(app) == "image_folder"
        await answer(pilot, "empty")
        assert screen_name(app) == "ScanScreen"
        enter = [b.binding.description for b in app.screen.active_bindings.values()
                 if b.binding.key == "enter" and b.enabled]
        assert enter == ["Choose another folder"]     # not "Continue", which would do nothing (issue 26)
        await press(pilot, "enter")
        assert question_key(app) == "image_folder"  # nothing to train on: Enter goes back to choose again


def diffusers_folder(root: Path, cross: int, with_scheduler: bool) -> Path:
    """Just the configs detection reads (model_index.json, unet and scheduler configs)."""
    (root / "unet").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (root / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": cross}))
    if with_scheduler:
        (root / "scheduler").mkdir()
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "epsilon"}))
    return root


async def test_architecture_is_asked_when_detection_is_unsure(workdir):
    diffusers_folder(workdir / "sd2model", 1024, with_scheduler=False)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await answer(pilot, "sd2model")
        assert question_key(app) == "architecture"
        field = app.screen.query_one("#field")
        assert field.highlighted == [v for v, _ in Q.BY_ID["architecture"].choices].index("sd2")  # the guess
        await press(pilot, "down", "enter")  # SD2.x 768 (v-prediction)
        assert question_key(app) == "image_folder"
        assert app.wizard.state.value("architecture") == "sd2-v"
        assert app.wizard.state.value("resolution") == 768  # the default follows the architecture
        await press(pilot, "escape", "escape")
        assert question_key(app) == "base_model" and field_text(app) == "sd2model"
        await answer(pilot, "builtin:tiny")  # a sure model: the question and its typed answer go away
        assert question_key(app) == "image_folder"
        assert app.wizard.state.value("architecture") == "sd1"


async def test_a_noobai_v_pred_file_gets_sdxl_v_and_the_sdxl_defaults(workdir):
    """The v_pred/ztsnr markers show in the note and the saved file keeps v-prediction; SDXL's defaults apply."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    import torch

    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    source = tiny_sdxl_paths().single_file
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
    save_file(load_file(str(source)) | {"v_pred": torch.zeros(0), "ztsnr": torch.zeros(0)},
              str(workdir / "noob.safetensors"), metadata=metadata)
    app = new_app(workdir, route="new")
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, "noob.safetensors")
        note = shown_text(app, "#note")
        assert "Detected: SDXL v-prediction" in note and "zero terminal SNR" in note
        await press(pilot, "enter")
        await answer(pilot, "images")
        await press(pilot, "enter", "enter", "enter")  # scan, repeats, captions
        await to_question(pilot, "resolution")
        assert app.wizard.state.default_for(Q.BY_ID["resolution"]) == 1024
        await to_question(pilot, "train_parts")
        assert app.wizard.state.value("shuffle_captions") is False
        assert app.wizard.state.value("train_parts") == "unet_only"
        await to_review(pilot)
        await press(pilot, "s", "enter")
        assert screen_name(app) == "DoneScreen"
        await press(pilot, "e")
    saved = answers_file.load(workdir / "answers" / "shapes.json")
    assert (saved.architecture, saved.resolution, saved.max_bucket_reso) == ("sdxl-v", 1024, 2048)
