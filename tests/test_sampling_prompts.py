"""The sample prompts file: kohya's inline options, comments, defaults, and errors that say where."""

from __future__ import annotations

import subprocess
import sys

import pytest

from easytrain.errors import UserError
from easytrain.sampling import SamplePrompt, parse_prompt_line, parse_prompts_file


def write(tmp_path, text: str, name: str = "prompts.txt", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_all_inline_options(tmp_path):
    path = write(tmp_path, "a red circle, masterpiece --n blurry, low quality --w 640 --h 768 --d 1234 --l 5.5 --s 28\n")
    assert parse_prompts_file(path) == [SamplePrompt(
        prompt="a red circle, masterpiece", negative="blurry, low quality",
        width=640, height=768, seed=1234, cfg=5.5, steps=28,
    )]


def test_options_in_any_order_and_any_case():
    parsed = parse_prompt_line("a cat --S 5 --D 9 --n dog,  bird --W 128")
    assert parsed == SamplePrompt("a cat", negative="dog,  bird", width=128, seed=9, steps=5)


def test_negative_runs_until_the_next_option_and_dashes_inside_words_stay():
    parsed = parse_prompt_line("self-portrait, half--body --n not--this, or that --l 3")
    assert parsed.prompt == "self-portrait, half--body"
    assert parsed.negative == "not--this, or that"
    assert parsed.cfg == 3.0


def test_comments_blank_lines_crlf_and_bom_are_skipped(tmp_path):
    text = "\ufeff# my prompts\r\n\r\n   \r\na red circle\r\n  # indented comment\r\na blue square --d 7\r\n"
    prompts = parse_prompts_file(write(tmp_path, text))
    assert [p.prompt for p in prompts] == ["a red circle", "a blue square"]


def test_defaults_fill_size_and_seed(tmp_path):
    path = write(tmp_path, "one\ntwo --w 256\n# skipped\nthree --d 99\nfour\n")
    prompts = parse_prompts_file(path, default_size=(516, 770))
    assert [(p.width, p.height) for p in prompts] == [(512, 768), (256, 768), (512, 768), (512, 768)]
    # a missing seed is fixed and comes from the prompt's position, so epochs are comparable
    assert [p.seed for p in prompts] == [0, 1, 99, 3]
    assert parse_prompts_file(path) == parse_prompts_file(path)
    assert [p.seed for p in parse_prompts_file(path, default_seed=42)] == [42, 43, 99, 45]
    assert all(p.cfg == 7.0 and p.steps == 20 and p.negative == "" for p in prompts)


def test_sizes_round_down_to_a_multiple_of_8():
    parsed = parse_prompt_line("x --w 517 --h 71")
    assert (parsed.width, parsed.height) == (512, 64)


@pytest.mark.parametrize("line, option, fragment", [
    ("a cat --w abc", "--w", "integer from 64 to 4096, got 'abc'"),
    ("a cat --h 32", "--h", "integer from 64 to 4096, got '32'"),
    ("a cat --w", "--w", "got nothing"),
    ("a cat --d -5", "--d", "integer from 0 to"),
    ("a cat --d 1.5", "--d", "got '1.5'"),
    ("a cat --s 0", "--s", "integer from 1 to 1000"),
    ("a cat --s 1001", "--s", "integer from 1 to 1000"),
    ("a cat --l much", "--l", "number from 0 to 100"),
    ("a cat --l nan", "--l", "number from 0 to 100"),
    ("a cat --l -1", "--l", "number from 0 to 100"),
    ("a cat --x 3", "--x", "unknown option"),
    ("a cat --seed 3", "--seed", "allowed: --n negative"),
    ("a cat --d 1 --d 2", "--d", "given twice"),
])
def test_bad_values_name_file_line_and_option(tmp_path, line, option, fragment):
    path = write(tmp_path, f"# header\n\nfine prompt --w 512\n{line}\n")
    with pytest.raises(UserError) as caught:
        parse_prompts_file(path)
    message = str(caught.value)
    assert f"{path}, line 4" in message
    assert option in message
    assert fragment in message


def test_options_without_prompt_text(tmp_path):
    path = write(tmp_path, "--n ugly --w 512\n")
    with pytest.raises(UserError, match=r"line 1: .*no prompt text"):
        parse_prompts_file(path)


def test_file_problems(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        parse_prompts_file(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="is a folder"):
        parse_prompts_file(tmp_path)
    with pytest.raises(UserError, match="has no prompts"):
        parse_prompts_file(write(tmp_path, "# only a comment\n\n"))
    latin1 = write(tmp_path, "fine\ncaf\xe9 au lait\n", name="latin1.txt", encoding="latin-1")
    with pytest.raises(UserError, match=r"latin1.txt, line 2: not UTF-8"):
        parse_prompts_file(latin1)


def test_prompt_parsing_stays_light():
    code = "import sys, easytrain.sampling; print(' '.join(m for m in ('torch', 'diffusers', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
