"""The folder scan: repeats, counts, captions, problems and unreadable files."""

from __future__ import annotations

import pytest
from PIL import Image

from easytrain.data.scan import CACHE_DIR_NAME, scan_image_folder
from easytrain.errors import UserError
from tests._data_helpers import make_image, make_subset


def test_repeats_and_counts(tmp_path):
    make_subset(tmp_path, "10_alice", 3)
    make_subset(tmp_path, "2_bob smith", 5)
    scan = scan_image_folder(tmp_path)
    assert [(s.name, s.repeats, len(s.images), s.captions) for s in scan.subsets] == [
        ("alice", 10, 3, 3), ("bob smith", 2, 5, 5)]
    assert scan.total_images == 8
    assert scan.images_per_epoch == 30 + 10
    assert scan.problems == () and scan.warnings == () and scan.unreadable == ()
    assert scan.subsets[0].images[0].caption == "tag1, tag2, tag3"


def test_all_image_suffixes_any_case(tmp_path):
    folder = tmp_path / "1_x"
    for name, fmt in [("a.png", "PNG"), ("b.JPG", "JPEG"), ("c.jpeg", "JPEG"), ("d.WebP", "WEBP"),
                      ("e.bmp", "BMP"), ("f.gif", "GIF")]:
        make_image(folder / name, fmt=fmt)
    (folder / "notes.md").write_text("not an image")
    scan = scan_image_folder(tmp_path)
    assert sorted(i.path.name for i in scan.subsets[0].images) == ["a.png", "b.JPG", "c.jpeg", "d.WebP", "e.bmp"]


def test_missing_caption_uses_folder_name_with_warning(tmp_path):
    folder = make_subset(tmp_path, "4_red fox", 2, captions=False)
    (folder / "img001.txt").write_text("fox, snow\nsecond line is ignored\n", encoding="utf-8")
    scan = scan_image_folder(tmp_path)
    subset = scan.subsets[0]
    assert [i.caption for i in subset.images] == ["red fox", "fox, snow"]
    assert subset.images[0].caption_path is None and subset.captions == 1
    assert any("img000.png" in w and "red fox" in w for w in scan.warnings)


def test_caption_extension_is_configurable(tmp_path):
    folder = make_subset(tmp_path, "1_x", 1, captions=False)
    (folder / "img000.caption").write_text("from caption file")
    (folder / "img000.txt").write_text("from txt")
    assert scan_image_folder(tmp_path, caption_extension=".caption").subsets[0].images[0].caption == "from caption file"
    assert scan_image_folder(tmp_path, caption_extension="caption").subsets[0].images[0].caption == "from caption file"
    assert scan_image_folder(tmp_path).subsets[0].images[0].caption == "from txt"


def test_non_utf8_and_empty_captions_are_reported_and_used(tmp_path):
    folder = make_subset(tmp_path, "1_x", 2, captions=False)
    (folder / "img000.txt").write_bytes("café, naïve".encode("latin-1"))
    (folder / "img001.txt").write_text("   \n")
    scan = scan_image_folder(tmp_path)
    images = scan.subsets[0].images
    assert images[0].caption.startswith("caf") and "\ufffd" in images[0].caption
    assert images[1].caption == ""
    assert any("img000.txt" in w and "UTF-8" in w for w in scan.warnings)
    assert any("img001.txt" in w and "empty" in w for w in scan.warnings)


def test_folder_problems_are_named(tmp_path):
    make_subset(tmp_path, "5_good", 1)
    make_subset(tmp_path, "no_prefix", 1)
    make_subset(tmp_path, "0_zero", 1)
    (tmp_path / "3_empty").mkdir()
    scan = scan_image_folder(tmp_path)
    text = "\n".join(scan.problems)
    assert "no_prefix" in text and "10_no_prefix" in text  # says how to rename it
    assert "0_zero" in text and "0 repeats" in text
    assert "3_empty" in text and "no images" in text
    assert [s.name for s in scan.subsets] == ["empty", "good"]
    assert scan.total_images == 1


def test_nothing_usable_is_a_problem(tmp_path):
    make_subset(tmp_path, "pictures", 2)
    scan = scan_image_folder(tmp_path)
    assert scan.total_images == 0
    assert any("no usable" in p for p in scan.problems)


def test_folder_one_level_too_deep(tmp_path):
    folder = make_subset(tmp_path, "10_alice", 2)
    scan = scan_image_folder(folder)
    assert scan.total_images == 0
    assert any("too deep" in p and str(tmp_path) in p for p in scan.problems)


def test_loose_images_in_root_are_reported(tmp_path):
    make_subset(tmp_path, "2_a", 1)
    make_image(tmp_path / "stray.png")
    scan = scan_image_folder(tmp_path)
    assert any("directly in" in p for p in scan.problems)
    assert scan.total_images == 1


def test_hidden_and_cache_folders_are_ignored(tmp_path):
    make_subset(tmp_path, "2_a", 1)
    make_subset(tmp_path, ".hidden", 3)
    make_subset(tmp_path, CACHE_DIR_NAME, 3)
    make_image(tmp_path / "2_a" / "._img000.png")  # macOS resource fork
    scan = scan_image_folder(tmp_path)
    assert scan.problems == () and scan.total_images == 1


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="must be a folder"):
        scan_image_folder(tmp_path / "file")


