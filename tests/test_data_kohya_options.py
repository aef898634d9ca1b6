"""kohya's data options: caption/tag dropout, the keep-tokens separator, loss masks, random crop, colour jitter."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st
from PIL import Image

from easytrain.data.buckets import BucketSettings
from easytrain.data.captions import CaptionRules, process_caption, split_tags
from easytrain.data.dataset import TrainDataset
from easytrain.data.report import dataset_report_lines
from easytrain.data.scan import scan_image_folder
from easytrain.data.toml_config import scan_dataset_toml
from tests._data_helpers import make_image, make_subset

SQUARE = BucketSettings((64, 64), enable_bucket=False)
TAGS = "me, red hair, smile, outdoors, hat, sky"


def produced(dataset: TrainDataset, epochs=range(1, 4)) -> list[str]:
    return [c for epoch in epochs for spec in dataset.epoch_batches(epoch, 1) for c in dataset.captions_for(spec, epoch)]


# ---------------------------------------------------------------- captions

def test_caption_dropout_rate_is_measured_on_the_produced_captions(tmp_path):
    make_subset(tmp_path, "50_me", 20, size=(64, 64), caption=TAGS)
    dataset = TrainDataset(scan_image_folder(tmp_path), None, SQUARE, caption_dropout_rate=0.25)
    captions = produced(dataset)                                   # 3000 captions
    share = captions.count("") / len(captions)
    assert 0.22 < share < 0.28
    assert set(captions) == {"", TAGS}                             # the others are untouched
    assert dataset.captions_vary
    assert produced(dataset) == captions                           # the same seed draws the same


def test_dropout_every_n_epochs_empties_every_nth_epoch(tmp_path):
    make_subset(tmp_path, "3_me", 4, caption=TAGS)
    dataset = TrainDataset(scan_image_folder(tmp_path), None, SQUARE, caption_dropout_every_n_epochs=2)
    assert set(produced(dataset, [2, 4])) == {""}
    assert set(produced(dataset, [1, 3])) == {TAGS}


def test_tag_dropout_never_drops_the_kept_tags(tmp_path):
    make_subset(tmp_path, "50_me", 20, caption=TAGS)
    dataset = TrainDataset(scan_image_folder(tmp_path), None, SQUARE, keep_tokens=1, caption_tag_dropout_rate=0.5)
    captions = produced(dataset)
    assert all(split_tags(c)[0] == "me" for c in captions)
    movable = sum(len(split_tags(c)) - 1 for c in captions)
    assert 0.46 < movable / (5 * len(captions)) < 0.54             # about half of the 5 movable tags stay
    assert all(split_tags(c)[1:] == [t for t in split_tags(TAGS)[1:] if t in split_tags(c)] for c in captions)


def test_keep_tokens_separator_fixes_head_and_tail():
    rules = CaptionRules(shuffle=True, keep_tokens=3, keep_tokens_separator="|||", tag_dropout_rate=0.3)
    caption = "me, red hair ||| smile, outdoors, hat, sky ||| masterpiece"
    rng = random.Random(1)
    seen = set()
    for _ in range(200):
        tags = split_tags(process_caption(caption, rules, 1, rng))
        assert tags[:2] == ["me", "red hair"] and tags[-1] == "masterpiece"   # keep_tokens is not used
        assert set(tags[2:-1]) <= {"smile", "outdoors", "hat", "sky"}
        seen.add(tuple(tags[2:-1]))
    assert len(seen) > 20
    plain = CaptionRules(keep_tokens_separator="|||")
    assert process_caption(caption, plain, 1, rng) == "me, red hair, smile, outdoors, hat, sky, masterpiece"
    assert process_caption("a, b", plain, 1, rng) == "a, b"


@given(st.lists(st.sampled_from("abcdefghij"), min_size=0, max_size=10), st.integers(0, 5),
       st.floats(0, 1), st.floats(0, 1), st.integers(0, 2**32))
def test_dropout_keeps_the_head_and_only_removes_tags(tags, keep, rate, tag_rate, seed):
    caption = ", ".join(tags)
    rules = CaptionRules(shuffle=True, keep_tokens=keep, dropout_rate=rate, tag_dropout_rate=tag_rate)
    result = split_tags(process_caption(caption, rules, 1, random.Random(seed)))
    if result:
        assert result[:keep] == split_tags(caption)[:keep]
        assert all(result.count(t) <= split_tags(caption).count(t) for t in result)


def test_without_dropout_the_random_draws_are_unchanged():
    rules = CaptionRules(shuffle=True, keep_tokens=1)
    a, b = random.Random(5), random.Random(5)
    with_zero = CaptionRules(shuffle=True, keep_tokens=1, dropout_rate=0.0, tag_dropout_rate=0.0)
    assert [process_caption(TAGS, rules, 1, a) for _ in range(5)] == \
        [process_caption(TAGS, with_zero, 1, b) for _ in range(5)]


# ---------------------------------------------------------------- masks

def half_transparent(path, size=(64, 64)):
    array = np.zeros((size[1], size[0], 4), np.uint8)
    array[..., 0] = 200
    array[:, size[0] // 2:, 3] = 255                               # right half opaque
    Image.fromarray(array, "RGBA").save(path)


def test_alpha_masks_follow_the_image_and_its_flip(tmp_path):
    folder = tmp_path / "2_me"
    half_transparent(make_image(folder / "a.png").with_name("a.png"))
    make_image(folder / "b.png")                                    # opaque, no mask
    scan = scan_image_folder(tmp_path, alpha_mask=True)
    assert scan.masked_images == 1
    assert any("loss masks: 1 of 2 training images" in line for line in dataset_report_lines(scan, None, SQUARE, 1))
    dataset = TrainDataset(scan, None, SQUARE, flip_aug=True)
    assert dataset.has_masks
    seen_flip = seen_plain = False
    for epoch in range(1, 6):
        for spec in dataset.epoch_batches(epoch, 1):
            batch = dataset.load_batch(spec, epoch)
            entry = dataset.samples[spec.samples[0]].entry
            if entry.path.name == "b.png":
                assert batch.masks is None
                continue
            mask = batch.masks[0]
            assert mask.shape == (64, 64)
            left, right = mask[:, :32], mask[:, 32:]
            if spec.flips[0]:
                assert left.eq(1).all() and right.eq(0).all()
                seen_flip = True
            else:
                assert left.eq(0).all() and right.eq(1).all()
                seen_plain = True
    assert seen_flip and seen_plain
    assert scan_image_folder(tmp_path).masked_images == 0          # alpha masks are opt-in


def test_mask_folder_masks_are_resized_with_the_bucket_and_survive_the_latent_cache(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "mask"
    make_subset(images, "1_me", 2, size=(128, 64))                # wide: resized to 128x64, centre cropped to 64x64
    mask = np.zeros((64, 128), np.uint8)
    mask[:, :64] = 255                                             # the left half of the picture
    (masks / "1_me").mkdir(parents=True)
    Image.fromarray(mask, "L").convert("RGB").save(masks / "1_me" / "img000.webp", lossless=True)
    scan = scan_image_folder(images, mask_folder=masks)
    assert [image.has_mask for image in scan.all_images] == [True, False]
    dataset = TrainDataset(scan, None, SQUARE)
    dataset.cache_latents(lambda px: torch.nn.functional.avg_pool2d(px, 8).repeat(1, 2, 1, 1)[:, :4], "memory")
    for spec in dataset.epoch_batches(1, 2):
        batch = dataset.load_batch(spec, 1)
        for row, member in enumerate(spec.samples):
            got = batch.masks[row]
            if dataset.samples[member].entry.has_mask:
                assert got[:, :32].eq(1).all() and got[:, 32:].eq(0).all()   # the centre crop of "left half"
            else:
                assert got.eq(1).all()
    assert scan_image_folder(images, mask_folder=tmp_path / "nothing").warnings[-1].startswith(
        str(tmp_path / "nothing"))


def test_toml_subsets_set_their_own_options(tmp_path):
    make_subset(tmp_path, "a", 2, caption=TAGS)
    (tmp_path / "m").mkdir()
    Image.new("L", (64, 64), 0).save(tmp_path / "m" / "img001.png")
    (tmp_path / "d.toml").write_text("""
