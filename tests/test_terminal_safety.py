"""Captions, file names and values never reach the terminal as raw control characters."""

from __future__ import annotations

import json

from PIL import Image

from easytrain.cli import main as cli_main

TITLE = "\x1b]0;pwned\x07"   # would retitle the terminal
CLEAR = "\x1b[2J"            # would clear it


def hostile_dataset(root):
    folder = root / "images" / f"2_x{CLEAR}"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 0)).save(folder / f"pic{i}{TITLE}.png")
        (folder / f"pic{i}{TITLE}.txt").write_text(f"{TITLE}tag, red{CLEAR} square, \x9bcsi\n", encoding="utf-8")
    return root / "images"


def assert_no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert "\\x1b" in text   # shown, escaped


def test_check_tags_and_images_escape_captions_and_file_names(tmp_path, capsys):
    images = hostile_dataset(tmp_path)
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images",
                                   "resolution": 256, "min_bucket_reso": 64, "comment": TITLE}))
    for args in (["check", str(answers)], ["tags", str(images)], ["images", str(images)],
                 ["tags", str(images), "--remove", "red\x1b[2J square"]):
        code = cli_main(args)
        out, err = capsys.readouterr()
        assert code == 0, err
        assert_no_raw_controls(out + err)


def test_an_error_message_escapes_the_value_it_quotes(tmp_path, capsys):
    answers = tmp_path / "a.json"
    answers.write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": TITLE}))
    assert cli_main(["check", str(answers)]) == 2
    assert_no_raw_controls(capsys.readouterr().err)


def test_the_progress_views_get_escaped_event_text():
    from easytrain.commands.train import printable_events
    from easytrain.train import events as ev

    seen = []
    printable_events(seen.append)(ev.Message(f"sample prompt {TITLE}"))
    printable_events(seen.append)(ev.CheckpointSaved(f"out/run{CLEAR}.safetensors", 1, 4))
    assert seen[0].text == "sample prompt \\x1b]0;pwned\\x07" and seen[1].path == "out/run\\x1b[2J.safetensors"


def test_the_wizard_renders_control_characters_as_escapes():
    from rich.text import Text
    from textual.content import Content

    from easytrain.tui.app import create_app

    create_app()
    assert Content(f"a{TITLE}b").plain == "a\\x1b]0;pwned\\x07b"
    assert Text(f"tag{CLEAR}\n").plain == "tag\\x1b[2J\n"