def test_unreadable_files_are_reported_and_left_out(tmp_path):
    folder = make_subset(tmp_path, "1_x", 2)
    good_png = (folder / "img000.png").read_bytes()
    make_image(folder / "big.jpg", size=(256, 256), fmt="JPEG")
    good_jpg = (folder / "big.jpg").read_bytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a picture")
    (folder / "cut.png").write_bytes(good_png[: len(good_png) // 2])
    (folder / "cut.jpg").write_bytes(good_jpg[: len(good_jpg) // 2])
    (folder / "badhead.png").write_bytes(good_png[:8] + b"\x00" * 40)
    scan = scan_image_folder(tmp_path)
    bad = {u.path.name: u.reason for u in scan.unreadable}
    assert set(bad) == {"empty.png", "text.jpg", "cut.png", "cut.jpg", "badhead.png"}
    assert "0 bytes" in bad["empty.png"]
    assert "truncated" in bad["cut.jpg"]
    assert sorted(i.path.name for i in scan.subsets[0].images) == ["big.jpg", "img000.png", "img001.png"]
    report = [w for w in scan.warnings if "cannot be read" in w]
    assert len(report) == 1 and all(name in report[0] for name in ["empty.png", "cut.jpg"])


def test_only_unreadable_files_leave_nothing_usable(tmp_path):
    folder = tmp_path / "1_x"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    scan = scan_image_folder(tmp_path)
    assert scan.total_images == 0 and len(scan.unreadable) == 1
    assert any("no usable" in p for p in scan.problems)


def test_exif_rotation_swaps_size_from_header(tmp_path):
    path = tmp_path / "1_x" / "turned.jpg"
    path.parent.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    Image.new("RGB", (120, 60), (10, 20, 30)).save(path, "JPEG", exif=exif.tobytes())
    image = scan_image_folder(tmp_path).subsets[0].images[0]
    assert (image.width, image.height) == (60, 120)


def test_jpeg_with_trailing_bytes_is_kept(tmp_path):
    path = make_image(tmp_path / "1_x" / "extra.jpg", fmt="JPEG")
    path.write_bytes(path.read_bytes() + b"appended video or metadata")
    scan = scan_image_folder(tmp_path)
    assert scan.total_images == 1 and scan.unreadable == ()


def test_the_excluded_folder_of_the_image_tools_is_not_a_dataset_folder(tmp_path):
    from PIL import Image

    from easytrain.data.scan import scan_image_folder

    for name in ("10_char", "_excluded/duplicate"):
        (tmp_path / name).mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(tmp_path / name / "a.png")
    scan = scan_image_folder(tmp_path)
    assert [s.folder.name for s in scan.subsets] == ["10_char"]
    assert not any("_excluded" in p for p in scan.problems)


def test_symlink_loops_are_left_out_with_their_path(tmp_path):
    make_subset(tmp_path, "2_x", 2)
    (tmp_path / "2_x" / "loop.png").symlink_to(tmp_path / "2_x" / "loop.png")
    (tmp_path / "3_loop").symlink_to(tmp_path / "3_loop")
    (tmp_path / "2_x" / "up").symlink_to(tmp_path)      # a link to a parent: never walked into
    scan = scan_image_folder(tmp_path)
    assert [s.name for s in scan.subsets] == ["x"] and scan.total_images == 2
    assert [(u.path.name, u.reason) for u in scan.unreadable] == [
        ("loop.png", "a symbolic link that points back to itself (a loop)")]


def test_files_that_vanish_during_the_scan_are_reported_not_raised(tmp_path, monkeypatch):
    from easytrain.data import scan as scan_module

    make_subset(tmp_path, "1_x", 4)
    files = sorted((tmp_path / "1_x").iterdir())
    real_probe = scan_module.probe_image

    def probe_then_delete_the_rest(path, size=None):    # another program empties the folder meanwhile
        result = real_probe(path, size)
        for other in files:
            if other.name > path.name:
                other.unlink(missing_ok=True)
        return result

    monkeypatch.setattr(scan_module, "probe_image", probe_then_delete_the_rest)
    scan = scan_image_folder(tmp_path)
    assert scan.total_images == 1
    assert all(u.reason == "it disappeared while the dataset was read" for u in scan.unreadable)
    assert len(scan.unreadable) == 3


def test_a_folder_that_cannot_be_listed_is_one_clear_error(tmp_path):
    (tmp_path / "root").symlink_to(tmp_path / "root")
    with pytest.raises(UserError, match="does not exist"):
        scan_image_folder(tmp_path / "root")


def test_a_fifo_named_like_a_caption_does_not_hang_the_scan(tmp_path):
    import os

    make_subset(tmp_path, "1_x", 1)
    image = next((tmp_path / "1_x").glob("*.png"))
    caption = image.with_suffix(".txt")
    caption.unlink()
    os.mkfifo(caption)                    # reading it would wait forever for a writer
    scan = scan_image_folder(tmp_path)
    assert scan.total_images == 1 and scan.subsets[0].captions == 0
