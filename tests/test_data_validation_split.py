"""Held-out validation images: a seeded share of each folder, or a folder of their own; never trained on."""

from __future__ import annotations

import pytest

from easytrain.data.scan import scan_image_folder
from easytrain.data.toml_config import scan_dataset_toml
from easytrain.data.validation_split import hold_out, scan_validation_folder, split_off
from easytrain.errors import UserError
from tests._data_helpers import make_image, make_subset


@pytest.fixture
def scan(tmp_path):
    make_subset(tmp_path / "train", "10_char", 10)
    make_subset(tmp_path / "train", "3_style", 3, captions=False)
    return scan_image_folder(tmp_path / "train")


def paths(scan):
    return {image.path for image in scan.all_images}


def test_a_share_of_each_folder_is_held_out_and_left_out_of_training(scan):
    train, held = split_off(scan, 0.2, seed=7)
    assert [len(s.images) for s in held.subsets] == [2, 1]          # round(10 x 0.2), round(3 x 0.2) = 1
    assert [len(s.images) for s in train.subsets] == [8, 2]
    assert paths(train) | paths(held) == paths(scan) and not paths(train) & paths(held)
    assert [s.captions for s in train.subsets] == [8, 0] and train.subsets[0].repeats == 10
    assert all(s.repeats == 1 and s.flip_aug is False and s.shuffle_caption is False for s in held.subsets)
    assert train.images_per_epoch == 8 * 10 + 2 * 3


def test_the_seed_picks_the_images_the_same_way_every_time(scan):
    first = paths(split_off(scan, 0.3, seed=1)[1])
    assert first == paths(split_off(scan, 0.3, seed=1)[1])
    assert first != paths(split_off(scan, 0.3, seed=2)[1])


def test_no_split_and_a_tiny_one(scan):
    assert split_off(scan, 0.0, seed=1) == (scan, None)
    _, held = split_off(scan, 0.01, seed=1)                         # rounds to none: one image all the same
    assert held.total_images == 1


def test_a_split_that_leaves_a_folder_without_training_images_is_refused(tmp_path):
    make_subset(tmp_path / "train", "10_char", 4)
    make_subset(tmp_path / "train", "1_one", 1)
    scan = scan_image_folder(tmp_path / "train")
    with pytest.raises(UserError) as err:
        split_off(scan, 0.5, seed=1)
    assert str(err.value).startswith("validation_split: 0.5 holds out all 1 image(s) of ")
    assert "1_one" in str(err.value)
    with pytest.raises(UserError, match="^validation_split: must be a fraction"):
        split_off(scan, 1.0, seed=1)


def test_a_validation_folder_with_images_directly_or_in_subfolders(tmp_path):
    make_subset(tmp_path, "held", 3)
    direct = scan_validation_folder(tmp_path / "held")
    assert direct.total_images == 3 and direct.subsets[0].captions == 3
    make_subset(tmp_path / "layered", "5_char", 2)
    assert scan_validation_folder(tmp_path / "layered").total_images == 2


def test_an_empty_or_missing_validation_folder_is_refused_by_key(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="^validation_folder: .*empty has no images"):
        scan_validation_folder(tmp_path / "empty")
    with pytest.raises(UserError, match="^validation_folder: folder not found"):
        scan_validation_folder(tmp_path / "missing")


def test_a_dataset_toml_split_wins_and_is_named_with_its_file(tmp_path):
    make_subset(tmp_path / "imgs", "char", 4)
    toml = tmp_path / "dataset.toml"
    toml.write_text('[general]\nvalidation_split = 0.25\nvalidation_seed = 3\n'
                    '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "imgs/char"\n', encoding="utf-8")
    train_scan, _ = scan_dataset_toml(toml)
    train, held = hold_out(train_scan, fraction=0.0, seed=42)
    assert (train.total_images, held.total_images) == (3, 1)
    assert paths(held) == paths(split_off(train_scan, 0.25, seed=3)[1])
    toml.write_text(toml.read_text().replace("0.25", "0.9"))
    make_image(tmp_path / "imgs" / "char" / "extra.png")
    with pytest.raises(UserError, match=f"^{toml}: validation_split: 0.9 holds out all"):
        hold_out(scan_dataset_toml(toml)[0], fraction=0.0, seed=42)


def test_a_folder_replaces_the_split(scan, tmp_path):
    make_subset(tmp_path, "held", 2)
    train, held = hold_out(scan, fraction=0.2, seed=1, folder=tmp_path / "held")
    assert train is scan and held.total_images == 2