[[datasets]]
resolution = 64
[[datasets.subsets]]
image_dir = "a"
num_repeats = 10
caption_dropout_every_n_epochs = 1
random_crop = true
color_aug = true
keep_tokens_separator = "|||"
caption_tag_dropout_rate = 0.1
conditioning_data_dir = "m"
""", encoding="utf-8")
    train, _ = scan_dataset_toml(tmp_path / "d.toml")
    subset = train.subsets[0]
    assert (subset.caption_dropout_every_n_epochs, subset.random_crop, subset.color_aug) == (1, True, True)
    assert subset.keep_tokens_separator == "|||" and subset.caption_tag_dropout_rate == 0.1
    assert train.masked_images == 1
    dataset = TrainDataset(train, None, SQUARE)
    assert set(produced(dataset, [1])) == {""} and dataset.pixels_vary
    (tmp_path / "d.toml").write_text(
        '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\ncaption_dropout_rate = 2\n', encoding="utf-8")
    with pytest.raises(Exception, match="caption_dropout_rate' must be from 0 to 1"):
        scan_dataset_toml(tmp_path / "d.toml")


# ---------------------------------------------------------------- augmentation

def gradient_image(path, size):
    x = np.linspace(0, 255, size[0], dtype=np.float64)
    y = np.linspace(0, 255, size[1], dtype=np.float64)
    array = np.stack([np.add.outer(y * 0, x), np.add.outer(y, x * 0), np.full((size[1], size[0]), 90.0)], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), "RGB").save(path)


def test_random_crop_moves_the_crop_and_reports_it(tmp_path):
    gradient_image(tmp_path / "1_me" / "a.png", (192, 64))
    scan = scan_image_folder(tmp_path)
    plain = TrainDataset(scan, None, SQUARE)
    cropped = TrainDataset(scan, None, SQUARE, random_crop=True)
    assert cropped.pixels_vary and not plain.pixels_vary
    centre = plain.load_batch(plain.epoch_batches(1, 1)[0], 1)
    assert centre.crop_top_lefts == [(0, 64)]
    lefts = set()
    for epoch in range(1, 25):
        batch = cropped.load_batch(cropped.epoch_batches(epoch, 1)[0], epoch)
        (top, left), = batch.crop_top_lefts
        lefts.add(left)
        # the red channel is the x position: the crop's first column tells where it sits
        expected = TrainDataset.prepared_image(cropped.samples[0], (left / 128, 0.0))
        assert torch.equal(batch.pixel_values, plain_tensor(expected))
        again = cropped.load_batch(cropped.epoch_batches(epoch, 1)[0], epoch)
        assert torch.equal(again.pixel_values, batch.pixel_values)   # resumable: the same draw per epoch
    assert len(lefts) > 10 and min(lefts) < 64 < max(lefts)


def plain_tensor(image):
    from easytrain.data.pixels import to_tensor

    return to_tensor([image], [False])


def test_color_aug_changes_some_epochs_slightly(tmp_path):
    gradient_image(tmp_path / "1_me" / "a.png", (64, 64))
    scan = scan_image_folder(tmp_path)
    plain = TrainDataset(scan, None, SQUARE).load_batch(TrainDataset(scan, None, SQUARE).epoch_batches(1, 1)[0], 1)
    dataset = TrainDataset(scan, None, SQUARE, color_aug=True)
    changed = 0
    for epoch in range(1, 41):
        pixels = dataset.load_batch(dataset.epoch_batches(epoch, 1)[0], epoch).pixel_values
        if not torch.equal(pixels, plain.pixel_values):
            changed += 1
    assert 4 <= changed <= 24                                      # about a third of the time
    assert dataset.pixels_vary
