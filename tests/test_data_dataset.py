"""The dataset: batches, pixels, captions, flips, regularization and the latent cache."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import torch
from hypothesis import given, strategies as st
from PIL import Image

from easytrain.data.buckets import BucketSettings
from easytrain.data.captions import CaptionRules, process_caption, split_tags
from easytrain.data.dataset import TrainDataset
from easytrain.data.pixels import to_tensor
from easytrain.data.scan import scan_image_folder
from easytrain.errors import UserError
from tests._data_helpers import make_image, make_subset

SMALL = BucketSettings(resolution=(64, 64), min_reso=32, max_reso=128, step=32)


def fake_encode(pixels: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a VAE: 8x downsampled pixels (4 channels)."""
    pooled = torch.nn.functional.avg_pool2d(pixels, 8)
    return torch.cat([pooled, pooled[:, :1]], dim=1)


@pytest.fixture
def mixed(tmp_path):
    make_subset(tmp_path, "3_wide", 5, size=(128, 64), caption="wide, a,  b , c")
    make_subset(tmp_path, "2_square", 4, size=(64, 64), caption="square, x, y, z")
    make_subset(tmp_path, "1_tall", 3, size=(64, 128), caption="tall")
    return scan_image_folder(tmp_path)


def test_batches_follow_the_plan_count_and_each_uses_one_bucket(mixed):
    dataset = TrainDataset(mixed, None, SMALL)
    for batch_size in (1, 2, 3, 7):
        batches = dataset.epoch_batches(0, batch_size)
        count = dataset.epoch_count(batch_size)
        assert len(batches) == count.steps_per_epoch
        assert sum(len(b) for b in batches) == count.images_per_epoch == 15 + 8 + 3
        assert all(0 < len(b) <= batch_size for b in batches)
        for batch in batches:
            assert {dataset.samples[m].bucket for m in batch.samples} == {batch.bucket}
    appearances = Counter(m for b in dataset.epoch_batches(0, 2) for m in b.samples)
    assert sorted(appearances.values()) == sorted(s.repeats for s in dataset.samples)


def test_batches_are_deterministic_per_seed_and_epoch(mixed):
    dataset = TrainDataset(mixed, None, SMALL, seed=7)
    assert dataset.epoch_batches(3, 2) == dataset.epoch_batches(3, 2)
    assert dataset.epoch_batches(3, 2) == TrainDataset(mixed, None, SMALL, seed=7).epoch_batches(3, 2)
    assert dataset.epoch_batches(3, 2) != dataset.epoch_batches(4, 2)
    assert dataset.epoch_batches(3, 2) != TrainDataset(mixed, None, SMALL, seed=8).epoch_batches(3, 2)
    assert [b.index for b in dataset.epoch_batches(1, 2)] == list(range(len(dataset.epoch_batches(1, 2))))


def test_pixels_have_the_bucket_shape_and_range(mixed):
    dataset = TrainDataset(mixed, None, SMALL)
    for spec in dataset.epoch_batches(0, 2)[:6]:
        batch = dataset.load_batch(spec, 0)
        width, height = spec.bucket
        assert batch.pixel_values.shape == (len(spec), 3, height, width)
        assert batch.pixel_values.dtype == torch.float32
        assert -1.0 <= batch.pixel_values.min() and batch.pixel_values.max() <= 1.0
        assert batch.latents is None and batch.loss_weights.tolist() == [1.0] * len(spec)


def test_centre_crop_keeps_the_middle(tmp_path):
    image = Image.new("RGB", (96, 64), (0, 255, 0))
    image.paste((255, 0, 0), (16, 0, 80, 64))
    path = tmp_path / "1_x" / "a.png"
    path.parent.mkdir()
    image.save(path)
    dataset = TrainDataset(scan_image_folder(tmp_path), None, BucketSettings((64, 64), enable_bucket=False))
    pixels = dataset.load_batch(dataset.epoch_batches(0, 1)[0], 0).pixel_values[0]
    assert torch.allclose(pixels[0], torch.ones(64, 64), atol=0.02)  # all red
    assert torch.allclose(pixels[1], -torch.ones(64, 64), atol=0.02)  # no green edge left


@pytest.mark.parametrize("mode, color", [("RGBA", (255, 0, 0, 0)), ("LA", (0, 0)), ("L", (0,)), ("CMYK", None),
                                         ("P", None)])
