"""The kohya dataset TOML: parsing, cascading settings, and its errors."""

from __future__ import annotations

import pytest

from easytrain.data.buckets import BucketSettings
from easytrain.data.toml_config import bucket_settings_from_config, scan_dataset_toml
from easytrain.errors import UserError
from tests._data_helpers import make_subset


def write(tmp_path, text):
    path = tmp_path / "dataset.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_full_config(tmp_path):
    make_subset(tmp_path / "imgs", "chars", 3)
    make_subset(tmp_path / "imgs", "style", 2, captions=False)
    make_subset(tmp_path / "imgs", "reg", 4)
    path = write(tmp_path, """
[general]
shuffle_caption = true
keep_tokens = 1
caption_extension = ".txt"

[[datasets]]
resolution = [768, 512]
batch_size = 3
enable_bucket = true
min_bucket_reso = 320
max_bucket_reso = 1280
bucket_reso_steps = 64
bucket_no_upscale = false
flip_aug = true

  [[datasets.subsets]]
  image_dir = "imgs/chars"
  num_repeats = 5
  keep_tokens = 2

  [[datasets.subsets]]
  image_dir = "imgs/style"
  class_tokens = "sks style"
  shuffle_caption = false

  [[datasets.subsets]]
  image_dir = "imgs/reg"
  is_reg = true
  num_repeats = 2
""")
    train, reg = scan_dataset_toml(path)
    chars, style = train.subsets
    assert chars.folder == tmp_path / "imgs" / "chars"  # relative to the TOML's folder
    assert (chars.repeats, chars.keep_tokens, chars.shuffle_caption, chars.flip_aug) == (5, 2, True, True)
    assert (style.repeats, style.keep_tokens, style.shuffle_caption, style.name) == (1, 1, False, "sks style")
    assert [i.caption for i in style.images] == ["sks style", "sks style"]
    assert train.images_per_epoch == 17
    assert reg is not None and reg.subsets[0].is_reg and reg.subsets[0].repeats == 2
    assert train.config_options["resolution"] == (768, 512) and train.config_options["batch_size"] == 3
    settings = bucket_settings_from_config(BucketSettings(), train.config_options)
    assert settings == BucketSettings(resolution=(768, 512), min_reso=320, max_reso=1280)


def test_single_int_resolution_and_absolute_dir(tmp_path):
    folder = make_subset(tmp_path, "abs", 1)
    path = write(tmp_path, f"""
[general]
resolution = 640
[[datasets]]
[[datasets.subsets]]
image_dir = '{folder}'
""")
    train, reg = scan_dataset_toml(path)
    assert reg is None and train.total_images == 1 and train.config_options["resolution"] == (640, 640)


def test_unknown_keys_name_file_section_and_key(tmp_path):
    make_subset(tmp_path, "a", 1)
    path = write(tmp_path, """
[general]
shuffle_captions = true
[[datasets]]
batchsize = 2
[[datasets.subsets]]
image_dir = "a"
face_crop_aug_range = [2.0, 4.0]
[extra]
x = 1
""")
    with pytest.raises(UserError) as info:
        scan_dataset_toml(path)
    text = str(info.value)
    assert str(path) in text
    assert "[general]: unknown key 'shuffle_captions'" in text
    assert "[[datasets]] #1: unknown key 'batchsize'" in text
    assert "[[datasets.subsets]] #1: 'face_crop_aug_range' is a kohya option easytrain does not support" in text
    assert "top level: unknown key 'extra'" in text


def test_wrong_types_missing_dir_and_bad_repeats(tmp_path):
    make_subset(tmp_path, "a", 1)
    path = write(tmp_path, """
[[datasets]]
resolution = "512"
[[datasets.subsets]]
image_dir = "missing"
[[datasets.subsets]]
image_dir = "a"
num_repeats = 0
[[datasets.subsets]]
flip_aug = "yes"
""")
    with pytest.raises(UserError) as info:
        scan_dataset_toml(path)
    text = str(info.value)
    assert "'resolution' must be an integer or [width, height]" in text
    assert "missing is not a folder" in text
    assert "'num_repeats' must be 1 or more" in text
    assert "'flip_aug' must be true or false" in text
    assert "#3: 'image_dir' is required" in text


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        scan_dataset_toml(write(tmp_path, "[general\nx = 1"))
    with pytest.raises(UserError, match="does not exist"):
        scan_dataset_toml(tmp_path / "nope.toml")
    with pytest.raises(UserError, match=r"at least one \[\[datasets\]\]"):
        scan_dataset_toml(write(tmp_path, "[general]\nkeep_tokens = 1\n"))


def test_datasets_with_different_settings_are_refused(tmp_path):
    make_subset(tmp_path, "a", 1)
    path = write(tmp_path, """
[[datasets]]
resolution = 512
[[datasets.subsets]]
image_dir = "a"
[[datasets]]
resolution = 768
[[datasets.subsets]]
image_dir = "a"
""")
    with pytest.raises(UserError, match="one dataset at a time"):
        scan_dataset_toml(path)


def test_settings_shared_with_the_answers_have_the_same_limits(tmp_path):
    make_subset(tmp_path, "a", 1)
    path = write(tmp_path, """
[general]
batch_size = 0
max_bucket_reso = 99999999999
resolution = [512, 100]
[[datasets]]
[[datasets.subsets]]
image_dir = "a"
""")
    with pytest.raises(UserError) as info:
        scan_dataset_toml(path)
    text = str(info.value)
    assert "'batch_size' must be an integer from 1 to 256, got 0" in text
    assert "'max_bucket_reso' must be an integer from 64 to 8192" in text
    assert "'resolution' must be an integer from" in text and "got 100" in text
