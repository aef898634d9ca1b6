"""Auto-tagging with a tiny WD14-style ONNX tagger built in code."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from _tools_helpers import assert_clean_error, build_tiny_tagger, run_cli, tree_digest, write_captioned  # noqa: E402
from easytrain.errors import UserError  # noqa: E402
from easytrain.tools.caption_edits import undo  # noqa: E402
from easytrain.tools.tagger import caption_style, tag_folder  # noqa: E402

RED, DIM_RED, BLUE = (255, 0, 0), (153, 0, 0), (0, 0, 255)


@pytest.fixture(scope="session")
def tagger_dir(tmp_path_factory) -> Path:
    return build_tiny_tagger(tmp_path_factory.mktemp("tagger") / "wd-tiny")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "images" / "10_hero"
    write_captioned(folder, "red", None, size=(32, 32), colour=RED)
    write_captioned(folder, "dim", None, size=(32, 32), colour=DIM_RED)
    write_captioned(folder, "blue", None, size=(48, 48), colour=BLUE)
    write_captioned(folder, "done", "already, captioned", colour=BLUE)
    return tmp_path / "images"


def caption(dataset: Path, name: str) -> str:
    return (dataset / "10_hero" / f"{name}.txt").read_text(encoding="utf-8")


def test_writes_the_tags_the_thresholds_select(dataset, tagger_dir):
    result = tag_folder(dataset, tagger_dir)
    assert len(result.written) == 3 and result.skipped == 1
    # characters first, then general tags by confidence; the rating and low scores never
    assert caption(dataset, "red") == "red hero (game), red thing, ^_^, long hair"
    assert caption(dataset, "dim") == "^_^, red thing, long hair"  # red 0.6: under the character threshold
    assert caption(dataset, "blue") == "blue thing, ^_^, long hair"
    assert caption(dataset, "done") == "already, captioned"


def test_thresholds_are_options(dataset, tagger_dir):
    tag_folder(dataset, tagger_dir, general_threshold=0.95, character_threshold=0.5)
    assert caption(dataset, "red") == "red hero (game), side character, red thing"
    assert caption(dataset, "dim") == "side character, red hero (game)"  # 0.8 before 0.6


def test_underscore_style_follows_the_dataset(dataset, tagger_dir):
    write_captioned(dataset / "10_hero", "done", "long_hair, blue_eyes, smile")
    tag_folder(dataset, tagger_dir)
    assert caption(dataset, "red") == "red_hero_(game), red_thing, ^_^, long_hair"


def test_caption_style_detection():
    assert caption_style([["long_hair", "blue eyes", "^_^", "o_o"]]) == "spaces"
    assert caption_style([["long_hair", "blue_eyes", "long hair"]]) == "underscores"
    assert caption_style([]) == "spaces"


def test_pads_to_a_square_on_white(tmp_path, tagger_dir):
    # a red 32x16 strip padded with white: channel means B = G = 127.5, R = 255
    write_captioned(tmp_path / "1_x", "strip", None, size=(32, 16), colour=RED)
    tag_folder(tmp_path, tagger_dir)
    assert (tmp_path / "1_x" / "strip.txt").read_text(encoding="utf-8") == (
        "red hero (game), red thing, ^_^, blue thing, green thing, long hair")


def test_overwrite_and_undo(dataset, tagger_dir):
    before = tree_digest(dataset)
    tag_folder(dataset, tagger_dir, overwrite=True, batch_size=2)
    assert caption(dataset, "done") == "blue thing, ^_^, long hair"
    undo(dataset)
    assert tree_digest(dataset, skip_tools_dir=True) == before
    assert not (dataset / "10_hero" / "red.txt").exists()


def test_fixed_batch_model(tmp_path, dataset):
    tagger = build_tiny_tagger(tmp_path / "fixed", dynamic_batch=False)
    tag_folder(dataset, tagger)
    assert caption(dataset, "red") == "red hero (game), red thing, ^_^, long hair"


def test_unreadable_image_is_skipped_by_path(dataset, tagger_dir):
    broken = dataset / "10_hero" / "broken.png"
    broken.write_bytes(b"not an image")
    result = tag_folder(dataset, tagger_dir)
    assert len(result.written) == 3
    assert any(str(broken) in p for p in result.problems)
    assert not broken.with_suffix(".txt").exists()


def test_tagger_folder_problems_name_the_path(tmp_path, dataset):
    missing = tmp_path / "no-tagger"
    with pytest.raises(UserError, match="tagger folder does not exist"):
        tag_folder(dataset, missing)
    no_csv = build_tiny_tagger(tmp_path / "no-csv", with_csv=False)
    with pytest.raises(UserError, match="selected_tags.csv") as error:
        tag_folder(dataset, no_csv)
    assert str(no_csv) in str(error.value)
    bad_csv = build_tiny_tagger(tmp_path / "bad-csv")
    (bad_csv / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,1\n", encoding="utf-8")
    with pytest.raises(UserError, match="same tagger"):
        tag_folder(dataset, bad_csv)


def test_cli_tagger_and_its_errors(dataset, tagger_dir, tmp_path):
    result = run_cli("tags", dataset, "--tagger", tagger_dir, "--plain")
    assert result.returncode == 0, result.stderr
    assert "Wrote 3 caption file(s)" in result.stdout
    assert "tagging: 3/3" in result.stderr  # plain progress lines when not a terminal
    assert caption(dataset, "red") == "red hero (game), red thing, ^_^, long hair"
    no_csv = build_tiny_tagger(tmp_path / "no-csv", with_csv=False)
    assert_clean_error(run_cli("tags", dataset, "--tagger", no_csv), str(no_csv), "selected_tags.csv")
    assert_clean_error(run_cli("tags", dataset, "--tagger", tagger_dir, "--general-threshold", "2"),
                       "--general-threshold")


def test_missing_onnxruntime_says_what_to_install(dataset, tagger_dir):
    import subprocess
    import sys

    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from easytrain.cli import main\n"
            f"raise SystemExit(main(['tags', {str(dataset)!r}, '--tagger', {str(tagger_dir)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_clean_error(result, "pip install onnxruntime")
    assert not (dataset / "10_hero" / "red.txt").exists()