def test_modes_become_rgb_and_transparency_is_white(tmp_path, mode, color):
    path = tmp_path / "1_x" / "a.png"
    if mode == "CMYK":
        make_image(path.with_suffix(".jpg"), mode="CMYK", fmt="JPEG")
    elif mode == "P":
        image = Image.new("P", (64, 64), 3)
        image.putpalette([0, 0, 0] * 3 + [10, 20, 30] + [0, 0, 0] * 252)
        path.parent.mkdir(parents=True)
        image.save(path, transparency=3)
    else:
        path.parent.mkdir(parents=True)
        Image.new(mode, (64, 64), color).save(path)
    dataset = TrainDataset(scan_image_folder(tmp_path), None, BucketSettings((64, 64), enable_bucket=False))
    pixels = dataset.load_batch(dataset.epoch_batches(0, 1)[0], 0).pixel_values
    assert pixels.shape == (1, 3, 64, 64)
    if mode in ("RGBA", "LA", "P"):  # fully transparent: white
        assert torch.allclose(pixels, torch.ones_like(pixels))
    elif mode == "L":
        assert torch.allclose(pixels, -torch.ones_like(pixels))


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "1_x" / "deep.png"
    path.parent.mkdir()
    Image.new("I;16", (64, 64), 40000).save(path)
    dataset = TrainDataset(scan_image_folder(tmp_path), None, BucketSettings((64, 64), enable_bucket=False))
    pixels = dataset.load_batch(dataset.epoch_batches(0, 1)[0], 0).pixel_values
    expected = round(40000 / 65535 * 255) / 127.5 - 1
    assert torch.allclose(pixels, torch.full_like(pixels, expected), atol=0.01)


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "1_x" / "turned.jpg"
    path.parent.mkdir()
    image = Image.new("RGB", (128, 64), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 64, 64))  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the left half ends on top
    image.save(path, "JPEG", exif=exif.tobytes(), quality=95)
    dataset = TrainDataset(scan_image_folder(tmp_path), None, BucketSettings((64, 128), enable_bucket=False))
    pixels = dataset.load_batch(dataset.epoch_batches(0, 1)[0], 0).pixel_values[0]
    assert pixels.shape == (3, 128, 64)
    assert pixels[:, 10:50].mean() < -0.9 and pixels[:, 80:120].mean() > 0.9


def test_flip_is_a_mirror_and_deterministic(tmp_path):
    image = Image.new("RGB", (64, 64), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 32, 64))
    folder = tmp_path / "20_x"
    folder.mkdir()
    image.save(folder / "a.png")
    dataset = TrainDataset(scan_image_folder(tmp_path), None, BucketSettings((64, 64), enable_bucket=False),
                           flip_aug=True)
    batches = dataset.epoch_batches(0, 1)
    flips = [b.flips[0] for b in batches]
    assert any(flips) and not all(flips)
    assert flips == [b.flips[0] for b in dataset.epoch_batches(0, 1)]
    plain = dataset.load_batch(batches[flips.index(False)], 0).pixel_values
    mirrored = dataset.load_batch(batches[flips.index(True)], 0).pixel_values
    assert torch.equal(mirrored, plain.flip(-1))
    no_flip = TrainDataset(dataset.train_scan, None, dataset.settings, flip_aug=False)
    assert not any(f for b in no_flip.epoch_batches(0, 1) for f in b.flips)


def test_captions_keep_tokens_and_shuffle(mixed):
    dataset = TrainDataset(mixed, None, SMALL, shuffle_captions=True, keep_tokens=1)
    seen = set()
    for spec in dataset.epoch_batches(0, 1):
        caption = dataset.captions_for(spec, 0)[0]
        source = dataset.samples[spec.samples[0]].entry.caption
        assert split_tags(caption)[0] == split_tags(source)[0]
        assert sorted(split_tags(caption)) == sorted(split_tags(source))
        seen.add(caption)
    assert "wide, a, b, c" in seen and len(seen) > 3  # shuffled, tags stripped
    plain = TrainDataset(mixed, None, SMALL, shuffle_captions=False)
    assert {c for s in plain.epoch_batches(0, 1) for c in plain.captions_for(s, 0)} == {
        "wide, a, b, c", "square, x, y, z", "tall"}


@given(st.lists(st.text(alphabet="abcdefgh _-()", min_size=1, max_size=8).filter(lambda t: t.strip()),
                min_size=0, max_size=12),
       st.integers(0, 15), st.integers(0, 2**32))
def test_shuffle_keeps_the_head_and_the_tags(tags, keep, seed):
    import random

    caption = ", ".join(tags)
    result = split_tags(process_caption(caption, CaptionRules(shuffle=True, keep_tokens=keep), 1, random.Random(seed)))
    stripped = split_tags(caption)
    assert result[:keep] == stripped[:keep]
    assert Counter(result) == Counter(stripped)


def test_reg_images_are_balanced_and_weighted(tmp_path):
    make_subset(tmp_path / "train", "5_me", 2)
    make_subset(tmp_path / "reg", "1_person", 3, caption="person")
    train = scan_image_folder(tmp_path / "train")
    reg = scan_image_folder(tmp_path / "reg", is_reg=True)
    dataset = TrainDataset(train, reg, SMALL, prior_loss_weight=0.5)
    assert sorted(s.repeats for s in dataset.samples if s.is_reg) == [3, 3, 4]
    assert dataset.images_per_epoch == 20 == dataset.epoch_count(4).images_per_epoch
    weights = []
    for spec in dataset.epoch_batches(0, 4):
        batch = dataset.load_batch(spec, 0)
        for member, weight, caption in zip(spec.samples, batch.loss_weights.tolist(), batch.captions):
            assert weight == (0.5 if dataset.samples[member].is_reg else 1.0)
            assert (caption == "person") == dataset.samples[member].is_reg
            weights.append(weight)
    assert weights.count(0.5) == 10 and weights.count(1.0) == 10


