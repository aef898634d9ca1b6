"""Tag counts (kohya's ss_tag_frequency), the tag summary file and the check report."""

from __future__ import annotations

import json

import pytest
from PIL import ImageFile

from easytrain.data.buckets import BucketSettings
from easytrain.data.report import dataset_report_lines
from easytrain.data.scan import scan_image_folder
from easytrain.data.tags import dataset_dirs, tag_frequency, tag_summary_lines, write_tag_summary
from tests._data_helpers import make_image, make_subset


@pytest.fixture
def tagged(tmp_path):
    alice = make_subset(tmp_path / "train", "10_alice", 3, caption="Alice, smile , outdoors")
    (alice / "img001.txt").write_text("alice, smile, smile,, indoors\n", encoding="utf-8")
    make_subset(tmp_path / "train", "2_extra", 2, captions=False)
    make_subset(tmp_path / "reg", "1_woman", 2, caption="woman, smile")
    return scan_image_folder(tmp_path / "train"), scan_image_folder(tmp_path / "reg", is_reg=True)


def test_tag_frequency_counts_like_kohya(tagged):
    train, reg = tagged
    # per image occurrence, stripped, lower-cased, repeats not multiplied, folder name for a missing caption
    assert tag_frequency(train) == {
        "10_alice": {"alice": 3, "smile": 4, "outdoors": 2, "indoors": 1},
        "2_extra": {"extra": 2},
    }
    assert tag_frequency(train, reg)["1_woman"] == {"woman": 2, "smile": 2}
    json.dumps(tag_frequency(train))  # metadata-ready


def test_dataset_dirs_leave_reg_out(tagged):
    train, reg = tagged
    assert dataset_dirs(train) == {"10_alice": {"n_repeats": 10, "img_count": 3},
                                   "2_extra": {"n_repeats": 2, "img_count": 2}}
    assert dataset_dirs(reg) == {}


def test_tag_summary_orders_and_file(tagged, tmp_path):
    train, _ = tagged
    assert tag_summary_lines(train, "by_count") == ["4 smile", "3 alice", "2 extra", "2 outdoors", "1 indoors"]
    assert tag_summary_lines(train, "alphabetical") == ["3 alice", "2 extra", "1 indoors", "2 outdoors", "4 smile"]
    path = write_tag_summary(tmp_path / "out" / "me_tags.txt", train)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "4 smile"
    with pytest.raises(ValueError):
        tag_summary_lines(train, "random")


def test_check_report_lists_buckets_left_out_small_and_missing(tmp_path):
    make_subset(tmp_path, "3_big", 2, size=(1024, 512))
    folder = make_subset(tmp_path, "1_small", 2, size=(100, 100), captions=False)
    (folder / "broken.png").write_bytes(b"")
    (tmp_path / "nope").mkdir()
    scan = scan_image_folder(tmp_path)
    lines = dataset_report_lines(scan, None, BucketSettings(), 2)
    text = "\n".join(lines)
    assert "3_big: 2 images x 3 repeats = 6, 2 with captions" in text
    assert "per epoch: 8 images in 4 steps of batch 2" in text
    assert "  704x320: 6 images per epoch" in text and "  512x512: 2 images per epoch" in text
    assert "broken.png: empty file" in text
    assert "smaller than the training resolution (2 images, upscaled" in text
    assert "missing captions (2 images" in text and "img000.png" in text
    assert "nope" in text  # the folder without a repeat count
    no_upscale = "\n".join(dataset_report_lines(scan, None, BucketSettings(no_upscale=True), 2))
    assert "kept at their own size" in no_upscale


def test_check_report_with_reg(tagged):
    train, reg = tagged
    text = "\n".join(dataset_report_lines(train, reg, BucketSettings(), 4))
    assert "regularization images" in text
    assert "per epoch: 68 images" in text and "34 training + 34 regularization" in text


def test_scan_never_decodes_pixels(tmp_path, monkeypatch):
    for suffix, fmt in [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP")]:
        make_image(tmp_path / "1_x" / f"a.{suffix}", (80, 60), fmt=fmt)

    def refuse(self, *args, **kwargs):
        raise AssertionError("the scan decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    scan = scan_image_folder(tmp_path)
    assert scan.total_images == 4 and all((i.width, i.height) == (80, 60) for i in scan.all_images)
