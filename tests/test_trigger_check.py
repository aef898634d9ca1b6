"""The trigger word check with the real CLIP tokenizer, in `tags`, `check` and on its own."""

from __future__ import annotations

import json

import pytest

from _tools_helpers import all_file_hashes, assert_clean_error, run_cli
from easytrain.errors import UserError
from easytrain.tools.trigger_check import check_trigger, likely_trigger, rarer_spellings


def test_a_common_word_is_one_known_token_and_gets_rarer_spellings():
    report = check_trigger("cat", [["cat", "red"], ["red", "cat"]])
    assert report.pieces == ("cat</w>",) and report.common_word  # "a photo of a cat": 2368 in CLIP's vocab
    assert (report.with_trigger, report.first, report.captions) == (2, 1, 2)
    assert report.suggestions and all(2 <= check_trigger(s).tokens <= 3 for s in report.suggestions)
    assert "cat" not in report.suggestions


def test_a_made_up_trigger_splits_into_a_few_pieces_and_needs_no_advice():
    report = check_trigger("mychar", [["mychar", "1girl"]] * 3)
    assert report.pieces == ("my", "char</w>") and not report.common_word and report.suggestions == ()
    assert report.lines() == ["trigger 'mychar': 2 CLIP tokens (my char)", "  first tag of every caption (3)"]


def test_a_long_trigger_is_flagged_with_shorter_spellings():
    report = check_trigger("supercalifragilistic")
    assert report.tokens == 5 and "5 pieces: long for a trigger" in "\n".join(report.lines())
    assert report.suggestions and all(len(check_trigger(s).pieces) <= 3 for s in report.suggestions)


def test_suggestions_avoid_tags_the_captions_use():
    first = rarer_spellings("cat")[0]
    assert first not in rarer_spellings("cat", {first})


@pytest.mark.parametrize("trigger,needle", [("", "empty"), ("  ", "empty"), ("!!!", "only punctuation"),
                                            (",", "only punctuation"), ("a, b", "without commas")])
def test_empty_punctuation_and_comma_triggers_are_refused_with_the_key(trigger, needle):
    with pytest.raises(UserError) as err:
        check_trigger(trigger, key="--check-trigger")
    assert str(err.value).startswith("--check-trigger") and needle in str(err.value)


def test_likely_trigger_is_the_usual_first_tag():
    assert likely_trigger([["a", "b"], ["a"], ["b", "a"]]) == "a"
    assert likely_trigger([[], []]) is None


def test_tags_report_checks_the_usual_first_tag_and_a_named_one(demo_images):
    out = run_cli("tags", demo_images)
    assert out.returncode == 0, out.stderr
    assert "Trigger:\n  trigger 'shapes': 1 CLIP token (shapes)\n    first tag of every caption (16)" in out.stdout
    out = run_cli("tags", demo_images, "--check-trigger", "girl")
    assert "trigger 'girl': 1 CLIP token (girl)" in out.stdout and "a common word" in out.stdout


def test_add_trigger_dry_run_shows_the_check(demo_images):
    out = run_cli("tags", demo_images, "--add-trigger", "cat")
    assert out.returncode == 0, out.stderr
    assert "in none of the 16 captions yet" in out.stdout and "rarer spellings:" in out.stdout


def test_bad_triggers_in_tags_change_nothing(demo_images):
    before = all_file_hashes(demo_images)
    assert_clean_error(run_cli("tags", demo_images, "--check-trigger", "..."), "--check-trigger '...'",
                       "only punctuation")
    assert_clean_error(run_cli("tags", demo_images, "--add-trigger", "!?", "--apply"), "--add-trigger '!?'",
                       "only punctuation")
    assert all_file_hashes(demo_images) == before


def test_check_prints_the_suggestion_and_the_trigger_report(tmp_path, demo_images):
    data = {"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images"}
    (tmp_path / "a.json").write_text(json.dumps(data))
    out = run_cli("check", tmp_path / "a.json")
    assert out.returncode == 0, out.stderr
    assert "suggested repeats and epochs (1000-3000 steps" in out.stdout
    assert "5_shapes      16            5 -> 12  *" in out.stdout
    assert "suggested: 16 images x repeats" in out.stdout and "192" in out.stdout
    assert "batch 2 = 96 steps x 11 epochs = 1056 steps" in out.stdout
    assert "trigger 'shapes': 1 CLIP token (shapes)" in out.stdout
    data["folder_repeats"], data["epochs"] = {"5_shapes": 12}, 11
    (tmp_path / "a.json").write_text(json.dumps(data))
    out = run_cli("check", tmp_path / "a.json")
    assert "repeats and epochs: as suggested for 1000-3000 steps" in out.stdout
    assert "5_shapes: 16 images x 12 repeats = 192" in out.stdout
