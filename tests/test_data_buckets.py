"""Buckets as kohya makes them, assignment and crop, no-upscale, epoch counting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from easytrain.data.buckets import (
    BucketSettings, assign_bucket, count_epoch, crop_box, make_buckets, steps_per_epoch)
from easytrain.data.regularization import balanced_reg_repeats
from easytrain.data.scan import scan_image_folder
from easytrain.errors import UserError
from tests._data_helpers import make_subset

KOHYA_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
    (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256),
    (1024, 256),
]


def test_buckets_at_512_are_kohyas_17():
    assert make_buckets(BucketSettings()) == KOHYA_512


def test_buckets_respect_area_and_limits_at_other_settings():
    buckets = make_buckets(BucketSettings(resolution=(1024, 1024), min_reso=256, max_reso=2048))
    assert (1024, 1024) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all(w * h <= 1024 * 1024 and 256 <= min(w, h) and max(w, h) <= 2048 for w, h in buckets)


@pytest.mark.parametrize("size, bucket, resized", [
    ((1000, 500), (704, 320), (704, 352)),   # 2:1 -> nearest ratio 2.2, matched on width
    ((300, 300), (512, 512), (512, 512)),    # small square is upscaled
    ((400, 600), (384, 640), (427, 640)),    # 2:3 -> 0.6 bucket, matched on height
    ((640, 384), (640, 384), (640, 384)),    # exactly a bucket: kept
    ((2000, 200), (1024, 256), (2560, 256)),  # extreme ratio: the widest bucket
])
def test_assignment_of_aspect_ratios(size, bucket, resized):
    settings = BucketSettings()
    assert assign_bucket(*size, settings, make_buckets(settings)) == (bucket, resized)


def test_centre_crop_box():
    assert crop_box((704, 352), (704, 320)) == (0, 16, 704, 336)
    assert crop_box((427, 640), (384, 640)) == (21, 0, 405, 640)


@settings(max_examples=200, deadline=None)
@given(st.integers(16, 4000), st.integers(16, 4000), st.booleans())
def test_resized_always_covers_its_bucket(width, height, no_upscale):
    settings = BucketSettings(no_upscale=no_upscale)
    bucket, resized = assign_bucket(width, height, settings, make_buckets(settings))
    assert resized[0] >= bucket[0] and resized[1] >= bucket[1]
    assert bucket[0] % 64 == 0 and bucket[1] % 64 == 0
    if no_upscale:
        assert bucket[0] * bucket[1] <= max(512 * 512, 64 * 64)
    else:
        assert bucket in KOHYA_512


def test_no_upscale_keeps_small_images_and_shrinks_large_ones():
    settings = BucketSettings(no_upscale=True)
    assert assign_bucket(300, 200, settings, make_buckets(settings)) == ((256, 192), (300, 200))
    assert assign_bucket(2000, 1000, settings, make_buckets(settings)) == ((640, 320), (640, 320))
    # without the rule the small image is enlarged into a predefined bucket
    plain = BucketSettings()
    bucket, resized = assign_bucket(300, 200, plain, make_buckets(plain))
    assert bucket == (640, 384) and resized == (640, 427)


def test_bucketing_off_resizes_everything_to_the_resolution():
    settings = BucketSettings(resolution=(512, 512), enable_bucket=False)
    assert make_buckets(settings) == [(512, 512)]
    assert assign_bucket(1000, 500, settings, make_buckets(settings)) == ((512, 512), (1024, 512))


def test_width_by_height_target_area():
    settings = BucketSettings(resolution=(768, 512), enable_bucket=False)
    assert assign_bucket(300, 300, settings, make_buckets(settings)) == ((768, 512), (768, 768))


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="max_bucket_reso"):
        BucketSettings(resolution=(1024, 1024), max_reso=512)
    with pytest.raises(UserError, match="min_bucket_reso"):
        BucketSettings(min_reso=2048, max_reso=1024)


def test_steps_count_partial_batches_per_bucket():
    assert steps_per_epoch({(512, 512): 5, (640, 384): 3}, 2) == 5
    assert steps_per_epoch([4, 4], 4) == 2
    assert steps_per_epoch({}, 2) == 0


def test_reg_balancing_cycles_like_kohya():
    assert balanced_reg_repeats(10, [1, 1, 1]) == [4, 3, 3]
    assert balanced_reg_repeats(10, [5, 5, 5]) == [5, 5, 0]  # more than needed: some unused
    assert balanced_reg_repeats(7, [2, 1]) == [4, 3]
    assert balanced_reg_repeats(0, [1, 1]) == [0, 0]
    assert balanced_reg_repeats(5, []) == []


def test_count_epoch_with_repeats_and_reg(tmp_path):
    make_subset(tmp_path / "train", "3_cat", 4, size=(64, 64))
    make_subset(tmp_path / "train", "2_wide", 2, size=(128, 64))
    make_subset(tmp_path / "reg", "1_animal", 5, size=(64, 64))
    train = scan_image_folder(tmp_path / "train")
    reg = scan_image_folder(tmp_path / "reg", is_reg=True)
    alone = count_epoch(train, None, BucketSettings(), 2)
    assert alone.images_per_epoch == 3 * 4 + 2 * 2 == 16
    assert alone.bucket_counts == {(512, 512): 12, (704, 320): 4}
    assert alone.steps_per_epoch == 6 + 2
    both = count_epoch(train, reg, BucketSettings(), 3)
    assert both.images_per_epoch == 32  # reg balanced to the 16 training images
    assert both.bucket_counts == {(512, 512): 28, (704, 320): 4}
    assert both.steps_per_epoch == 10 + 2
