"""The image report and fixes on real files: formats, transparency, animation, colour modes,
unreadable files, exact and near duplicates, flatten, frames, padding, exclusion, undo."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from _tools_helpers import all_file_hashes, assert_clean_error, run_cli, shape_picture, tree_digest
from easytrain.tools.caption_edits import undo
from easytrain.tools.image_fixes import FixOptions, apply_fixes, parse_colour, plan_fixes
from easytrain.tools.image_report import format_report, image_report
from easytrain.errors import UserError


def save(image: Image.Image, path: Path, caption: str | None = "tag", **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def transparent_png(path: Path) -> Path:
    image = Image.new("RGBA", (64, 48), (255, 0, 0, 255))
    image.paste((0, 0, 255, 0), (0, 0, 32, 48))  # left half fully transparent (blue underneath)
    return save(image, path)


def animated_gif(path: Path, frames=3) -> Path:
    pictures = [Image.new("RGB", (40, 40), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)][:frames]]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    path.with_suffix(".txt").write_text("anim, 1girl", encoding="utf-8")
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    folder = root / "10_mix"
    save(shape_picture(1, (640, 640)), folder / "big.png")
    save(shape_picture(2, (256, 256)), folder / "small.jpg", quality=90)
    transparent_png(folder / "clear.png")
    save(shape_picture(3).convert("L"), folder / "grey.png")
    save(shape_picture(4).convert("CMYK"), folder / "cmyk.jpg")
    save(shape_picture(5).convert("P"), folder / "palette.png")
    folder.joinpath("broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    folder.joinpath("broken.txt").write_text("broken", encoding="utf-8")
    animated_gif(folder / "anim.gif")
    return root


def names(infos) -> set[str]:
    return {info.path.name for info in infos}


def test_report_finds_each_kind(mixed):
    report = image_report(mixed, resolution=512, workers=1)
    assert report.formats == {"PNG": 4, "JPEG": 2, "GIF": 1, "unreadable": 1}
    assert names(report.upscaled) == {"small.jpg", "clear.png", "grey.png", "cmyk.jpg", "palette.png", "anim.gif"}
    assert names(report.transparent) == {"clear.png"}
    assert names(report.animated) == {"anim.gif"}
    assert names(report.colour["greyscale"]) == {"grey.png"}
    assert names(report.colour["cmyk"]) == {"cmyk.jpg"}
    assert names(report.colour["palette"]) >= {"palette.png"}
    assert names(report.unreadable) == {"broken.png"}
    assert report.exact_duplicates == () and report.near_duplicates == ()
    text = "\n".join(format_report(report))
    assert "10_mix/broken.png" in text and "Transparent (1)" in text and "anim.gif (3 frames)" in text


def test_opaque_rgba_is_not_transparent(tmp_path):
    save(Image.new("RGBA", (32, 32), (1, 2, 3, 255)), tmp_path / "1_a" / "opaque.png")
    assert image_report(tmp_path, workers=1).transparent == ()


@pytest.fixture
def duplicates(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    original = shape_picture(10, (320, 320))
    save(original, root / "5_a" / "orig.png", caption="orig caption")
    (root / "5_b").mkdir(parents=True)
    (root / "5_b" / "copy.png").write_bytes((root / "5_a" / "orig.png").read_bytes())
    (root / "5_b" / "copy.txt").write_text("copy caption", encoding="utf-8")
    buffer = io.BytesIO()
    original.resize((200, 200), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=60)
    (root / "5_b" / "resized.jpg").write_bytes(buffer.getvalue())
    for seed in range(11, 19):
        save(shape_picture(seed, (320, 320)), root / "5_a" / f"other{seed}.png")
    return root


def test_exact_and_near_duplicates_are_grouped_and_different_pictures_are_not(duplicates):
    report = image_report(duplicates, workers=2)
    assert [names(g) for g in report.exact_duplicates] == [{"orig.png", "copy.png"}]
    assert [names(g) for g in report.near_duplicates] == [{"orig.png", "copy.png", "resized.jpg"}]
    strict = image_report(duplicates, workers=1, threshold=0)
    assert all("other" not in i.path.name for g in strict.near_duplicates for i in g)


def test_process_pool_gives_the_same_hashes(duplicates):
    for index in range(40):  # enough files for the worker processes to start
        save(shape_picture(100 + index, (48, 48)), duplicates / "5_c" / f"p{index}.png", caption=None)
    one = {i.path: i.phash for i in image_report(duplicates, workers=1).infos}
    two = {i.path: i.phash for i in image_report(duplicates, workers=2).infos}
    assert one == two


def test_excluding_duplicates_moves_with_captions_never_deletes_and_undo_restores(duplicates):
    before = tree_digest(duplicates)
    hashes = all_file_hashes(duplicates)
    options = FixOptions(exclude_duplicates=True, exclude_near_duplicates=True)
    plan = plan_fixes(image_report(duplicates, workers=1), options)
    assert {e.path.name: e.reason for e in plan.exclusions} == {"copy.png": "duplicates", "resized.jpg": "near-duplicates"}
    apply_fixes(plan)
    excluded = duplicates / "_excluded"
    assert (excluded / "duplicates" / "5_b" / "copy.png").is_file()
    assert (excluded / "duplicates" / "5_b" / "copy.txt").read_text(encoding="utf-8") == "copy caption"
    assert (excluded / "near-duplicates" / "5_b" / "resized.jpg").is_file()
    assert (duplicates / "5_a" / "orig.png").is_file()
    assert all_file_hashes(duplicates) == hashes  # moved, nothing lost or added
    undo(duplicates)
    assert tree_digest(duplicates, skip_tools_dir=True) == before
    assert not excluded.exists()


def test_flatten_makes_transparent_pixels_white_and_undo_restores(mixed):
    clear = mixed / "10_mix" / "clear.png"
    original = clear.read_bytes()
    apply_fixes(plan_fixes(image_report(mixed, workers=1), FixOptions(flatten=True)))
    with Image.open(clear) as image:
        assert image.mode == "RGB"
        assert image.getpixel((5, 5)) == (255, 255, 255)
        assert image.getpixel((50, 5)) == (255, 0, 0)
    undo(mixed)
    assert clear.read_bytes() == original


def test_flatten_onto_a_chosen_background(mixed):
    apply_fixes(plan_fixes(image_report(mixed, workers=1), FixOptions(flatten=True, background=parse_colour("#000000"))))
    with Image.open(mixed / "10_mix" / "clear.png") as image:
        assert image.getpixel((5, 5)) == (0, 0, 0)
    with pytest.raises(UserError, match="--background 'nocolour'"):
        parse_colour("nocolour")


def test_gif_frames_become_pngs_with_captions_and_undo_puts_the_gif_back(mixed):
    before = tree_digest(mixed)
    folder = mixed / "10_mix"
    apply_fixes(plan_fixes(image_report(mixed, workers=1), FixOptions(convert_animated="all")))
    frames = sorted(folder.glob("anim_*.png"))
    assert [f.name for f in frames] == ["anim_000.png", "anim_001.png", "anim_002.png"]
    colours = []
    for frame in frames:
        with Image.open(frame) as image:
            colours.append(image.convert("RGB").getpixel((20, 20)))
        assert frame.with_suffix(".txt").read_text(encoding="utf-8") == "anim, 1girl"
    assert colours == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert not (folder / "anim.gif").exists() and not (folder / "anim.txt").exists()
    assert set(before.values()) <= set(tree_digest(mixed).values())  # the GIF and its caption are kept
    undo(mixed)
    assert tree_digest(mixed, skip_tools_dir=True) == before


def test_first_frame_only_keeps_the_caption_name(mixed):
    folder = mixed / "10_mix"
    apply_fixes(plan_fixes(image_report(mixed, workers=1), FixOptions(convert_animated="first")))
    with Image.open(folder / "anim.png") as image:
        assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert (folder / "anim.txt").read_text(encoding="utf-8") == "anim, 1girl"
    assert not list(folder.glob("anim_*.png"))


def test_pad_square_pads_with_white(tmp_path):
    path = save(Image.new("RGB", (60, 30), (10, 20, 30)), tmp_path / "1_a" / "wide.png")
    apply_fixes(plan_fixes(image_report(tmp_path, workers=1), FixOptions(pad_square=True)))
    with Image.open(path) as image:
        assert image.size == (60, 60)
        assert image.getpixel((30, 2)) == (255, 255, 255)
        assert image.getpixel((30, 30)) == (10, 20, 30)


def test_unreadable_and_too_small_move_out(mixed):
    hashes = all_file_hashes(mixed)
    apply_fixes(plan_fixes(image_report(mixed, workers=1), FixOptions(exclude_unreadable=True, min_size=300)))
    excluded = mixed / "_excluded"
    assert (excluded / "unreadable" / "10_mix" / "broken.png").is_file()
    assert (excluded / "unreadable" / "10_mix" / "broken.txt").is_file()
    assert (excluded / "too-small" / "10_mix" / "small.jpg").is_file()
    assert (mixed / "10_mix" / "big.png").is_file()
    assert all_file_hashes(mixed) == hashes


def test_cli_dry_run_apply_undo_and_bad_input(mixed, tmp_path):
    before = tree_digest(mixed)
    dry = run_cli("images", mixed, "--flatten", "--exclude-unreadable", "--plain")
    assert dry.returncode == 0, dry.stderr
    assert "Unreadable (1)" in dry.stdout and "Dry run" in dry.stdout and "Traceback" not in dry.stderr
    assert tree_digest(mixed) == before
    applied = run_cli("images", mixed, "--flatten", "--exclude-unreadable", "--apply", "--plain")
    assert applied.returncode == 0, applied.stderr
    assert (mixed / "_excluded" / "unreadable" / "10_mix" / "broken.png").is_file()
    assert run_cli("images", mixed, "--undo").returncode == 0
    assert tree_digest(mixed, skip_tools_dir=True) == before
    assert_clean_error(run_cli("images", tmp_path / "nowhere"), str(tmp_path / "nowhere"), "does not exist")
    assert_clean_error(run_cli("images", mixed, "--apply"), "--apply", "nothing to apply")
    assert_clean_error(run_cli("images", mixed, "--flatten", "--background", "bogus"), "--background")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(run_cli("images", empty), str(empty), "no images found")


def test_animated_webp_is_found_and_converted(tmp_path):
    folder = tmp_path / "2_anim"
    folder.mkdir()
    frames = [Image.new("RGB", (32, 32), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(folder / "move.webp", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    report = image_report(tmp_path, workers=1)
    assert [(i.path.name, i.frames) for i in report.animated] == [("move.webp", 2)]
    apply_fixes(plan_fixes(report, FixOptions(convert_animated="all")))
    assert sorted(p.name for p in folder.iterdir()) == ["move_000.png", "move_001.png"]
    with Image.open(folder / "move_001.png") as image:
        assert image.convert("RGB").getpixel((16, 16)) == (0, 0, 255)


def test_images_takes_the_resolution_from_an_answers_file_and_says_which(tmp_path, demo_images):
    answers = tmp_path / "run.json"
    answers.write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images",
                                   "resolution": 256}))
    from_file = run_cli("images", demo_images, "--answers", answers, "--workers", "1")
    assert from_file.returncode == 0, from_file.stderr
    assert f"Sizes checked against 256 px training (the resolution in {answers})." in from_file.stdout
    assert "Smaller than 256 px" in from_file.stdout          # the 192 px sides of the demo's tall images
    default = run_cli("images", demo_images, "--workers", "1")
    assert "Sizes checked against 512 px training (the SD1.x default;" in default.stdout
    both = run_cli("images", demo_images, "--answers", answers, "--resolution", "768")
    assert both.returncode == 2 and "use one of them" in both.stderr