def test_no_training_images_is_a_user_error(tmp_path):
    (tmp_path / "1_x").mkdir()
    with pytest.raises(UserError, match="no usable training images"):
        TrainDataset(scan_image_folder(tmp_path), None, SMALL)


def test_image_damaged_after_the_scan_is_a_user_error(tmp_path):
    folder = make_subset(tmp_path, "1_x", 1)
    scan = scan_image_folder(tmp_path)
    (folder / "img000.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    dataset = TrainDataset(scan, None, SMALL)
    with pytest.raises(UserError, match="img000.png"):
        dataset.load_batch(dataset.epoch_batches(0, 1)[0], 0)


# ---- latent cache -------------------------------------------------------------------------


class CountingEncoder:
    def __init__(self, fail_on_call=None):
        self.calls = 0
        self.images = 0
        self.fail_on_call = fail_on_call

    def __call__(self, pixels):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("interrupted")
        self.images += pixels.shape[0]
        return fake_encode(pixels)


def test_memory_cache_returns_the_encoded_latents(mixed):
    dataset = TrainDataset(mixed, None, SMALL, flip_aug=True)
    progress = []
    encoder = CountingEncoder()
    dataset.cache_latents(encoder, "memory", batch_size=4, on_progress=lambda d, t: progress.append((d, t)))
    assert encoder.images == 2 * len(dataset.samples)  # both orientations
    assert progress[0] == (0, 24) and progress[-1] == (24, 24)
    assert encoder.calls == len(progress) - 1 < 24  # encoded in batches
    for spec in dataset.epoch_batches(0, 3)[:5]:
        batch = dataset.load_batch(spec, 0)
        assert batch.pixel_values is None
        for row, (member, flip) in enumerate(zip(spec.samples, spec.flips)):
            pixels = dataset.prepared_image(dataset.samples[member])
            expected = fake_encode(to_tensor([pixels], [flip]))[0]
            assert torch.allclose(batch.latents[row], expected, atol=1e-6)


def test_cached_batches_are_fast(tmp_path):
    make_subset(tmp_path, "10_a", 20, size=(64, 64))
    dataset = TrainDataset(scan_image_folder(tmp_path), None, SMALL, shuffle_captions=True, keep_tokens=1)
    dataset.cache_latents(fake_encode, "memory", batch_size=8)
    specs = dataset.epoch_batches(0, 4)
    started = time.perf_counter()
    for spec in specs:
        dataset.load_batch(spec, 0)
    per_image = (time.perf_counter() - started) / dataset.images_per_epoch
    assert per_image < 0.0005


def test_disk_cache_hits_and_misses(tmp_path):
    folder = make_subset(tmp_path, "2_a", 4, size=(64, 64))
    scan = scan_image_folder(tmp_path)
    first = CountingEncoder()
    dataset = TrainDataset(scan, None, SMALL, flip_aug=True)
    dataset.cache_latents(first, "disk", batch_size=3)
    cache_dir = tmp_path / ".easytrain-cache"
    files = sorted(p.name for p in cache_dir.iterdir())
    assert first.images == 8 and len(files) == 8
    batch = dataset.load_batch(dataset.epoch_batches(0, 2)[0], 0)
    assert batch.latents.shape == (2, 4, 8, 8)

    again = CountingEncoder()
    TrainDataset(scan_image_folder(tmp_path), None, SMALL, flip_aug=True).cache_latents(again, "disk")
    assert again.images == 0  # unchanged: nothing encoded

    make_image(folder / "img002.png", (64, 64), (1, 2, 3))  # one image changes
    changed = CountingEncoder()
    TrainDataset(scan_image_folder(tmp_path), None, SMALL, flip_aug=True).cache_latents(changed, "disk")
    assert changed.images == 2  # its two orientations

    other_vae = CountingEncoder()
    TrainDataset(scan_image_folder(tmp_path), None, SMALL).cache_latents(other_vae, "disk", cache_key="sdxl-vae")
    assert other_vae.images == 4


def test_interrupted_disk_cache_leaves_only_complete_files(tmp_path):
    make_subset(tmp_path, "1_a", 6, size=(64, 64))
    scan = scan_image_folder(tmp_path)
    cache_dir = tmp_path / "cache"
    broken = CountingEncoder(fail_on_call=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        TrainDataset(scan, None, SMALL).cache_latents(broken, "disk", cache_dir, batch_size=2)
    left = sorted(cache_dir.iterdir())
    assert len(left) == 2 and all(p.suffix == ".safetensors" for p in left)  # no temp files
    resumed = CountingEncoder()
    dataset = TrainDataset(scan, None, SMALL)
    dataset.cache_latents(resumed, "disk", cache_dir, batch_size=2)
    assert resumed.images == 4
    (cache_dir / left[0].name).write_bytes(b"half a file")  # a damaged file is encoded again
    repaired = CountingEncoder()
    TrainDataset(scan, None, SMALL).cache_latents(repaired, "disk", cache_dir)
    assert repaired.images == 1
